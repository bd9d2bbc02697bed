"""Batched label scoring in PyTorch on the weights of a GGUF file, in 8 bits on the CPU.

``tuneloop annotate`` spends its time evaluating prompts: each record's own tokens go through
the model once and the next-token distribution at its end scores the labels. On a CPU with
8-bit dot-product instructions (AVX-512 VNNI, AVX-VNNI), PyTorch's int8 matrix product
(``torch._int_mm``) runs several times faster than llama.cpp's evaluation of a 4-bit GGUF
file, so this scorer is what the llama.cpp provider uses for batches of records when it can
(``scorer="auto"``, see ``LlamaCppProvider``); generation, single records and the tokenizer
stay in llama.cpp, so the token ids are the same either way.

How a batch is evaluated:

- The model is the transformers implementation of the file's architecture, with the weights
  read from the GGUF file (transformers dequantizes them). Every linear layer of the decoder
  then holds int8 weights with one scale per output channel; activations are quantized per
  token on the fly (dynamic W8A8), after SmoothQuant has moved part of their range into the
  weights, and the few input channels with outliers are multiplied in float32 (LLM.int8()).
  The embeddings, norms and the output head stay in float32.
  The converted weights are cached (``<cache>/scorers/``) so a model file is converted once.
- The prefix the batch's prompts share (chat template, instruction, examples) is evaluated
  once into a KV cache and kept for the next batch while it is the same.
- The records' remaining tokens are packed one after another into a single sequence with
  their own positions, and an attention function attends each record's tokens to the prefix
  and causally to the record's own tokens only: one matrix product per layer for the whole
  batch, no padding, and attention that does not grow with the batch.
- The output head runs only at each record's last token; the log-softmax over the whole
  vocabulary gives log-probabilities, as the llama.cpp paths do.

The scores are not bit-identical to llama.cpp's: the weights are the file's, dequantized then
requantized to 8 bits, and the activations are quantized too. ``tests/test_real_models.py``
bounds the difference on the packaged models; the labels agree with llama.cpp's wherever the
margin between them is not tiny.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneloop.llm.types import ProviderError

# GGUF architectures (``general.architecture``) whose transformers implementation this scorer
# drives: plain causal attention, no sliding windows or soft-capping.
ARCHITECTURES = ("llama", "qwen2")
FORMAT = 3  # part of the cache key: bump when the cached layout changes
ATTENTION = "tuneloop_packed"
OUTLIER = 10.0  # input channels with an activation above this go through float32
SMOOTHING = 0.5  # how much of the activations' range moves into the weights (SmoothQuant)
# text whose activations set the smoothing scales: channels with large activations are a
# property of the model, not of the input, so a few sentences of mixed text find them
CALIBRATION = (
    "The committee met on Tuesday to review the budget for the coming year. Several members "
    "raised concerns about rising costs, while others argued that the new programme would pay "
    "for itself within three years.\n\nQuestion: What is the capital of France?\nAnswer: Paris."
    "\n\ndef add(a, b):\n    return a + b\n\nClassify the sentiment of this review: I loved "
    "every minute of it, the cast is wonderful! Label: positive. Review: dull and far too long. "
    "Label: negative. Summarise: the river flooded the town after a week of heavy rain (2,300 mm)."
)

# (start, end) of each record's tokens in the packed sequence of the current forward pass
_SPANS: contextvars.ContextVar[list[tuple[int, int]] | None] = contextvars.ContextVar(
    "tuneloop_spans", default=None
)


def int8_available() -> bool:
    """True when this PyTorch multiplies int8 matrices on the CPU."""
    try:
        a = torch.ones((2, 8), dtype=torch.int8)
        return bool(torch._int_mm(a, a.t().contiguous()).sum().item() == 32)
    except (RuntimeError, AttributeError):
        return False


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def fast_int8() -> bool:
    """True on x86 CPUs with 8-bit dot-product instructions (AVX-512 VNNI, AVX-VNNI): where
    the int8 products were measured faster than llama.cpp. Elsewhere ``auto`` keeps
    llama.cpp (``TUNELOOP_SCORER=torch`` still runs this scorer)."""
    return bool({"avx512_vnni", "avx_vnni"} & _cpu_flags())


def available_memory() -> int | None:
    """Bytes of memory the kernel can give without swapping (``MemAvailable``); None where
    /proc/meminfo does not say."""
    try:
        text = Path("/proc/meminfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) > 1 and parts[1].isdigit() else None
    return None


def memory_needed(path: Path, converted: bool) -> int:
    """A generous estimate of the memory the scorer needs for the GGUF file at ``path``: a
    4-bit file becomes about 2.7x its size in memory once converted, and the conversion itself
    holds the float32 weights, about 5.5x (measured on the packaged Qwen files)."""
    return int(path.stat().st_size * (3.5 if converted else 7.0))


@dataclass
class Quantized:
    q: torch.Tensor  # (tokens, in) int8, outlier channels zeroed
    scale: torch.Tensor  # (tokens, 1) float32
    outliers: tuple[torch.Tensor, torch.Tensor] | None  # channel indices, their float32 values


class _Quantizer:
    """Per-token symmetric int8 quantization of an activation, remembered for the next linear
    layer that reads the same tensor (q, k and v read one input; so do gate and up).

    Input channels holding an outlier (a value above ``OUTLIER`` in magnitude) are taken out
    of the 8-bit product and multiplied in float32, as LLM.int8() does: a few channels of
    large activations would otherwise set every token's scale and leave its other values a
    handful of levels."""

    def __init__(self) -> None:
        self._x: torch.Tensor | None = None
        self._out: Quantized | None = None

    def __call__(self, x: torch.Tensor) -> Quantized:
        if self._x is x and self._out is not None:
            return self._out
        flat = x.reshape(-1, x.shape[-1])
        size = flat.abs()
        cols = (size.amax(dim=0) > OUTLIER).nonzero().flatten()
        outliers = None
        if cols.numel():
            outliers = (cols, flat[:, cols])
            flat = flat.index_fill(1, cols, 0.0)
            size.index_fill_(1, cols, 0.0)
        scale = size.amax(dim=1, keepdim=True).clamp_(min=1e-8).div_(127.0)
        q = torch.div(flat, scale).round_().to(torch.int8)
        self._x, self._out = x, Quantized(q, scale, outliers)
        return self._out

    def forget(self) -> None:
        self._x = self._out = None


class Int8Linear(torch.nn.Module):
    """A linear layer with int8 weights (one scale per output channel) and int8 activations
    (one scale per token): ``torch._int_mm`` then both scales."""

    wq: torch.Tensor  # (in, out) int8
    ws: torch.Tensor  # (1, out) float32: each output channel's scale

    def __init__(
        self, in_features: int, out_features: int, bias: bool, quantizer: _Quantizer
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("wq", torch.empty((in_features, out_features), dtype=torch.int8))
        self.register_buffer("ws", torch.empty((1, out_features), dtype=torch.float32))
        self.bias: torch.Tensor | None
        if bias:
            self.register_buffer("bias", torch.empty(out_features, dtype=torch.float32))
        else:
            self.bias = None
        self.quantizer = quantizer

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, quantizer: _Quantizer) -> Int8Linear:
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, quantizer)
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1, keepdim=True).clamp_(min=1e-8) / 127.0
        layer.wq = torch.round(w / scale).clamp_(-127, 127).to(torch.int8).t().contiguous()
        layer.ws = scale.reshape(1, -1).contiguous()
        if linear.bias is not None:
            layer.bias = linear.bias.detach().float().clone()
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.quantizer(x)
        y = torch._int_mm(a.q, self.wq).float().mul_(a.scale).mul_(self.ws)
        if a.outliers is not None:
            cols, values = a.outliers
            y.addmm_(values, self.wq[cols].float().mul_(self.ws))
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)


def _layers(model: Any) -> list[Any]:
    return list(model.model.layers)


def quantize_model(model: Any) -> None:
    """Replace the decoder's linear layers with ``Int8Linear`` (in place); q, k and v share
    one quantizer (they read one input), so do gate and up. The output head stays in float32:
    it runs on one token per record, and 8 bits there doubled the error against the file's
    weights (measured on Qwen2.5-Coder-0.5B) while saving no time."""
    shared = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "gate_proj": "mlp"}
    shared["up_proj"] = "mlp"
    for layer in _layers(model):
        quantizers: dict[str, _Quantizer] = {}
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    group = shared.get(name, name)
                    quantizer = quantizers.setdefault(group, _Quantizer())
                    setattr(parent, name, Int8Linear.from_linear(child, quantizer))


def smooth_model(model: Any, tokens: Sequence[int], alpha: float = SMOOTHING) -> None:
    """SmoothQuant (in place, before ``quantize_model``): divide each input channel of the
    attention and MLP input projections by ``max|x|^alpha / max|w|^(1 - alpha)`` and multiply
    the weights by the same, folding the division into the RMSNorm before them. The model
    computes the same function; the activations have a smaller range to quantize. ``max|x|``
    comes from running ``tokens`` through the model."""
    seen: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(_layers(model)):
        for key, module in (("attn", layer.self_attn.q_proj), ("mlp", layer.mlp.gate_proj)):

            def hook(_: Any, args: tuple[torch.Tensor, ...], i: int = i, key: str = key) -> None:
                x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0)
                seen[i, key] = torch.maximum(seen[i, key], x) if (i, key) in seen else x

            hooks.append(module.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            model.model(input_ids=torch.tensor([list(tokens)]))
    finally:
        for handle in hooks:
            handle.remove()
    with torch.no_grad():
        for i, layer in enumerate(_layers(model)):
            attn, mlp = layer.self_attn, layer.mlp
            for key, norm, linears in (
                ("attn", layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj]),
                ("mlp", layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj]),
            ):
                w_max = torch.stack([lin.weight.abs().amax(dim=0) for lin in linears]).amax(0)
                scale = seen[i, key].clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(
                    1 - alpha
                )
                scale.clamp_(min=1e-5)
                norm.weight.div_(scale)
                for lin in linears:
                    lin.weight.mul_(scale)


def _forget_activations(model: Any) -> None:
    for module in model.modules():
        if isinstance(module, Int8Linear):
            module.quantizer.forget()


def packed_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention for a packed batch: the tokens of each span attend to everything cached
    before this forward pass (the shared prefix) and causally to their own span. Without
    spans, the whole input is one span (plain causal attention after the cache)."""
    length = query.shape[2]
    spans = _SPANS.get() or [(0, length)]
    past = key.shape[2] - length
    gqa = key.shape[1] != query.shape[1]
    outs = []
    for start, end in spans:
        n = end - start
        k = key[:, :, past + start : past + end]
        v = value[:, :, past + start : past + end]
        causal = torch.ones((n, n), dtype=torch.bool).tril_()
        if past:
            k = torch.cat([key[:, :, :past], k], dim=2)
            v = torch.cat([value[:, :, :past], v], dim=2)
            causal = torch.cat([torch.ones((n, past), dtype=torch.bool), causal], dim=1)
        outs.append(
            torch.nn.functional.scaled_dot_product_attention(
                query[:, :, start:end], k, v, attn_mask=causal, scale=scaling, enable_gqa=gqa
            )
        )
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, packed_attention)


# -- converting a GGUF file once, and the cache of converted weights ---------------------------


def cache_folder(path: Path, cache: Path) -> Path:
    """Where the converted weights of the GGUF file at ``path`` live: keyed by the file's
    resolved path, size and modification time, so a changed file is converted again."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|int8|{FORMAT}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache / "scorers" / f"{path.stem}-{digest}"


def _state_for_disk(model: Any) -> dict[str, torch.Tensor]:
    tied = model.lm_head.weight is model.get_input_embeddings().weight
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
            continue
        state[name] = tensor.contiguous()
    return state


def save_converted(model: Any, folder: Path) -> None:
    """Write a quantized model to ``folder`` atomically (a temporary folder, then a rename)."""
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        (tmp / "config.json").write_text(model.config.to_json_string(), encoding="utf-8")
        save_file(_state_for_disk(model), str(tmp / "model.safetensors"))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_converted(folder: Path) -> Any:
    """A quantized model saved by ``save_converted``."""
    import transformers
    from accelerate import init_empty_weights
    from safetensors.torch import load_file

    hf: Any = transformers
    config = hf.AutoConfig.from_pretrained(str(folder))
    with init_empty_weights():  # parameters on the meta device: no random initialisation
        model = hf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    quantize_model(model)
    state = load_file(str(folder / "model.safetensors"))
    tied = bool(getattr(config, "tie_word_embeddings", False))
    result = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in result.missing_keys if not (tied and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        wrong = ", ".join([*missing, *result.unexpected_keys][:3])
        raise ProviderError(f"converted weights in {folder} do not fit the model ({wrong})")
    if tied:
        model.lm_head.weight = model.get_input_embeddings().weight
    return model.eval()


def convert_gguf(path: Path, calibration: Sequence[int]) -> Any:
    """The transformers model of the GGUF file at ``path`` (dequantized), smoothed with the
    activations of the ``calibration`` tokens and quantized to int8."""
    import transformers

    hf: Any = transformers
    # transformers shows its own progress bar while it dequantizes the tensors
    model = hf.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    embeddings = model.get_input_embeddings().weight
    if model.lm_head.weight.shape == embeddings.shape and torch.equal(
        model.lm_head.weight, embeddings
    ):  # a file without its own output matrix: share the embeddings' (once in memory)
        model.lm_head.weight = embeddings
        model.config.tie_word_embeddings = True
    smooth_model(model, calibration)
    quantize_model(model)
    return model.eval()


def load_model(path: Path, cache: Path, calibration: Sequence[int]) -> Any:
    """The int8 model of ``path``: from the cache, else converted once and cached."""
    folder = cache_folder(path, cache)
    if (folder / "model.safetensors").is_file():
        return load_converted(folder)
    model = convert_gguf(path, calibration)
    with contextlib.suppress(OSError):  # a read-only cache still scores (converting each time)
        save_converted(model, folder)
    return model


# -- scoring ------------------------------------------------------------------------------------


class TorchScorer:
    """Scores batches of prompts (token ids) with a transformers causal LM, keeping the prefix
    the prompts share in a KV cache between batches. Same interface as llama.cpp's batch scorer
    in ``llamacpp.py``: ``score(shared, prompts)`` and ``free()``."""

    name = "torch-int8"

    def __init__(self, model: Any, n_ctx: int, max_seqs: int, n_batch: int) -> None:
        import transformers

        hf: Any = transformers
        _register_attention()
        model.set_attn_implementation(ATTENTION)
        self.model = model
        self.n_ctx, self.max_seqs, self.n_batch = n_ctx, max_seqs, n_batch
        self._new_cache: Any = lambda: hf.DynamicCache(config=model.config)
        self.cache: Any = self._new_cache()
        self.held: list[int] = []  # the tokens the cache holds

    def free(self) -> None:
        self.cache = self._new_cache()
        self.held = []

    def _forward(
        self, tokens: list[int], positions: list[int], spans: list[tuple[int, int]]
    ) -> torch.Tensor:
        reset = _SPANS.set(spans)
        try:
            out = self.model.model(
                input_ids=torch.tensor([tokens]),
                position_ids=torch.tensor([positions]),
                past_key_values=self.cache,
                use_cache=True,
            )
        finally:
            _SPANS.reset(reset)
            _forget_activations(self.model)
        hidden: torch.Tensor = out.last_hidden_state[0]
        return hidden

    def _hold(self, prefix: list[int]) -> None:
        """Make the cache hold exactly ``prefix``, reusing what it already holds."""
        from tuneloop.llm.providers.llamacpp import _common_prefix

        keep = _common_prefix(self.held, prefix)
        if keep < len(self.held):
            if keep == 0:
                self.cache = self._new_cache()
            else:
                self.cache.crop(keep - len(self.held))
            self.held = self.held[:keep]
        for start in range(keep, len(prefix), self.n_batch):
            chunk = prefix[start : start + self.n_batch]
            self._forward(chunk, list(range(start, start + len(chunk))), [(0, len(chunk))])
            self.held = prefix[: start + len(chunk)]

    def score(self, shared: int, prompts: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """The next-token log-probabilities after each prompt; the first ``shared`` tokens are
        the same in every prompt."""
        if any(len(prompt) <= shared for prompt in prompts):
            raise ValueError("every prompt needs a token after the shared prefix")
        with torch.inference_mode():
            try:
                self._hold(list(prompts[0][:shared]))
                tokens: list[int] = []
                positions: list[int] = []
                spans: list[tuple[int, int]] = []
                for prompt in prompts:
                    rest = list(prompt[shared:])
                    spans.append((len(tokens), len(tokens) + len(rest)))
                    tokens += rest
                    positions += range(shared, shared + len(rest))
                hidden = self._forward(tokens, positions, spans)
                self.cache.crop(shared - self.cache.get_seq_length())
                last = hidden[[end - 1 for _, end in spans]]
                logits = self.model.lm_head(last).double()
                return list(torch.log_softmax(logits, dim=-1).numpy())
            except (RuntimeError, ValueError, IndexError) as exc:
                self.free()
                raise ProviderError(f"torch scorer failed on a batch of records: {exc}") from exc
