"""The SFT config: one small, flat, typed source for CLI flags, YAML files and docs.

Every field is a ``tuneloop train sft`` flag (``--max-steps``; booleans as ``--x/--no-x`` or
the pair named in ``flag``) and a key of a YAML config file (``max_steps: 20``); the field's
description is the flag's help. Flags override the file, the file overrides the defaults.
Pure: no torch, no database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tuneloop.errors import UserError

LabelSource = Literal["gold", "human", "llm", "mix"]
Precision = Literal["auto", "bf16", "fp32"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
TRACKERS = ("mlflow", "wandb", "tensorboard")
HELD_OUT = ("test", "gold")  # splits no training run ever reads


class TrainConfig(BaseModel):
    """Supervised fine-tuning of a causal LM on a dataset's labelled records."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    dataset: str = Field(description="Dataset NAME or NAME@VERSION to train on.")
    base: str = Field(
        "smollm2-135m-instruct",
        description="Base model: a name from `tuneloop models list` (packaged GGUF models are "
        "dequantized once into a cached safetensors folder), a trained model's name (its child), "
        "a local Hugging Face folder, or a hub id ORG/NAME (needs hub access).",
    )
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Name of the trained model (default: DATASET-sft-RUN).",
    )
    lora: bool = Field(
        True,
        description="Train a LoRA adapter (default) or every weight of the model (--full).",
        json_schema_extra={"flag": "--lora/--full"},
    )
    labels: LabelSource = Field(
        "mix",
        description="Which labels to learn: gold (the record's own reference output), human, "
        "llm (accepted LLM labels at or above --min-confidence), or mix (per record: a human "
        "label, else the reference output, else an LLM label).",
    )
    min_confidence: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="LLM labels below this confidence are left out (labels without a "
        "confidence, from generative tasks, count).",
    )
    prompt: str | None = Field(
        None, description="Only LLM labels made with this prompt version (NAME or NAME@VERSION)."
    )
    splits: list[str] = Field(
        default_factory=list,
        description="Splits to train on (repeatable; default: train, or every record of an "
        "unsplit dataset). Never test or gold.",
    )
    same_records_as: int | None = Field(
        None,
        ge=1,
        description="Train only on the records training run RUN trained on, each with its label "
        "from this run's source: e.g. --labels gold --same-records-as RUN gives the label-quality "
        "ceiling of a model trained on LLM labels.",
    )
    limit: int | None = Field(
        None, ge=1, description="Train on at most this many examples (the first in dataset order)."
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the examples.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides --epochs)."
    )
    batch_size: int = Field(8, ge=1, description="Examples per forward pass.")
    grad_accum: int = Field(
        1,
        ge=1,
        description="Forward passes per optimizer step (effective batch: batch size x this).",
    )
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate (default: 2e-4 for LoRA, 2e-5 for --full)."
    )
    lr_scheduler: Scheduler = Field("linear", description="Learning-rate schedule.")
    warmup_ratio: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of the steps spent warming up."
    )
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_length: int = Field(
        512,
        ge=8,
        description="Longest example in tokens; longer examples are left out (and counted).",
    )
    padding_free: bool = Field(
        True,
        description="Run each batch as one sequence without padding (the same loss, less "
        "compute when examples differ in length).",
    )
    packing: bool = Field(
        False,
        description="Pack examples into blocks of --max-length tokens (best fit; implies "
        "padding-free).",
    )
    precision: Precision = Field(
        "auto",
        description="auto: bf16 where the hardware supports it (about twice as fast on CPUs "
        "with AVX512-BF16 or AMX), else fp32; or force bf16 / fp32.",
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA scaling numerator (alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    lora_targets: list[str] | None = Field(
        None,
        description="Module names to adapt (repeatable; default: every Linear layer of the "
        "model except its output head).",
    )
    activation_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, slower."
    )
    seed: int = Field(42, description="Seed for initialisation and data order.")
    save_steps: int = Field(
        50,
        ge=1,
        description="Write a checkpoint every this many steps (`tuneloop train resume RUN` "
        "continues from the last one).",
    )
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for torch (default: torch's choice)."
    )
    report_to: list[str] = Field(
        default_factory=list,
        description="Also log to these trackers: mlflow, wandb, tensorboard (repeatable; "
        "their packages must be installed).",
    )
    family: str | None = Field(
        None,
        description="Model family of a base given as a folder or hub id (default: from its "
        "config's model type).",
    )

    @field_validator("splits")
    @classmethod
    def _no_held_out_split(cls, splits: list[str]) -> list[str]:
        for split in splits:
            if split in HELD_OUT:
                raise ValueError(
                    f"training on the {split} split is not allowed: it is held out for evaluation"
                )
        return splits

    @field_validator("report_to")
    @classmethod
    def _known_trackers(cls, trackers: list[str]) -> list[str]:
        for tracker in trackers:
            if tracker not in TRACKERS:
                raise ValueError(f"unknown tracker {tracker!r}; known: {', '.join(TRACKERS)}")
        return trackers

    @property
    def method(self) -> str:
        return "lora" if self.lora else "full"

    @property
    def peak_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-4 if self.lora else 2e-5


def field_help(name: str) -> str:
    """The documentation of one config field (the flag's help text)."""
    return TrainConfig.model_fields[name].description or ""


def _error_text(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "config"
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        known = ", ".join(TrainConfig.model_fields)
        message = f"unknown key; known keys: {known}"
    elif err["type"] == "missing":
        message = "missing (give it in the file or as a flag)"
    return key, message


def _key_lines(text: str) -> dict[str, int]:
    """Line numbers (1-based) of the top-level keys of a YAML mapping."""
    import yaml

    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config from a YAML file (if any) with ``overrides`` (flags given) on top.

    A bad file raises one ``UserError`` naming the file, the line and the key."""
    import yaml

    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read config {path}: {exc.strerror or exc}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
        values = {str(k): v for k, v in data.items()}
        lines = _key_lines(text)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return TrainConfig.model_validate({**values, **given})
    except ValidationError as exc:
        key, message = _error_text(exc)
        top = key.split(".")[0]
        if path is not None and top in values and top not in given:
            where = f"{path}, line {lines[top]}" if top in lines else str(path)
            raise UserError(f"{where}: {key}: {message}") from None
        flag = "--" + top.replace("_", "-")
        raise UserError(f"{flag}: {message}") from None


def dump_config(config: TrainConfig) -> str:
    """The config as YAML, every key (what `load_config` reads back)."""
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
