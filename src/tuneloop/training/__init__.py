"""Training helpers for the recipes in ``tuneloop.workflows.train``: the config, label
selection, base-model loading (GGUF dequantized once and cached), the LoRA shape, progress and
checkpoints, trained models as providers, and export.

Stateless helpers only; torch, transformers, TRL and PEFT are imported inside functions (or in
modules that are themselves imported inside functions) so that ``tuneloop --help`` stays fast.
"""
