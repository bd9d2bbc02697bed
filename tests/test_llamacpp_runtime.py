"""Loading llama.cpp models: the extra-buffer setting and the defaults it changes."""

from __future__ import annotations

import pytest

from tuneloop.llm.providers import llamacpp_runtime as runtime
from tuneloop.llm.types import ProviderError


@pytest.mark.parametrize(
    ("value", "amx", "expected"),
    [
        (None, True, False),
        (None, False, True),
        ("auto", True, False),
        ("on", True, True),
        ("ON ", True, True),
        ("off", False, False),
    ],
)
def test_extra_buffers_setting(
    monkeypatch: pytest.MonkeyPatch, value: str | None, amx: bool, expected: bool
) -> None:
    if value is None:
        monkeypatch.delenv("TUNELOOP_LLAMACPP_EXTRA_BUFFERS", raising=False)
    else:
        monkeypatch.setenv("TUNELOOP_LLAMACPP_EXTRA_BUFFERS", value)
    monkeypatch.setattr(runtime, "built_with_amx", lambda: amx)
    assert runtime.extra_buffers() is expected


def test_a_wrong_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNELOOP_LLAMACPP_EXTRA_BUFFERS", "maybe")
    with pytest.raises(ProviderError, match="TUNELOOP_LLAMACPP_EXTRA_BUFFERS='maybe'"):
        runtime.extra_buffers()


def test_model_defaults_are_changed_inside_the_block_only() -> None:
    raw = pytest.importorskip("llama_cpp.llama_cpp")
    assert raw.llama_model_default_params().use_extra_bufts is True
    with runtime.model_defaults(use_extra_bufts=False):
        assert raw.llama_model_default_params().use_extra_bufts is False
    assert raw.llama_model_default_params().use_extra_bufts is True
    with pytest.raises(RuntimeError), runtime.model_defaults(use_extra_bufts=False):
        raise RuntimeError("a failed load")
    assert raw.llama_model_default_params().use_extra_bufts is True


def test_built_with_amx_reads_the_library() -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    info = llama_cpp.llama_print_system_info().decode()
    assert runtime.built_with_amx() is ("AMX_INT8 = 1" in info)
