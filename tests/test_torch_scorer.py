"""The torch scorer on tiny random models built in-process: the int8 decoder computes what
transformers' implementation computes, packed batches give the scores of one prompt at a time,
the KV cache keeps and trims the shared prefix, smoothing keeps the function, 8-bit layers
stay close, and converted weights survive the disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tests.tiny import tiny_model  # noqa: E402
from tuneloop.llm.providers import scorer_kernels as sk  # noqa: E402
from tuneloop.llm.providers import torch_scorer as ts  # noqa: E402
from tuneloop.llm.types import ProviderError  # noqa: E402

pytestmark = pytest.mark.skipif(not ts.int8_available(), reason="no int8 matmul on this CPU")

VOCAB = 96
CALIBRATION = list(range(1, 40))


def tiny(kind: str, seed: int = 0, tied: bool = True) -> Any:
    torch.manual_seed(seed)
    common: dict[str, Any] = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "tie_word_embeddings": tied,
    }
    config = (
        transformers.Qwen2Config(**common)
        if kind == "qwen2"
        else transformers.LlamaConfig(**common)
    )
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # larger weights than the initialiser's, so scores differ clearly
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
            elif name.endswith("bias"):
                p.normal_(0, 0.5)
    return model.eval()


def converted(kind: str, tied: bool = True) -> tuple[Any, ts.Int8Decoder]:
    """A tiny model smoothed (the float model still computes the same function) and its
    int8 decoder."""
    model = tiny(kind, tied=tied)
    config, state = ts.pack_model(model, ts.smooth_model(model, CALIBRATION))
    return model, ts.Int8Decoder(config, state)


def plain(model: Any, prompt: list[int]) -> np.ndarray:
    """Log-probabilities after ``prompt`` from one ordinary transformers forward pass."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].double()
    return np.asarray(torch.log_softmax(logits, dim=-1))


def fake_quantized(model: Any, decoder: ts.Int8Decoder) -> Any:
    """``model`` with every decoder linear layer holding the decoder's int8 weights,
    dequantized: what the decoder computes when no activation is quantized."""
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            ours, attn = decoder.layers[i], layer.self_attn
            for fused, parts in (
                (ours.qkv, [attn.q_proj, attn.k_proj, attn.v_proj]),
                (ours.o, [attn.o_proj]),
                (ours.gate_up, [layer.mlp.gate_proj, layer.mlp.up_proj]),
                (ours.down, [layer.mlp.down_proj]),
            ):
                weight = fused.wq.float() * fused.ws[:, None]
                start = 0
                for part in parts:
                    part.weight.copy_(weight[start : start + part.out_features])
                    start += part.out_features
    return model


PREFIX = [5, 17, 33, 2, 8, 40, 41, 9]
PROMPTS = [PREFIX + rest for rest in ([11, 12, 13], [70], [21, 22, 23, 24, 25, 26], [3, 4])]
ALL = list(range(VOCAB))


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_the_decoder_computes_what_transformers_computes(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, decoder = converted(kind)
    reference = fake_quantized(model, decoder)
    monkeypatch.setattr(ts, "OUTLIER", 0.0)  # every channel in float32: no activation rounding
    monkeypatch.setattr(ts, "CHUNK", 3)  # slices of 3 tokens: the slicing is exercised too
    for prompt in PROMPTS:
        with torch.inference_mode():
            want = reference.model(input_ids=torch.tensor([prompt])).last_hidden_state[0]
            x = decoder.forward(prompt, list(range(len(prompt))), [(0, len(prompt))], ts.KVCache())
            got = ts.rms_norm(x, decoder.norm, decoder.config.eps)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4, rtol=1e-4)
        # the labels' tokens get float32 logits; the rest only set the normaliser
        exact = [4, 50, 90]
        with torch.inference_mode():
            lp = decoder.log_probs(x[-1:], exact)[0].numpy()
        full = plain(reference, prompt)
        assert np.abs(lp[exact] - full[exact]).max() < 0.05
        assert np.corrcoef(lp, full)[0, 1] > 0.99


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_packed_batches_match_one_prompt_at_a_time(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no outlier channels: each token is quantized on its own, so what a record scores does
    # not depend on the others in its batch, and packing must not change it
    monkeypatch.setattr(ts, "OUTLIER", 1e9)
    _, decoder = converted(kind)

    def alone(prompt: list[int]) -> np.ndarray:
        single = ts.TorchScorer(decoder, n_ctx=256, max_seqs=1, n_batch=64)
        return single.score(len(prompt) - 1, [prompt], ALL)[0]

    want = [alone(p) for p in PROMPTS]
    scorer = ts.TorchScorer(decoder, n_ctx=256, max_seqs=8, n_batch=5)  # prefix in 2 chunks
    got = scorer.score(len(PREFIX), PROMPTS, ALL)
    assert scorer.held == PREFIX and scorer.cache.length == len(PREFIX)
    for g, w in zip(got, want, strict=True):
        assert g.shape == (VOCAB,)
        np.testing.assert_allclose(g, w, atol=1e-4)
    # the next batch shares part of the prefix: the cache is cut back, not rebuilt wrongly
    other = [[5, 17, 33, 60, 61, 62], [5, 17, 33, 60, 61, 63, 64]]
    again = scorer.score(5, other, ALL)
    assert scorer.held == other[0][:5] and scorer.cache.length == 5
    for g, p in zip(again, other, strict=True):
        np.testing.assert_allclose(g, alone(p), atol=1e-4)
    # nothing shared at all, and a prompt of one token
    fresh = scorer.score(0, [[7], [8, 9]], ALL)
    assert scorer.cache.length == 0
    np.testing.assert_allclose(fresh[0], alone([7]), atol=1e-4)
    np.testing.assert_allclose(fresh[1], alone([8, 9]), atol=1e-4)
    scorer.free()
    assert scorer.held == [] and scorer.cache.length == 0


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_smoothing_keeps_the_function_and_int8_stays_close(kind: str) -> None:
    model = tiny(kind)
    want = [plain(model, p) for p in PROMPTS]
    head_scale = ts.smooth_model(model, CALIBRATION)
    assert head_scale.shape == (64,) and bool((head_scale > 0).all())
    for p, w in zip(PROMPTS, want, strict=True):
        np.testing.assert_allclose(plain(model, p), w, atol=1e-4)
    decoder = ts.Int8Decoder(*ts.pack_model(model, head_scale))
    exact = [1, 30, 77]
    got = ts.TorchScorer(decoder, 256, 8, 64).score(len(PREFIX), PROMPTS, exact)
    for g, w in zip(got, want, strict=True):
        # a few percent of the log-probabilities' spread (about 2.4 nats on these models)
        assert np.abs(g - w).mean() < 0.1 * w.std()
        assert np.corrcoef(g, w)[0, 1] > 0.99


def test_int8_linear_is_close_and_outliers_go_through_float() -> None:
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 48, bias=True)
    x = torch.randn(10, 64)
    x[:, 3] *= 200  # one channel of large activations, as real models have
    want = linear(x).detach()
    layer = ts.Linear8(*ts.quantize_weight(linear.weight), linear.bias.detach())

    def error(split: bool) -> float:
        return float((layer(ts.quantize_tokens(x, split)) - want).norm() / want.norm())

    with_outliers, without = error(True), error(False)
    assert with_outliers < 0.01
    assert without > 3 * with_outliers  # the outlier channel ruins every token's scale
    assert list(layer._columns) == [3]  # its float32 weights are kept for the next batch
    assert error(True) == with_outliers


def test_pack_model_fuses_the_projections() -> None:
    model = tiny("qwen2")
    config, state = ts.pack_model(model, torch.ones(64))
    assert config.architecture == "qwen2" and config.tied and config.head_dim == 16
    assert state["layers.0.qkv.wq"].shape == (64 + 2 * 32, 64)  # q, then k and v (2 heads)
    assert state["layers.0.qkv.wq"].dtype == torch.int8
    assert state["layers.0.qkv.bias"].shape == (128,)  # Qwen2 has biases on q, k and v
    assert state["layers.1.gate_up.wq"].shape == (256, 64)
    assert "layers.0.o.bias" not in state
    assert set(config.names()) <= set(state)
    llama, _ = ts.pack_model(tiny("llama", tied=False), torch.ones(64))
    assert llama.architecture == "llama" and not llama.tied


@pytest.mark.parametrize("tied", [True, False])
def test_converted_weights_round_trip_through_the_cache(tmp_path: Path, tied: bool) -> None:
    model = tiny("llama", tied=tied)
    config, state = ts.pack_model(model, ts.smooth_model(model, CALIBRATION))
    folder = tmp_path / "scorers" / "tiny"
    ts.save_converted(config, state, folder)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left
    loaded = ts.load_converted(folder)
    assert loaded.config == config
    a = ts.TorchScorer(ts.Int8Decoder(config, state), 256, 8, 64).score(len(PREFIX), PROMPTS, [3])
    b = ts.TorchScorer(loaded, 256, 8, 64).score(len(PREFIX), PROMPTS, [3])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)
    # saving again where a copy already is keeps that copy and leaves nothing behind
    ts.save_converted(config, state, folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny"]


def test_converted_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = tiny("qwen2")
    config, state = ts.pack_model(model, torch.ones(64))
    folder = tmp_path / "scorers" / "tiny"
    ts.save_converted(config, state, folder)
    state = load_file(str(folder / "model.safetensors"))
    del state["layers.1.down.ws"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ProviderError, match=r"do not fit the model \(layers.1.down.ws\)"):
        ts.load_converted(folder)
    # a copy written by another version of the format is not read as this one
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, "format": 1}))
    with pytest.raises(ProviderError, match=r"cannot be read \(written by another version"):
        ts.load_converted(folder)


def test_a_failing_batch_leaves_a_clean_cache() -> None:
    _, decoder = converted("qwen2")
    scorer = ts.TorchScorer(decoder, 256, 8, 64)
    want = scorer.score(len(PREFIX), PROMPTS[:1], [3])[0]
    with pytest.raises(ProviderError, match="torch scorer failed"):
        scorer.score(len(PREFIX), [[*PREFIX, VOCAB + 5]])  # a token outside the vocabulary
    assert scorer.held == [] and scorer.cache.length == 0
    np.testing.assert_allclose(scorer.score(len(PREFIX), PROMPTS[:1], [3])[0], want, atol=1e-6)
    with pytest.raises(ValueError, match="a token after the shared prefix"):
        scorer.score(3, [[1, 2, 3]])


def test_architectures_the_decoder_does_not_run_are_refused() -> None:
    model = tiny("qwen2")
    model.config.use_sliding_window = True
    with pytest.raises(ValueError, match="sliding-window"):
        ts.decoder_config(model)
    gemma = tiny_model("gemma3_text", VOCAB)
    with pytest.raises(ValueError, match="no int8 decoder for Gemma3TextConfig"):
        ts.decoder_config(gemma)


def test_cache_folder_changes_with_the_file(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"one")
    first = ts.cache_folder(gguf, tmp_path)
    assert first.parent == tmp_path / "scorers" and first.name.startswith("m-")
    assert ts.cache_folder(gguf, tmp_path) == first
    gguf.write_bytes(b"other")
    assert ts.cache_folder(gguf, tmp_path) != first


def test_tuneloop_scorer_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneloop.errors import UserError
    from tuneloop.llm import factory

    monkeypatch.delenv("TUNELOOP_SCORER", raising=False)
    assert factory._scorer() == "auto"
    monkeypatch.setenv("TUNELOOP_SCORER", " LlamaCpp ")
    assert factory._scorer() == "llamacpp"
    monkeypatch.setenv("TUNELOOP_SCORER", "gpu")
    with pytest.raises(UserError, match="TUNELOOP_SCORER='gpu': choose one of auto, torch"):
        factory._scorer()


def test_fast_int8_reads_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ts, "_cpu_flags", lambda: {"avx2", "avx512_vnni"})
    assert ts.fast_int8()
    monkeypatch.setattr(ts, "_cpu_flags", lambda: {"avx_vnni"})
    assert ts.fast_int8()
    monkeypatch.setattr(ts, "_cpu_flags", lambda: {"avx2", "fma"})
    assert not ts.fast_int8()
    monkeypatch.undo()
    assert isinstance(ts._cpu_flags(), set)


def test_memory_estimates(tmp_path: Path) -> None:
    free = ts.available_memory()
    assert free is None or free > 0
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x" * 1000)
    assert ts.memory_needed(gguf, converted=True) == 4500
    assert ts.memory_needed(gguf, converted=False) == 12000


# -- the fused MLP kernel (scorer_kernels) ----------------------------------------------------


@pytest.fixture(scope="module")
def mlp_kernel(tmp_path_factory: pytest.TempPathFactory) -> sk.Kernels:
    """The fused kernel compiled for the tiny models' intermediate size (128)."""
    folder = tmp_path_factory.mktemp("kernels")
    kernels = sk.load(folder, 128)
    assert kernels is not None, (sk.kernels_folder(folder, 128) / sk.FAILED).read_text()
    return kernels


def eager_middle(product: torch.Tensor, scale: torch.Tensor, ws: torch.Tensor) -> Any:
    g = product.float() * scale * ws
    inner = torch.nn.functional.silu(g[:, :128]) * g[:, 128:]
    return ts.quantize_tokens(inner, split=False), inner.abs().amax(dim=0)


def test_the_fused_mlp_kernel_computes_what_the_eager_code_computes(
    mlp_kernel: sk.Kernels,
) -> None:
    torch.manual_seed(3)
    for tokens in (2, 7, 300):  # one library for every number of tokens
        product = torch.randint(-20000, 20000, (tokens, 256), dtype=torch.int32)
        scale, ws = torch.rand(tokens, 1) * 1e-3, torch.rand(256) * 1e-2
        q, s, size = mlp_kernel.mlp_middle(product, scale, ws)
        want, want_size = eager_middle(product, scale, ws)
        assert q.dtype == torch.int8 and q.shape == (tokens, 128)
        torch.testing.assert_close(s, want.scale)
        torch.testing.assert_close(size, want_size)
        # SiLU's exp may differ in the last bit: a value on a rounding boundary moves one step
        diff = (q.int() - want.q.int()).abs()
        assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_the_decoder_scores_the_same_with_the_fused_kernel(
    kind: str, mlp_kernel: sk.Kernels, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, decoder = converted(kind)
    calls = []
    fused = mlp_kernel.mlp_middle

    def counted(*args: torch.Tensor) -> Any:
        calls.append(args[0].shape[0])
        return fused(*args)

    monkeypatch.setattr(mlp_kernel, "mlp_middle", counted)
    for outlier in (1e9, ts.OUTLIER):  # no outlier channel: always the kernel; else mixed
        monkeypatch.setattr(ts, "OUTLIER", outlier)
        decoder.kernels = None
        want = ts.TorchScorer(decoder, 256, 8, 64).score(len(PREFIX), PROMPTS, [3, 9])
        decoder.kernels = mlp_kernel
        got = ts.TorchScorer(decoder, 256, 8, 64).score(len(PREFIX), PROMPTS, [3, 9])
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=0.02)
            assert np.corrcoef(g, w)[0, 1] > 0.999
    assert calls  # the kernel ran (the one-token prompt's slices ran the eager code)


def test_kernels_that_cannot_be_built_leave_the_eager_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tries = []

    def broken(folder: Path, inner: int) -> Path:
        tries.append(inner)
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(sk, "build", broken)
    assert sk.load(tmp_path, 64) is None
    failed = sk.kernels_folder(tmp_path, 64) / sk.FAILED
    assert "no C++ compiler" in failed.read_text()
    assert sk.load(tmp_path, 64) is None and tries == [64]  # written down, not tried again
    monkeypatch.setenv("TUNELOOP_SCORER_KERNELS", "0")
    assert sk.load(tmp_path, 32) is None and tries == [64]  # turned off: nothing is built
    assert sk.kernels_folder(tmp_path, 64) != sk.kernels_folder(tmp_path, 32)
