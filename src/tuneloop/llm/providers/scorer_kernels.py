"""Fused element-wise kernels for the int8 decoder (``torch_scorer``), compiled ahead of time.

Between the int8 matrix products of the MLP, the eager decoder makes about ten passes over the
intermediate activations: the gate and up products' int32 output to float32 and both scales,
SiLU, the product of the halves, and per-token quantization of the result for the down
product. PyTorch's compiler (Inductor) fuses them into one kernel; compiled ahead of time
(AOTInductor) for a model's intermediate size, it is a shared library that loads in a
millisecond, where ``torch.compile`` would import the compiler and trace on every start.

The library is built once per model size, PyTorch version and CPU (a C++ compiler is needed;
about 20 s) and kept next to the converted weights. Where it cannot be built or loaded, the
decoder runs its eager code, which is also the reference ``tests/test_torch_scorer.py``
compares the kernel with. ``TUNELOOP_SCORER_KERNELS=0`` turns the kernels off.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

KERNEL_FORMAT = 1  # part of the folder name: bump when a kernel's inputs or outputs change
FAILED = "failed.txt"  # in a kernels folder: why building failed (not tried again)
MIN_TOKENS = 2  # the kernel's smallest slice; a one-token slice runs the eager code


def enabled() -> bool:
    setting = os.environ.get("TUNELOOP_SCORER_KERNELS", "1").strip().lower()
    return setting not in {"0", "false", "no", "off"}


class MlpMiddle(torch.nn.Module):
    """The gate and up products' int32 output (tokens, 2 * inner) with the activations'
    per-token scale and the weights' per-channel scale -> SiLU(gate) * up, quantized per
    token: (int8 values, scale per token, largest magnitude per channel). The decoder's eager
    code computes the same (``Int8Decoder.forward``); the caller checks the last output for
    outlier channels, which the kernel does not take out."""

    def forward(
        self, y: torch.Tensor, scale: torch.Tensor, ws: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = y.float() * scale * ws
        half = g.shape[1] // 2
        inner = torch.nn.functional.silu(g[:, :half]) * g[:, half:]
        size = inner.abs()
        s = size.amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
        return torch.round(inner / s).to(torch.int8), s, size.amax(dim=0)


def _machine() -> str:
    """What a compiled kernel depends on besides the model: PyTorch's version and the CPU."""
    from tuneloop.llm.providers.torch_scorer import _cpu_flags

    flags = " ".join(sorted(_cpu_flags()))
    return f"{torch.__version__}|{flags}|{KERNEL_FORMAT}"


def kernels_folder(model_folder: Path, inner: int) -> Path:
    digest = hashlib.sha256(f"{_machine()}|{inner}".encode()).hexdigest()[:12]
    return model_folder / f"kernels-{digest}"


def build(folder: Path, inner: int) -> Path:
    """Compile ``MlpMiddle`` for an intermediate size ``inner`` into ``folder`` (atomically)
    and return the library's path."""
    from torch._inductor import aoti_compile_and_package

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        tokens = torch.export.Dim("tokens", min=MIN_TOKENS, max=2**20)
        example = (
            torch.zeros((8, 2 * inner), dtype=torch.int32),
            torch.ones((8, 1)),
            torch.ones(2 * inner),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(
                MlpMiddle(), example, dynamic_shapes=({0: tokens}, {0: tokens}, None)
            )
            package = aoti_compile_and_package(program, package_path=str(tmp / "mlp.pt2"))
        with zipfile.ZipFile(package) as archive:
            names = [n for n in archive.namelist() if n.endswith(".so")]
            if len(names) != 1:
                raise RuntimeError(f"expected one library in the compiled package, found {names}")
            (tmp / "mlp_middle.so").write_bytes(archive.read(names[0]))
        os.unlink(package)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder / "mlp_middle.so"


class Kernels:
    """The loaded kernels: ``mlp_middle(y, scale, ws)`` as ``MlpMiddle``."""

    def __init__(self, library: Path) -> None:
        self._mlp: Any = torch._C._aoti.AOTIModelContainerRunnerCpu(str(library), 1)

    def mlp_middle(
        self, y: torch.Tensor, scale: torch.Tensor, ws: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, s, size = self._mlp.run([y, scale, ws])
        return q, s, size


def load(model_folder: Path, inner: int) -> Kernels | None:
    """The kernels for a model whose converted weights are in ``model_folder``: loaded, built
    first if they are not there yet, or None (the eager code runs) where they are turned off
    or cannot be built; a failure is written down once, not retried on every start."""
    if not enabled():
        return None
    folder = kernels_folder(model_folder, inner)
    library = folder / "mlp_middle.so"
    if (folder / FAILED).is_file():
        return None
    try:
        if not library.is_file():
            sys.stderr.write(
                "tuneloop: compiling the label scorer's kernels for this machine "
                f"(once; about 20 s; kept in {folder})\n"
            )
            library = build(folder, inner)
        return Kernels(library)
    except Exception as exc:  # no compiler, an unsupported platform: the eager code runs
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / FAILED).write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")
        except OSError:
            pass
        return None
