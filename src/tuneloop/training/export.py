"""Export a trained model: its LoRA adapter folder, a merged Hugging Face folder, or a GGUF
file for llama.cpp and Ollama.

GGUF: llama.cpp's own converter (``convert_hf_to_gguf.py``) is not on PyPI; the ``gguf``
package is its writer and its tensor-name tables. tuneloop uses those to do, offline, what the
converter does for a model that came from a GGUF file (every packaged model): the base file's
metadata (architecture, hyper-parameters, tokenizer, chat template) is copied, and each of its
tensors is written again from the fine-tuned weights, under the same name, with the
converter's transforms (llama's rotary permutation of Q and K). Models of other origins, and
architectures other than llama and qwen2, need llama.cpp's converter on the merged folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tuneloop.errors import UserError
from tuneloop.training.base import BaseWeights
from tuneloop.training.trained import is_adapter, load_trained

FORMATS = ("adapter", "merged", "gguf")
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
GGUF_ARCHS = ("llama", "qwen2")
CONVERTER_HINT = (
    "export --format merged and run llama.cpp's convert_hf_to_gguf.py on that folder "
    "(it ships with llama.cpp, not on PyPI)"
)


def _fresh(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder; choose another -o")


def export_adapter(name: str, path: Path, out: Path) -> Path:
    """The PEFT adapter folder (adapter_config.json, adapter weights, tokenizer)."""
    if not is_adapter(path):
        raise UserError(f"model {name} is a full fine-tune: it has no adapter; use --format merged")
    _fresh(out)
    shutil.copytree(path, out, dirs_exist_ok=True)
    return out


def export_merged(name: str, path: Path, config: dict[str, Any], out: Path) -> Path:
    """A standalone Hugging Face folder: the adapter merged into its base (fp32)."""
    _fresh(out)
    model, tokenizer = load_trained(name, str(path), config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _permute(weights: Any, n_head: int, n_head_kv: int) -> Any:
    """llama.cpp's converter's rotary permutation of Q and K weights (HF -> GGUF order)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def export_gguf(
    name: str, path: Path, config: dict[str, Any], out: Path, outtype: str = "f16"
) -> Path:
    """A GGUF file with the base GGUF's metadata and the fine-tuned weights."""
    import gguf
    import numpy as np

    if outtype not in GGUF_TYPES:
        raise UserError(f"unknown GGUF type {outtype!r}; choose one of {', '.join(GGUF_TYPES)}")
    base = BaseWeights.from_dict(config["base"])
    if not base.gguf:
        raise UserError(
            f"model {name}: GGUF export rewrites the GGUF file its base came from, and base "
            f"{base.ref!r} is not a GGUF model; {CONVERTER_HINT}"
        )
    if not Path(base.gguf).is_file():
        raise UserError(f"model {name}: the base GGUF file {base.gguf} is missing")
    reader = gguf.GGUFReader(base.gguf)
    arch = str(reader.fields["general.architecture"].contents())
    if arch not in GGUF_ARCHS:
        raise UserError(
            f"model {name}: GGUF export supports {', '.join(GGUF_ARCHS)} models here, not "
            f"{arch}; {CONVERTER_HINT}"
        )
    if out.is_dir() or not out.suffix:
        out = out / f"{name}-{outtype}.gguf"
    if out.exists():
        raise UserError(f"{out} exists; choose another -o")

    def field(key: str) -> int:
        return int(reader.fields[f"{arch}.{key}"].contents())

    n_head, n_head_kv = field("attention.head_count"), field("attention.head_count_kv")
    model_arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(model_arch, field("block_count"))
    model, _ = load_trained(name, str(path), config)
    tensors: dict[str, Any] = {}
    for hf_name, tensor in model.state_dict().items():
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            continue
        data = tensor.detach().float().numpy()
        if arch == "llama" and hf_name.endswith("q_proj.weight"):
            data = _permute(data, n_head, n_head)
        elif arch == "llama" and hf_name.endswith("k_proj.weight"):
            data = _permute(data, n_head, n_head_kv)
        tensors[gguf_name] = data
    wanted = [t.name for t in reader.tensors]
    missing = [t for t in wanted if t not in tensors]
    if missing:
        raise UserError(
            f"model {name}: cannot map {len(missing)} tensors of the base GGUF file from the "
            f"trained weights (e.g. {missing[0]}); {CONVERTER_HINT}"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    partial = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(partial, arch)
    try:
        for item in reader.fields.values():
            if item.name.startswith("GGUF.") or item.name in (
                gguf.Keys.General.ARCHITECTURE,
                gguf.Keys.General.FILE_TYPE,
            ):
                continue
            kind = item.types[0]
            sub = item.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(item.name, item.contents(), kind, sub_type=sub)
        writer.add_file_type(int(file_types[outtype]))
        for tensor_name in wanted:
            data = tensors[tensor_name]
            qtype: Any = None
            if data.ndim <= 1 or outtype == "f32":
                data = data.astype(np.float32)  # norms and biases stay f32, as in llama.cpp
            elif outtype == "f16":
                data = data.astype(np.float16)
            elif outtype == "q8_0" and data.shape[-1] % 32 != 0:
                data = data.astype(np.float16)  # Q8_0 needs rows of 32 values
            else:
                qtype = (
                    gguf.GGMLQuantizationType.BF16
                    if outtype == "bf16"
                    else gguf.GGMLQuantizationType.Q8_0
                )
                data = gguf.quants.quantize(data, qtype)
            writer.add_tensor(tensor_name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    return out
