"""The torch scorer on tiny random models built in-process: packed batches give the scores of
one plain forward pass per prompt, the KV cache keeps and trims the shared prefix, smoothing
keeps the function, 8-bit layers stay close, and converted weights survive the disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tuneloop.llm.providers import torch_scorer as ts  # noqa: E402

pytestmark = pytest.mark.skipif(not ts.int8_available(), reason="no int8 matmul on this CPU")

VOCAB = 96


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
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval()


def plain(model: Any, prompt: list[int]) -> np.ndarray:
    """Log-probabilities after ``prompt`` from one ordinary forward pass."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].double()
    return np.asarray(torch.log_softmax(logits, dim=-1))


PREFIX = [5, 17, 33, 2, 8, 40, 41, 9]
PROMPTS = [PREFIX + rest for rest in ([11, 12, 13], [70], [21, 22, 23, 24, 25, 26], [3, 4])]


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_packed_batches_match_one_forward_per_prompt(kind: str) -> None:
    model = tiny(kind)
    want = [plain(model, p) for p in PROMPTS]
    scorer = ts.TorchScorer(model, n_ctx=256, max_seqs=8, n_batch=5)  # prefix in 2 chunks
    got = scorer.score(len(PREFIX), PROMPTS)
    assert scorer.held == PREFIX and scorer.cache.get_seq_length() == len(PREFIX)
    for g, w in zip(got, want, strict=True):
        assert g.shape == (VOCAB,)
        np.testing.assert_allclose(g, w, atol=1e-4)
    # the next batch shares part of the prefix: the cache is cut back, not rebuilt wrongly
    other = [[5, 17, 33, 60, 61, 62], [5, 17, 33, 60, 61, 63, 64]]
    again = scorer.score(5, other)
    assert scorer.held == other[0][:5]
    for g, p in zip(again, other, strict=True):
        np.testing.assert_allclose(g, plain(model, p), atol=1e-4)
    # nothing shared at all, and a prompt of one token
    fresh = scorer.score(0, [[7], [8, 9]])
    np.testing.assert_allclose(fresh[0], plain(model, [7]), atol=1e-4)
    np.testing.assert_allclose(fresh[1], plain(model, [8, 9]), atol=1e-4)
    scorer.free()
    assert scorer.held == [] and scorer.cache.get_seq_length() == 0


def test_int8_linear_is_close_and_outliers_go_through_float() -> None:
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 48, bias=True)
    x = torch.randn(10, 64)
    x[:, 3] *= 200  # one channel of large activations, as real models have
    want = linear(x).detach()

    def error(threshold: float) -> float:
        old = ts.OUTLIER
        ts.OUTLIER = threshold
        try:
            got = ts.Int8Linear.from_linear(linear, ts._Quantizer())(x)
        finally:
            ts.OUTLIER = old
        return float((got - want).norm() / want.norm())

    with_outliers, without = error(10.0), error(1e9)
    assert with_outliers < 0.01
    assert without > 3 * with_outliers  # the outlier channel ruins every token's scale


def test_quantizer_is_shared_by_layers_reading_one_input() -> None:
    model = tiny("qwen2")
    ts.quantize_model(model)
    attn = model.model.layers[0].self_attn
    assert isinstance(attn.q_proj, ts.Int8Linear)
    assert attn.q_proj.quantizer is attn.k_proj.quantizer is attn.v_proj.quantizer
    mlp = model.model.layers[0].mlp
    assert mlp.gate_proj.quantizer is mlp.up_proj.quantizer
    assert mlp.down_proj.quantizer is not mlp.up_proj.quantizer
    assert attn.o_proj.quantizer is not attn.q_proj.quantizer
    assert isinstance(model.lm_head, torch.nn.Linear)  # the head stays in float32


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_smoothing_keeps_the_function_and_int8_stays_close(kind: str) -> None:
    model = tiny(kind)
    want = [plain(model, p) for p in PROMPTS]
    ts.smooth_model(model, list(range(1, 40)))
    for p, w in zip(PROMPTS, want, strict=True):
        np.testing.assert_allclose(plain(model, p), w, atol=1e-4)
    ts.quantize_model(model)
    got = ts.TorchScorer(model, 256, 8, 64).score(len(PREFIX), PROMPTS)
    for g, w in zip(got, want, strict=True):
        # a few percent of the log-probabilities' spread (about 2.4 nats on these models)
        assert np.abs(g - w).mean() < 0.1 * w.std()
        assert np.corrcoef(g, w)[0, 1] > 0.99


@pytest.mark.parametrize("tied", [True, False])
def test_converted_weights_round_trip_through_the_cache(tmp_path: Path, tied: bool) -> None:
    model = tiny("llama", tied=tied)
    ts.smooth_model(model, list(range(1, 40)))
    ts.quantize_model(model)
    folder = tmp_path / "scorers" / "tiny"
    ts.save_converted(model, folder)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp left
    loaded = ts.load_converted(folder)
    assert isinstance(loaded.model.layers[1].mlp.down_proj, ts.Int8Linear)
    assert (loaded.lm_head.weight is loaded.get_input_embeddings().weight) == tied
    a = ts.TorchScorer(model, 256, 8, 64).score(len(PREFIX), PROMPTS)
    b = ts.TorchScorer(loaded, 256, 8, 64).score(len(PREFIX), PROMPTS)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)
    # saving again where a copy already is keeps that copy and leaves nothing behind
    ts.save_converted(model, folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny"]


def test_cache_folder_changes_with_the_file(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"one")
    first = ts.cache_folder(gguf, tmp_path)
    assert first.parent == tmp_path / "scorers" and first.name.startswith("m-")
    assert ts.cache_folder(gguf, tmp_path) == first
    gguf.write_bytes(b"other")
    assert ts.cache_folder(gguf, tmp_path) != first


def test_a_failing_batch_leaves_a_clean_cache() -> None:
    model = tiny("qwen2")
    scorer = ts.TorchScorer(model, 256, 8, 64)
    scorer.score(len(PREFIX), PROMPTS)
    from tuneloop.llm.types import ProviderError

    with pytest.raises(ProviderError, match="torch scorer failed"):
        scorer.score(len(PREFIX), [[*PREFIX, VOCAB + 5]])  # a token outside the vocabulary
    assert scorer.held == [] and scorer.cache.get_seq_length() == 0
    np.testing.assert_allclose(
        scorer.score(len(PREFIX), PROMPTS[:1])[0], plain(model, PROMPTS[0]), atol=1e-4
    )


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


def test_converted_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from tuneloop.llm.types import ProviderError

    model = tiny("qwen2")
    ts.quantize_model(model)
    folder = tmp_path / "scorers" / "tiny"
    ts.save_converted(model, folder)
    state = load_file(str(folder / "model.safetensors"))
    del state["model.layers.1.mlp.down_proj.ws"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ProviderError, match=r"do not fit the model \(model.layers.1.mlp.down"):
        ts.load_converted(folder)
    scorer = ts.TorchScorer(model, 256, 8, 64)
    with pytest.raises(ValueError, match="a token after the shared prefix"):
        scorer.score(3, [[1, 2, 3]])


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
    assert ts.memory_needed(gguf, converted=True) == 3500
    assert ts.memory_needed(gguf, converted=False) == 7000
