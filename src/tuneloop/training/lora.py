"""The LoRA adapter's shape: which layers it adapts, read from the model itself."""

from __future__ import annotations

from typing import Any

from tuneloop.errors import UserError
from tuneloop.training.config import TrainConfig


def linear_targets(model: Any) -> list[str]:
    """The names (last path component) of the model's Linear layers, without its output head:
    q/k/v/o and the MLP projections of a llama or qwen, whatever the architecture calls them."""
    import torch

    head = model.get_output_embeddings()
    names: set[str] = set()
    for path, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            names.add(path.rsplit(".", 1)[-1])
    if not names:
        raise ValueError(f"{type(model).__name__} has no Linear layers to adapt")
    return sorted(names)


def lora_config(config: TrainConfig, model: Any) -> Any:
    """PEFT's ``LoraConfig`` for this run."""
    from peft import LoraConfig

    available = linear_targets(model)
    unknown = [name for name in config.lora_targets or [] if name not in available]
    if unknown:
        raise UserError(
            f"--lora-targets: {', '.join(unknown)} is not a Linear layer of this model; "
            f"its Linear layers: {', '.join(available)}"
        )
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_targets or available,
        bias="none",
        task_type="CAUSAL_LM",
    )
