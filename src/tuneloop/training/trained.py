"""A trained model, loaded to run: its full folder, or its base with its LoRA adapter merged
in (merging once makes inference as fast as the base model's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneloop.errors import UserError
from tuneloop.training.base import BaseWeights, ensure_source, no_progress_bars, quiet_libraries


def is_adapter(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def load_trained(name: str, path: str | None, config: dict[str, Any]) -> tuple[Any, Any]:
    """(model, tokenizer) of a trained model, merged, in fp32, ready for inference."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path or "")
    if not folder.is_dir():
        raise UserError(f"model {name}: its folder {folder} is missing")
    with quiet_libraries(), no_progress_bars():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        if not is_adapter(folder):
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
            return model, tokenizer
        from peft import PeftModel

        base = BaseWeights.from_dict(config["base"])
        model = AutoModelForCausalLM.from_pretrained(ensure_source(base), dtype=torch.float32)
        if base.adapter:  # the parent was a LoRA model too
            model = PeftModel.from_pretrained(model, base.adapter).merge_and_unload()
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    return model, tokenizer
