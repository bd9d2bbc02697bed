"""Loading llama.cpp models so they run on the machine at hand.

llama.cpp can move a model's weights into *extra buffer types* when it loads them: layouts
repacked for the CPU's matrix instructions (``REPACK``) and, on Intel CPUs with AMX, tiles for
its AMX kernels. With llama-cpp-python 0.3.36 built on a CPU with AMX, evaluating two or more
tokens at once with weights in the AMX buffer ends the process with a segmentation fault
(seen with every packaged model: Q4_1, Q4_K_M and Q8_0 tensors); one token at a time works.
Every prompt is more than one token, so on such a build tuneloop loads models without the
extra buffer types (``use_extra_bufts`` off): the weights stay in the file's own layout, which
llama.cpp's ordinary CPU kernels run.

``TUNELOOP_LLAMACPP_EXTRA_BUFFERS`` chooses: ``auto`` (the default: off where the llama.cpp
library was built with AMX, on elsewhere), ``on`` or ``off``.

llama-cpp-python's ``Llama`` takes no argument for that parameter: it starts from
``llama_model_default_params()``, so ``open_llama`` sets the parameter on those defaults for
the moment the model loads. ``python -m tuneloop.llm.providers.llamacpp_runtime`` runs
llama-cpp-python's OpenAI-compatible server (same arguments as ``python -m llama_cpp.server``)
with the same setting, for the models it loads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from tuneloop.llm.types import ProviderError

SETTINGS = ("auto", "on", "off")
_LOADING = threading.Lock()  # one model loads at a time while the defaults are replaced


def setting() -> str:
    """``TUNELOOP_LLAMACPP_EXTRA_BUFFERS``: auto, on or off; ProviderError for anything else."""
    value = os.environ.get("TUNELOOP_LLAMACPP_EXTRA_BUFFERS", "auto").strip().lower() or "auto"
    if value not in SETTINGS:
        raise ProviderError(
            f"TUNELOOP_LLAMACPP_EXTRA_BUFFERS={value!r}: choose one of {', '.join(SETTINGS)}"
        )
    return value


@cache
def built_with_amx() -> bool:
    """True when the llama.cpp library was built with AMX kernels (and so loads weights into
    the AMX buffer on a CPU that has AMX)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return "AMX_INT8 = 1" in text


def extra_buffers() -> bool:
    """Whether models load with llama.cpp's extra buffer types (see the module docstring)."""
    chosen = setting()
    if chosen != "auto":
        return chosen == "on"
    return not built_with_amx()


@contextmanager
def model_defaults(**overrides: Any) -> Iterator[None]:
    """Within the block, ``llama_model_default_params()`` returns the defaults with
    ``overrides`` set: what ``Llama`` starts from when it loads a model."""
    import llama_cpp.llama_cpp as raw

    original: Callable[[], Any] = raw.llama_model_default_params

    def defaults() -> Any:
        params = original()
        for name, value in overrides.items():
            setattr(params, name, value)
        return params

    with _LOADING:
        raw.llama_model_default_params = defaults
        try:
            yield
        finally:
            raw.llama_model_default_params = original


def open_llama(**kwargs: Any) -> Any:
    """``llama_cpp.Llama(**kwargs)``, loaded with or without the extra buffer types as
    ``extra_buffers()`` says."""
    from llama_cpp import Llama

    if extra_buffers():
        return Llama(**kwargs)
    with model_defaults(use_extra_bufts=False):
        return Llama(**kwargs)


def main() -> None:
    """llama-cpp-python's server, its models loaded as ``open_llama`` loads them."""
    from llama_cpp.server import __main__ as server

    serve: Callable[[], None] = server.main
    if extra_buffers():
        serve()
    else:  # the server loads its models itself, in this process, inside the block
        with model_defaults(use_extra_bufts=False):
            serve()


if __name__ == "__main__":
    main()
