"""Batched label scoring in PyTorch on the weights of a GGUF file, in 8 bits on the CPU.

``tuneloop annotate`` spends its time evaluating prompts: each record's own tokens go through
the model once and the next-token distribution at its end scores the labels. On a CPU with
8-bit dot-product instructions (AVX-512 VNNI, AVX-VNNI), PyTorch's int8 matrix product
(``torch._int_mm``) runs several times faster than llama.cpp's evaluation of a 4-bit GGUF
file, so this scorer is what the llama.cpp provider uses for batches of records when it can
(``scorer="auto"``, see ``LlamaCppProvider``); generation, single records and the tokenizer
stay in llama.cpp, so the token ids are the same either way.

Converting a model file (once; cached in ``<cache>/scorers/``): transformers reads the GGUF
file into its implementation of the architecture (dequantizing the weights), SmoothQuant moves
part of the activations' range into the weights, and every linear layer of the decoder becomes
int8 with one scale per output channel; q, k and v are stored as one matrix, so are gate and
up (they read the same input). The embeddings and norms stay in float32.

Scoring runs ``Int8Decoder``, this module's forward pass for the Llama and Qwen2 decoders
(transformers is not imported): activations are quantized per token on the fly (dynamic
W8A8), and the few input channels with outliers are multiplied in float32 (LLM.int8()).
``tests/test_torch_scorer.py`` checks it against the transformers implementation.

How a batch is evaluated:

- The prefix the batch's prompts share (chat template, instruction, examples) is evaluated
  once into a KV cache and kept for the next batch while it is the same.
- The records' remaining tokens are packed one after another into a single sequence with
  their own positions: one matrix product per layer for the whole batch, no padding.
  Attention attends each record's tokens to the prefix and causally to its own tokens only,
  so it does not grow with the batch.
- The linear layers and the element-wise work around them run on slices of ``CHUNK`` tokens,
  so the intermediate activations of a slice can stay in the CPU's cache and a large batch
  does not hold whole-batch MLP activations at once.
- Between the MLP's two int8 products, dequantizing, SiLU, the product of the halves and
  quantizing again run as one kernel compiled ahead of time (``scorer_kernels``) where it
  could be built; the eager code here computes the same and runs otherwise.
- The output head runs only at each record's last token, in 8 bits over the whole vocabulary
  for the softmax's normaliser, and with float32 activations for the tokens the caller asks
  about (the labels' first tokens): their logits are not hurt by quantizing the activations.

The scores are not bit-identical to llama.cpp's: the weights are the file's, dequantized then
requantized to 8 bits, and the activations are quantized too. ``tests/test_real_models.py``
bounds the difference on the packaged models; the labels agree with llama.cpp's wherever the
margin between them is not tiny.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tuneloop.llm.providers import scorer_kernels
from tuneloop.llm.providers.scorer_kernels import MIN_TOKENS, Kernels
from tuneloop.llm.types import ProviderError

# GGUF architectures (``general.architecture``) this scorer runs: plain causal attention, no
# sliding windows or soft-capping
ARCHITECTURES = ("llama", "qwen2")
FORMAT = 4  # part of the cache key: bump when the cached layout changes
OUTLIER = 10.0  # input channels with an activation above this go through float32
SMOOTHING = 0.5  # how much of the activations' range moves into the weights (SmoothQuant)
# the same for the MLP's down projection, whose input has the largest outliers: moving half of
# their range into the weights cost the weights' precision (closer to the float32 model on
# 200 Rotten Tomatoes prompts, SmolLM2-135M and Qwen2.5-Coder-0.5B, than 0.5 or none)
DOWN_SMOOTHING = 0.3
OUTLIER_CACHE = 4 * 2**20  # bytes of dequantized outlier channels kept per layer
# tokens per slice for the linear layers and their element-wise work: on a 2-core Xeon with
# AMX, 128 scored 32.4 records/s against 30.0 for 256 and 30.5 for 512 (medians of 5
# interleaved rounds of 160 Rotten Tomatoes records, Qwen2.5-Coder-0.5B)
CHUNK = 128
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
    """A generous estimate of the memory a command that scores with this scorer needs for the
    GGUF file at ``path``, llama.cpp's own copy of the model included: measured with
    Qwen2.5-Coder-1.5B Q4_K_M (1.1 GB), 4.3 GB at most with the converted copy loaded and
    12.2 GB while converting, which holds the float32 weights transformers reads."""
    return int(path.stat().st_size * (4.5 if converted else 12.0))


# -- 8-bit arithmetic -------------------------------------------------------------------------


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight matrix (out, in) as int8 with one float32 scale per output channel."""
    w = w.detach().float()
    scale = w.abs().amax(dim=1).clamp_(min=1e-8) / 127.0
    return torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8), scale


@dataclass
class Quantized:
    """An activation (tokens, in) quantized per token for ``Linear8``."""

    q: torch.Tensor  # (tokens, in) int8, outlier channels zeroed
    scale: torch.Tensor  # (tokens, 1) float32
    outliers: tuple[torch.Tensor, torch.Tensor] | None  # channel indices, their float32 values


def quantize_tokens(x: torch.Tensor, split: bool = True) -> Quantized:
    """Symmetric int8 quantization of ``x`` (tokens, in) with one scale per token. Input
    channels holding an outlier (above ``OUTLIER`` in magnitude) are taken out and kept in
    float32, as LLM.int8() does: a few channels of large activations would otherwise set every
    token's scale and leave its other values a handful of levels. ``split=False``: no channel
    is taken out."""
    size = x.abs()
    outliers = None
    cols = (size.amax(dim=0) > OUTLIER).nonzero().flatten() if split else None
    if cols is not None and cols.numel():
        outliers = (cols, x[:, cols])
        x = x.index_fill(1, cols, 0.0)
        size.index_fill_(1, cols, 0.0)
    scale = size.amax(dim=1, keepdim=True).clamp_(min=1e-8).div_(127.0)
    return Quantized(torch.div(x, scale).round_().to(torch.int8), scale, outliers)


class Linear8:
    """A linear layer with int8 weights (one scale per output channel) applied to a
    ``Quantized`` activation: ``torch._int_mm``, then both scales; outlier channels in
    float32."""

    def __init__(self, wq: torch.Tensor, ws: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.wq, self.ws, self.bias = wq, ws, bias  # (out, in) int8, (out,), (out,) or None
        self.wt = wq.t()  # the product reads the (out, in) layout transposed: measured faster
        # the dequantized weights of input channels seen with outliers, by channel: mostly
        # the same channels from one batch to the next (a property of the model)
        self._columns: dict[int, torch.Tensor] = {}
        self._room = max(1, OUTLIER_CACHE // (4 * wq.shape[0]))

    def _rows(self, cols: torch.Tensor) -> torch.Tensor:
        """The float32 weights (channels, out) of input channels ``cols``."""
        found = []
        for col in cols.tolist():
            row = self._columns.get(col)
            if row is None:
                row = self.wq[:, col].float().mul_(self.ws)
                if len(self._columns) < self._room:
                    self._columns[col] = row
            found.append(row)
        return torch.stack(found)

    def __call__(self, a: Quantized) -> torch.Tensor:
        return self.finish(torch._int_mm(a.q, self.wt), a)

    def finish(self, product: torch.Tensor, a: Quantized) -> torch.Tensor:
        """The float32 output from the int8 product (int32) of ``a`` with the weights."""
        y = product.float().mul_(a.scale).mul_(self.ws)
        if a.outliers is not None:
            cols, values = a.outliers
            y.addmm_(values, self._rows(cols))
        if self.bias is not None:
            y.add_(self.bias)
        return y


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps)) * weight


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding, halves layout (``x`` is tokens, heads, head_dim)."""
    half = x.shape[-1] // 2
    turned = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + turned * sin


# -- the decoder ------------------------------------------------------------------------------


@dataclass
class DecoderConfig:
    """What ``Int8Decoder`` needs to know about a Llama or Qwen2 decoder."""

    architecture: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    tied: bool  # the output head is the embedding matrix
    rope_scaling: float = 1.0  # transformers' ``attention_scaling`` of the rotary embedding

    def names(self) -> list[str]:
        """The tensors a converted model holds (biases are optional)."""
        names = ["embed", "norm", "inv_freq", "head.wq", "head.ws", "head.smooth"]
        for i in range(self.layers):
            names += [f"layers.{i}.attn_norm", f"layers.{i}.mlp_norm"]
            for part in ("qkv", "o", "gate_up", "down"):
                names += [f"layers.{i}.{part}.wq", f"layers.{i}.{part}.ws"]
        return names


class _Layer:
    def __init__(self, state: dict[str, torch.Tensor], i: int) -> None:
        def linear(part: str) -> Linear8:
            p = f"layers.{i}.{part}."
            return Linear8(state[p + "wq"], state[p + "ws"], state.get(p + "bias"))

        self.attn_norm = state[f"layers.{i}.attn_norm"]
        self.mlp_norm = state[f"layers.{i}.mlp_norm"]
        self.qkv, self.o = linear("qkv"), linear("o")
        self.gate_up, self.down = linear("gate_up"), linear("down")


class KVCache:
    """The keys and values of the tokens a prefix put in each layer."""

    def __init__(self) -> None:
        self.keys: list[torch.Tensor] = []  # per layer: (1, kv_heads, cached tokens, head_dim)
        self.values: list[torch.Tensor] = []

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def crop(self, length: int) -> None:
        """Keep the first ``length`` tokens."""
        if length <= 0:
            self.keys, self.values = [], []
        else:
            self.keys = [k[:, :, :length] for k in self.keys]
            self.values = [v[:, :, :length] for v in self.values]


class Int8Decoder:
    """The forward pass of a Llama or Qwen2 decoder with ``Linear8`` layers over packed
    records (see the module docstring)."""

    def __init__(self, config: DecoderConfig, state: dict[str, torch.Tensor]) -> None:
        self.config = config
        self.embed, self.norm = state["embed"], state["norm"]
        self.inv_freq = state["inv_freq"]
        self.head = Linear8(state["head.wq"], state["head.ws"], None)
        self.head_smooth = state["head.smooth"]
        self.layers = [_Layer(state, i) for i in range(config.layers)]
        # the fused MLP kernel (``scorer_kernels``); None: the eager code below
        self.kernels: Kernels | None = None

    def forward(
        self,
        tokens: list[int],
        positions: list[int],
        spans: list[tuple[int, int]],
        cache: KVCache,
        keep: bool = False,
    ) -> torch.Tensor:
        """Hidden states (tokens, hidden) before the final norm. Each span of ``tokens`` attends
        to the ``cache``'s tokens and causally to itself; ``keep`` appends the tokens' keys and
        values to the cache (for a prefix: one span)."""
        c = self.config
        n = len(tokens)
        x = self.embed[torch.tensor(tokens)]
        angles = torch.tensor(positions, dtype=torch.float32)[:, None] * self.inv_freq[None]
        angles = torch.cat((angles, angles), dim=-1)
        cos = (angles.cos() * c.rope_scaling)[:, None]
        sin = (angles.sin() * c.rope_scaling)[:, None]
        q_size, kv_size = c.heads * c.head_dim, c.kv_heads * c.head_dim
        scaling = c.head_dim**-0.5
        past = cache.length
        masks = []  # each span attends to the cached tokens and causally to itself
        for start, end in spans:
            mask = torch.ones((end - start, past + end - start), dtype=torch.bool)
            masks.append(mask.tril_(diagonal=past))
        for i, layer in enumerate(self.layers):
            qkv = torch.empty((n, q_size + 2 * kv_size))
            for s in range(0, n, CHUNK):
                h = rms_norm(x[s : s + CHUNK], layer.attn_norm, c.eps)
                qkv[s : s + CHUNK] = layer.qkv(quantize_tokens(h))
            # (1, heads, tokens, head_dim), as scaled_dot_product_attention's CPU kernel wants
            q = rotate(qkv[:, :q_size].view(n, c.heads, c.head_dim), cos, sin)
            q = q.transpose(0, 1)[None]
            k = qkv[:, q_size : q_size + kv_size].view(n, c.kv_heads, c.head_dim)
            k = rotate(k, cos, sin).transpose(0, 1)[None]
            v = qkv[:, q_size + kv_size :].view(n, c.kv_heads, c.head_dim).transpose(0, 1)[None]
            if past:
                pk, pv = cache.keys[i], cache.values[i]
            outs = []
            for (start, end), mask in zip(spans, masks, strict=True):
                sk, sv = k[:, :, start:end], v[:, :, start:end]
                if past:
                    sk, sv = torch.cat((pk, sk), dim=2), torch.cat((pv, sv), dim=2)
                outs.append(
                    torch.nn.functional.scaled_dot_product_attention(
                        q[:, :, start:end], sk, sv, attn_mask=mask, scale=scaling, enable_gqa=True
                    )
                )
            if keep:
                if past:
                    cache.keys[i] = torch.cat((pk, k), dim=2)
                    cache.values[i] = torch.cat((pv, v), dim=2)
                else:
                    cache.keys.append(k.contiguous())
                    cache.values.append(v.contiguous())
            out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
            attended = out[0].transpose(0, 1).reshape(n, q_size)
            for s in range(0, n, CHUNK):
                rows = x[s : s + CHUNK]
                rows += layer.o(quantize_tokens(attended[s : s + CHUNK]))
                h = rms_norm(rows, layer.mlp_norm, c.eps)
                rows += layer.down(self._mlp_middle(layer, quantize_tokens(h)))
        return x

    def _mlp_middle(self, layer: _Layer, a: Quantized) -> Quantized:
        """SiLU(gate) * up of the MLP's normed input ``a``, quantized for the down product:
        the fused kernel where it applies (no outlier channel in or out, no bias), else the
        eager code, which is also what the kernel computes."""
        product = torch._int_mm(a.q, layer.gate_up.wt)
        fused = (
            self.kernels is not None
            and a.outliers is None
            and layer.gate_up.bias is None
            and product.shape[0] >= MIN_TOKENS
        )
        if fused:
            assert self.kernels is not None
            q, scale, size = self.kernels.mlp_middle(product, a.scale, layer.gate_up.ws)
            if not bool((size > OUTLIER).any()):
                return Quantized(q, scale, None)
        gate_up = layer.gate_up.finish(product, a)
        half = gate_up.shape[1] // 2
        inner = torch.nn.functional.silu(gate_up[:, :half])
        return quantize_tokens(inner.mul_(gate_up[:, half:]))

    def log_probs(self, hidden: torch.Tensor, exact: Sequence[int]) -> torch.Tensor:
        """Next-token log-probabilities (float64) from last hidden states: the 8-bit head over
        the whole vocabulary, float32 logits for the ``exact`` tokens."""
        hidden = rms_norm(hidden, self.norm, self.config.eps)
        logits = self.head(quantize_tokens(hidden / self.head_smooth, split=False))
        if exact:
            ids = torch.tensor(sorted(set(exact)))
            if self.config.tied:
                rows = self.embed[ids]
            else:  # a head of its own is kept in 8 bits only: its rows, dequantized
                rows = self.head.wq[ids].float().mul_(self.head.ws[ids, None])
                rows.div_(self.head_smooth)
            logits[:, ids] = hidden @ rows.t()
        return torch.log_softmax(logits.double(), dim=-1)


# -- converting a GGUF file once, and the cache of converted weights ---------------------------


def _layers(model: Any) -> list[Any]:
    return list(model.model.layers)


def _balance(x_max: torch.Tensor, w_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-channel scale: ``max|x|^alpha / max|w|^(1 - alpha)``."""
    scale = x_max.clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(1 - alpha)
    return scale.clamp_(min=1e-5)


def smooth_model(model: Any, tokens: Sequence[int], alpha: float = SMOOTHING) -> torch.Tensor:
    """SmoothQuant (in place, on a transformers model): divide each input channel of a linear
    layer's input by ``max|x|^alpha / max|w|^(1 - alpha)`` and multiply the layer's weights by
    the same. For the attention and MLP input projections the division is folded into the
    RMSNorm before them; for the MLP's down projection into the up projection's output
    channels (the gate's SiLU is not touched). The model computes the same function; the
    activations have a smaller range to quantize. ``max|x|`` comes from running ``tokens``
    through the model.

    Returns the scale for the output head's input, which cannot be folded into the final norm
    (the float32 logits need the true hidden state): ``pack_model`` stores it."""
    seen: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(_layers(model)):
        mlp = layer.mlp
        for key, module in (
            ("attn", layer.self_attn.q_proj),
            ("mlp", mlp.gate_proj),
            ("down", mlp.down_proj),
        ):

            def hook(_: Any, args: tuple[torch.Tensor, ...], i: int = i, key: str = key) -> None:
                x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0)
                seen[i, key] = torch.maximum(seen[i, key], x) if (i, key) in seen else x

            hooks.append(module.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            out = model.model(input_ids=torch.tensor([list(tokens)]))
            head_max = out.last_hidden_state[0].abs().amax(dim=0).clone()
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
                scale = _balance(seen[i, key], w_max, alpha)
                norm.weight.div_(scale)
                for lin in linears:
                    lin.weight.mul_(scale)
            w_max = mlp.down_proj.weight.abs().amax(dim=0)
            scale = _balance(seen[i, "down"], w_max, DOWN_SMOOTHING)
            mlp.up_proj.weight.div_(scale[:, None])
            if mlp.up_proj.bias is not None:
                mlp.up_proj.bias.div_(scale)
            mlp.down_proj.weight.mul_(scale)
        return _balance(head_max, model.lm_head.weight.detach().abs().amax(dim=0), alpha)


def decoder_config(model: Any) -> DecoderConfig:
    """The ``DecoderConfig`` of a transformers Llama or Qwen2 model; ValueError for what the
    decoder does not run."""
    config = model.config
    architecture = {"LlamaConfig": "llama", "Qwen2Config": "qwen2"}.get(type(config).__name__)
    if architecture is None:
        raise ValueError(f"no int8 decoder for {type(config).__name__}")
    if getattr(config, "use_sliding_window", False) or getattr(config, "hidden_act", "silu") != (
        "silu"
    ):
        raise ValueError("sliding-window attention and activations other than SiLU are not run")
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    tied = model.lm_head.weight is model.get_input_embeddings().weight
    return DecoderConfig(
        architecture=architecture,
        vocab=int(config.vocab_size),
        hidden=int(config.hidden_size),
        layers=int(config.num_hidden_layers),
        heads=heads,
        kv_heads=int(config.num_key_value_heads or heads),
        head_dim=head_dim,
        eps=float(config.rms_norm_eps),
        tied=tied,
        rope_scaling=float(getattr(model.model.rotary_emb, "attention_scaling", 1.0)),
    )


def pack_model(
    model: Any, head_smooth: torch.Tensor
) -> tuple[DecoderConfig, dict[str, torch.Tensor]]:
    """The config and tensors of ``Int8Decoder`` for a transformers model smoothed by
    ``smooth_model`` (which gave ``head_smooth``): q, k and v as one int8 matrix, gate and up
    as another, each with its scales and biases."""
    config = decoder_config(model)
    state: dict[str, torch.Tensor] = {}

    def linear(name: str, parts: list[Any]) -> None:
        w = torch.cat([p.weight.detach().float() for p in parts])
        state[name + ".wq"], state[name + ".ws"] = quantize_weight(w)
        if any(p.bias is not None for p in parts):
            state[name + ".bias"] = torch.cat(
                [
                    p.bias.detach().float() if p.bias is not None else torch.zeros(p.out_features)
                    for p in parts
                ]
            )

    with torch.no_grad():
        inner = model.model
        state["embed"] = inner.embed_tokens.weight.detach().float()
        state["norm"] = inner.norm.weight.detach().float()
        state["inv_freq"] = inner.rotary_emb.inv_freq.detach().float()
        state["head.smooth"] = head_smooth.float()
        state["head.wq"], state["head.ws"] = quantize_weight(
            model.lm_head.weight.detach().float() * head_smooth
        )
        for i, layer in enumerate(_layers(model)):
            attn, mlp = layer.self_attn, layer.mlp
            state[f"layers.{i}.attn_norm"] = layer.input_layernorm.weight.detach().float()
            state[f"layers.{i}.mlp_norm"] = layer.post_attention_layernorm.weight.detach().float()
            linear(f"layers.{i}.qkv", [attn.q_proj, attn.k_proj, attn.v_proj])
            linear(f"layers.{i}.o", [attn.o_proj])
            linear(f"layers.{i}.gate_up", [mlp.gate_proj, mlp.up_proj])
            linear(f"layers.{i}.down", [mlp.down_proj])
    return config, {k: v.contiguous() for k, v in state.items()}


def cache_folder(path: Path, cache: Path) -> Path:
    """Where the converted weights of the GGUF file at ``path`` live: keyed by the file's
    resolved path, size and modification time, so a changed file is converted again."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|int8|{FORMAT}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache / "scorers" / f"{path.stem}-{digest}"


def save_converted(config: DecoderConfig, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Write a converted model to ``folder`` atomically (a temporary folder, then a rename)."""
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        text = json.dumps({"format": FORMAT, **config.__dict__}, indent=1)
        (tmp / "config.json").write_text(text, encoding="utf-8")
        save_file(state, str(tmp / "model.safetensors"))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_converted(folder: Path) -> Int8Decoder:
    """The decoder saved by ``save_converted`` in ``folder``."""
    from safetensors.torch import load_file

    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if raw.pop("format", None) != FORMAT:
            raise ValueError("written by another version of tuneloop")
        config = DecoderConfig(**raw)
    except (OSError, ValueError, TypeError) as exc:
        raise ProviderError(f"converted weights in {folder} cannot be read ({exc})") from exc
    state = load_file(str(folder / "model.safetensors"))
    missing = [name for name in config.names() if name not in state]
    if missing:
        raise ProviderError(
            f"converted weights in {folder} do not fit the model ({', '.join(missing[:3])})"
        )
    return Int8Decoder(config, state)


def convert_gguf(path: Path, calibration: Sequence[int]) -> tuple[DecoderConfig, dict[str, Any]]:
    """The GGUF file at ``path`` read by transformers (dequantized), smoothed with the
    activations of the ``calibration`` tokens and packed in int8."""
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
    model.eval()
    return pack_model(model, smooth_model(model, calibration))


def load_model(path: Path, cache: Path, calibration: Sequence[int]) -> Int8Decoder:
    """The int8 decoder of ``path``: from the cache, else converted once and cached."""
    folder = cache_folder(path, cache)
    if (folder / "model.safetensors").is_file():
        decoder = load_converted(folder)
    else:
        config, state = convert_gguf(path, calibration)
        decoder = Int8Decoder(config, state)
        try:
            save_converted(config, state, folder)
        except OSError:  # a read-only cache still scores (converting each time)
            return decoder
    decoder.kernels = scorer_kernels.load(folder, decoder.layers[0].down.wq.shape[1])
    return decoder


# -- scoring ------------------------------------------------------------------------------------


class TorchScorer:
    """Scores batches of prompts (token ids) with an ``Int8Decoder``, keeping the prefix the
    prompts share in a KV cache between batches. Same interface as llama.cpp's batch scorer in
    ``llamacpp.py``: ``score(shared, prompts, exact)`` and ``free()``."""

    name = "torch-int8"

    def __init__(self, decoder: Int8Decoder, n_ctx: int, max_seqs: int, n_batch: int) -> None:
        self.decoder = decoder
        self.n_ctx, self.max_seqs, self.n_batch = n_ctx, max_seqs, n_batch
        self.cache = KVCache()
        self.held: list[int] = []  # the tokens the cache holds

    def free(self) -> None:
        self.cache.crop(0)
        self.held = []

    def _hold(self, prefix: list[int]) -> None:
        """Make the cache hold exactly ``prefix``, reusing what it already holds."""
        from tuneloop.llm.providers.llamacpp import _common_prefix

        keep = _common_prefix(self.held, prefix)
        if keep < len(self.held):
            self.cache.crop(keep)
            self.held = self.held[:keep]
        for start in range(keep, len(prefix), self.n_batch):
            chunk = prefix[start : start + self.n_batch]
            positions = list(range(start, start + len(chunk)))
            self.decoder.forward(chunk, positions, [(0, len(chunk))], self.cache, keep=True)
            self.held = prefix[: start + len(chunk)]

    def score(
        self, shared: int, prompts: Sequence[Sequence[int]], exact: Sequence[int] = ()
    ) -> list[np.ndarray]:
        """The next-token log-probabilities after each prompt; the first ``shared`` tokens are
        the same in every prompt. Those of the ``exact`` tokens come from float32 activations
        (see ``Int8Decoder.log_probs``)."""
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
                hidden = self.decoder.forward(tokens, positions, spans, self.cache)
                last = hidden[[end - 1 for _, end in spans]]
                return list(self.decoder.log_probs(last, exact).numpy())
            except (RuntimeError, ValueError, IndexError) as exc:
                self.free()
                raise ProviderError(f"torch scorer failed on a batch of records: {exc}") from exc
