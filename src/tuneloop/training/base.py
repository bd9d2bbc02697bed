"""The base model of a training run: where its weights are, and loading them to train.

A base is a registry model (a packaged or local GGUF file is dequantized once into a
safetensors folder in the tuneloop cache, then reloaded from there in seconds), a model
trained before (its child: a LoRA parent is merged into its base first), a local Hugging Face
folder, or a hub id (loaded by transformers at run time; needs hub access).

torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.config import cache_dir
from tuneloop.errors import UserError
from tuneloop.store.models import ModelEntry

Note = Callable[[str], None]

# config.json model_type -> tuneloop family
FAMILIES = {
    "llama": "llama",
    "qwen2": "qwen",
    "qwen3": "qwen",
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3_text": "gemma",
    "gpt2": "gpt",
    "mistral": "mistral",
    "phi": "phi",
    "phi3": "phi",
    "falcon": "falcon",
    "stablelm": "stablelm",
    # Pythia's architecture; other GPT-NeoX models (Dolly v2, RedPajama) give --family
    "gpt_neox": "pythia",
}
SOURCE_FILE = "tuneloop-source.json"  # in a converted folder: the GGUF it came from


@dataclass(frozen=True)
class BaseWeights:
    """Where a run's starting weights come from."""

    ref: str  # as the user named it
    kind: str  # registry | trained | folder | hub | gguf
    family: str
    source: str  # a local Hugging Face folder or a hub id: what from_pretrained loads
    gguf: str | None = None  # the GGUF file the weights came from (GGUF export rewrites it)
    adapter: str | None = None  # a parent's LoRA adapter, merged in before training
    parent_id: int | None = None  # the trained model this one continues

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaseWeights:
        return cls(**data)


def _family(folder: Path, override: str | None) -> str:
    if override:
        return override
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8"))["model_type"]
    except (OSError, ValueError, KeyError):
        return "unknown"
    return FAMILIES.get(str(model_type), str(model_type))


def resolve_base(
    session: Session,
    project_id: int,
    ref: str,
    project_dir: Path | None,
    family: str | None = None,
    note: Note | None = None,
) -> BaseWeights:
    """The weights ``ref`` names; a GGUF file is converted (once) on the way."""
    from tuneloop.llm.registry import ENDPOINT_PROVIDERS, get_model, load_models, model_path, pull

    trained = session.scalar(
        select(ModelEntry).where(ModelEntry.project_id == project_id, ModelEntry.name == ref)
    )
    if trained is not None:
        return trained_base(trained, note)
    names = [spec.name for spec in load_models(project_dir)]
    if ref in names:
        spec = get_model(ref, project_dir)
        if spec.provider in (*ENDPOINT_PROVIDERS, "fake") or spec.source.kind == "endpoint":
            raise UserError(
                f"base model {ref!r} is served by an endpoint ({spec.provider}): there are no "
                "weights to fine-tune"
            )
        if spec.source.is_gguf and spec.source.kind != "hub":
            if model_path(spec) is None and note is not None:
                note(f"pulling {ref} (once; `tuneloop models pull {ref}` does it ahead of time)")
            path = pull(spec)
            folder = gguf_to_hf(path, spec.source.sha256, note)
            return BaseWeights(ref, "registry", spec.family, str(folder), gguf=str(path))
        if spec.source.kind == "hub":
            if spec.source.gguf_file:
                raise UserError(
                    f"base model {ref!r}: fine-tuning a GGUF file on the hub is not supported; "
                    "download it and name the local file"
                )
            return BaseWeights(ref, "registry", spec.family, str(spec.source.hub))
        return BaseWeights(ref, "registry", spec.family, str(pull(spec)))
    local = Path(ref).expanduser()
    if project_dir is not None and not local.is_absolute() and not local.exists():
        local = project_dir / local
    if local.is_file() and local.suffix.lower() == ".gguf":
        local = local.resolve()
        folder = gguf_to_hf(local, None, note)
        return BaseWeights(str(local), "gguf", _family(folder, family), str(folder), str(local))
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(
                f"base model folder {local} has no config.json: not a Hugging Face model folder"
            )
        local = local.resolve()
        return BaseWeights(str(local), "folder", _family(local, family), str(local))
    looks_like_path = ref.startswith((".", "/", "~")) or ref.count("/") != 1
    if looks_like_path:
        known = ", ".join(names)
        raise UserError(
            f"unknown base model {ref!r}: not a model of `tuneloop models list` ({known}), "
            "a trained model, a local folder, or a hub id ORG/NAME"
        )
    return BaseWeights(ref, "hub", family or "unknown", ref)  # needs hub access


def trained_base(entry: ModelEntry, note: Note | None = None) -> BaseWeights:
    """A trained model as the base of a new run: its folder, or its base plus its adapter."""
    path = Path(entry.path or "")
    if not path.is_dir():
        raise UserError(f"model {entry.name}: its folder {path} is missing")
    parent = BaseWeights.from_dict(entry.config["base"])
    if (path / "adapter_config.json").is_file():
        source = ensure_source(parent, note)
        return BaseWeights(
            entry.name, "trained", entry.family, source, parent.gguf, str(path), entry.id
        )
    return BaseWeights(entry.name, "trained", entry.family, str(path), parent.gguf, None, entry.id)


def ensure_source(base: BaseWeights, note: Note | None = None) -> str:
    """``base.source``, converting its GGUF file again if the cached folder was removed."""
    if base.gguf and not Path(base.source).is_dir():
        if not Path(base.gguf).is_file():
            raise UserError(
                f"base model {base.ref}: neither the converted folder {base.source} nor the "
                f"GGUF file {base.gguf} is there (pull it with `tuneloop models pull`)"
            )
        return str(gguf_to_hf(Path(base.gguf), None, note))
    return base.source


def converted_root() -> Path:
    return cache_dir() / "converted"


def gguf_to_hf(gguf: Path, sha256: str | None, note: Note | None = None) -> Path:
    """A safetensors Hugging Face folder with the GGUF file's weights, dequantized to fp32.

    Converted once (15-65 s for the packaged models) into the cache, keyed by the file's
    sha256 (or its path, size and mtime); later calls return the folder at once. The folder
    appears only when complete."""
    st = gguf.stat()
    key = sha256 or hashlib.sha256(f"{gguf.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    digest = key if isinstance(key, str) else key.hexdigest()
    folder = converted_root() / f"{gguf.stem}-{digest[:12]}"
    if (folder / SOURCE_FILE).is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if note is not None:
        note(f"converting {gguf.name} to a safetensors folder (once; cached in {folder})")
    converted_root().mkdir(parents=True, exist_ok=True)
    with (
        quiet_libraries(),
        no_progress_bars(),
        tempfile.TemporaryDirectory(dir=converted_root()) as tmp,
    ):
        staging = Path(tmp) / "model"
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent),
                gguf_file=gguf.name,
                quantization_config=GgufConfig(dequantize=True),
                dtype=torch.float32,
            )
        except (ValueError, KeyError, RuntimeError) as exc:
            raise UserError(f"cannot load {gguf} into transformers: {exc}") from None
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        record = {"gguf": str(gguf.resolve()), "sha256": sha256}
        (staging / SOURCE_FILE).write_text(json.dumps(record), encoding="utf-8")
        if (folder / SOURCE_FILE).is_file():
            return folder  # another process converted it meanwhile
        if folder.exists():  # an older, incomplete conversion
            shutil.rmtree(folder)
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / SOURCE_FILE).is_file():
                raise
    return folder


def bf16_supported() -> bool:
    """Whether bf16 math is fast here: a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def choose_precision(setting: str) -> tuple[bool, str | None]:
    """(train in bf16?, a note for the user when the choice deserves one)."""
    supported = bf16_supported()
    if setting == "fp32":
        return False, None
    if setting == "bf16":
        note = None if supported else "bf16 forced on hardware without fast bf16: expect it slow"
        return True, note
    if supported:
        return True, None
    return False, "this hardware has no fast bf16 (AVX512-BF16, AMX or a bf16 GPU): fp32"


def load_base(base: BaseWeights, *, bf16: bool, lora: bool, note: Note | None = None) -> Any:
    """(model, tokenizer) to train. LoRA in bf16 keeps the frozen weights in bf16 (the adapter
    stays fp32); a full fine-tune keeps fp32 master weights and computes in bf16 (autocast)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = ensure_source(base, note)
    dtype = torch.bfloat16 if bf16 and lora else torch.float32
    tokenizer_from = base.adapter or source
    with quiet_libraries():
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except OSError as exc:
            raise UserError(f"cannot load base model {base.ref!r} from {source}: {exc}") from None
        if base.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, base.adapter).merge_and_unload()
            model.requires_grad_(True)  # PEFT froze the base; a full fine-tune trains it all
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence the deprecation chatter transformers, peft and TRL aim at each other (about
    their own APIs, nothing a user can act on); every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*deprecated and will be removed in v6", category=FutureWarning
        )
        yield


def quiet_library_output() -> None:
    """No tqdm bars from transformers (loading, saving) and datasets (tokenizing), and only
    errors from transformers' logger (its notes are for library developers)."""
    import datasets
    from transformers.utils import logging

    untyped: Any = logging
    untyped.disable_progress_bar()
    untyped.set_verbosity_error()
    datasets.disable_progress_bars()


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """No tqdm bars from transformers while loading a model to run (restored after)."""
    from transformers.utils import logging

    untyped: Any = logging
    enabled = untyped.is_progress_bar_enabled()
    untyped.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            untyped.enable_progress_bar()
