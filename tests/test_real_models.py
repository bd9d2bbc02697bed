"""Real packaged models: llama.cpp in process, and its OpenAI-compatible server as a real HTTP
endpoint for the ``openai`` provider. Slow tier (CI runs it); needs llama-cpp-python."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLI
from tuneloop.llm.engine import Engine
from tuneloop.llm.types import GenParams, Message
from tuneloop.store.db import Store

pytestmark = [pytest.mark.slow, pytest.mark.network_pip]
pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by `make test` (extra llm)")

SMOL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smol_path() -> Path:
    from tuneloop.llm.registry import get_model, pull

    return pull(get_model(SMOL))


def test_llamacpp_scores_every_label(store: Store, smol_path: Path) -> None:
    from tuneloop.llm.providers.llamacpp import LlamaCppProvider

    provider = LlamaCppProvider(SMOL, smol_path, context_length=2048)
    engine = Engine(store, provider, family="smollm")
    msgs = [
        {
            "role": "user",
            "content": "Is this review positive or negative? Answer with "
            "exactly one of: positive, negative.\n\nText:\nA wonderful, moving film.",
        }
    ]
    result = engine.classify(msgs, ["positive", "negative"])
    assert result.label in {"positive", "negative"} and result.method == "scores"
    assert result.confidence is not None and 0.5 <= result.confidence <= 1.0
    # scoring twice (prefix reused from the KV cache) gives the same numbers
    again = provider.score_choices(msgs, ["positive", "negative"])
    first = provider.score_choices(msgs, ["positive", "negative"])
    assert again is not None and first is not None
    assert again.logprobs == pytest.approx(first.logprobs, abs=1e-3)
    text = engine.chat(msgs, GenParams(max_tokens=8)).completion
    assert text is not None and text.tokens_out is not None and text.tokens_out > 0


REVIEWS = [
    "A wonderful, moving film.",
    "Dull, long and badly acted.",
    "The best comedy of the year, I laughed throughout.",
    "A waste of two hours.",
    "Gorgeous photography and a great cast.",
    "I walked out halfway through.",
    "Charming and clever.",
    "Boring.",
    "An instant classic.",
    "Terrible script, worse direction.",
]
CHOICES = ["positive", "negative"]


def _review(text: str) -> list[Message]:
    return [
        {
            "role": "user",
            "content": "Is this review positive or negative? Answer with exactly one of: "
            f"positive, negative.\n\nText:\n{text}",
        }
    ]


def test_llamacpp_scores_many_records_together(store: Store, smol_path: Path) -> None:
    from tuneloop.llm.providers.llamacpp import LlamaCppProvider

    provider = LlamaCppProvider(
        SMOL, smol_path, context_length=2048, batch_records=4, scorer="llamacpp"
    )
    reviews, choices, msgs = REVIEWS, CHOICES, _review
    items: list[tuple[Sequence[Message], Sequence[str]]] = [(msgs(t), choices) for t in reviews]
    items.insert(3, (msgs("So-so."), ["very good", "very bad"]))  # one first token: not batched
    batched = provider.score_choices_batch(items)
    assert batched is not None and batched[3] is None
    scored = [b for b in batched if b is not None]
    assert [b.data["batched"] for b in scored] == [4] * 8 + [2] * 2  # groups of at most 4
    for item, got in zip(items, batched, strict=True):
        if got is None:
            continue
        provider.llm.reset()
        alone = provider.score_choices(*item)
        assert alone is not None and got.tokens_in == alone.tokens_in
        # other matrix kernels for other batch shapes: close, not bit-identical
        assert got.logprobs == pytest.approx(alone.logprobs, abs=0.5)
        best = max(got.logprobs, key=lambda c: got.logprobs[c])
        if abs(alone.logprobs["positive"] - alone.logprobs["negative"]) > 1.0:
            assert best == max(alone.logprobs, key=lambda c: alone.logprobs[c])
    # through the engine: the odd item goes alone (whole answers scored), the rest together
    results = Engine(store, provider, family="smollm").classify_many(items)
    assert [r.method for r in results] == ["scores"] * len(items)
    assert results[3].label in {"very good", "very bad"}
    assert {r.label for i, r in enumerate(results) if i != 3} <= set(choices)
    provider.close()
    assert provider._batcher is None
    # a decode call holds at most batch_tokens of the records' own tokens: smaller groups
    small = LlamaCppProvider(
        SMOL, smol_path, context_length=2048, batch_tokens=48, scorer="llamacpp"
    )
    polar = [(msgs(t), choices) for t in reviews]
    tight = small.score_choices_batch(polar)
    assert tight is not None and all(t is not None for t in tight)
    sizes = [t.data["batched"] for t in tight if t is not None]
    assert max(sizes) < len(polar) and sum(1 / n for n in sizes) > 1  # more than one group
    for got, want in zip(tight, batched[:3] + batched[4:], strict=True):
        assert got is not None and want is not None
        assert got.logprobs == pytest.approx(want.logprobs, abs=0.5)
    small.close()


def test_torch_scorer_on_the_packaged_model(
    store: Store, smol_path: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The 8-bit torch scorer converts the GGUF file once, caches it, and scores batches close
    to llama.cpp's own evaluation of the file."""
    from tuneloop.llm.providers import torch_scorer
    from tuneloop.llm.providers.llamacpp import LlamaCppProvider
    from tuneloop.llm.types import ProviderError

    def provider(scorer: str = "torch") -> LlamaCppProvider:
        return LlamaCppProvider(
            SMOL,
            smol_path,
            context_length=2048,
            batch_records=4,
            scorer=scorer,
            scorer_cache=tmp_path,
        )

    torch_side = provider()
    items: list[tuple[Sequence[Message], Sequence[str]]] = [(_review(t), CHOICES) for t in REVIEWS]
    batched = torch_side.score_choices_batch(items)
    err = capfd.readouterr().err
    assert "converting SmolLM2" in err
    assert (torch_scorer.cache_folder(smol_path, tmp_path) / "model.safetensors").is_file()
    # the fused MLP kernel is compiled once for this machine and used (CI has a compiler)
    assert "compiling the label scorer's kernels" in err
    assert torch_side._batcher.decoder.kernels is not None
    assert batched is not None and all(b is not None for b in batched)
    scored = [b for b in batched if b is not None]
    assert [b.data["batched"] for b in scored] == [4] * 8 + [2] * 2
    assert {b.data["scorer"] for b in scored} == {"torch-int8"}
    diffs = []
    for item, got in zip(items, scored, strict=True):
        torch_side.llm.reset()
        alone = torch_side.score_choices(*item)  # llama.cpp, one record
        assert alone is not None and got.tokens_in == alone.tokens_in
        diffs += [abs(got.logprobs[c] - alone.logprobs[c]) for c in CHOICES]
        margin = alone.logprobs["positive"] - alone.logprobs["negative"]
        if abs(margin) > 1.0:
            assert (got.logprobs["positive"] > got.logprobs["negative"]) == (margin > 0)
    # 8-bit weights and activations against llama.cpp's 4-bit file with 8-bit activations:
    # both are a few tenths of a nat from the file's float32 weights on this 135M model
    assert max(diffs) < 1.0 and sum(diffs) / len(diffs) < 0.35
    results = Engine(store, torch_side, family="smollm").classify_many(items)
    assert [r.label for r in results] == [
        max(b.logprobs, key=lambda c: b.logprobs[c]) for b in scored
    ]
    torch_side.close()
    # a second process finds the converted weights: no conversion, the same scores
    cached = provider()
    again = cached.score_choices_batch(items)
    err = capfd.readouterr().err
    assert "converting" not in err and "compiling" not in err
    assert cached._batcher.decoder.kernels is not None
    assert again is not None
    for a, b in zip(again, batched, strict=True):
        assert a is not None and b is not None
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-6)
    cached.close()
    # an architecture the torch scorer does not run: auto uses llama.cpp, torch says why
    import unittest.mock

    with unittest.mock.patch.object(torch_scorer, "ARCHITECTURES", ("qwen2",)):
        auto = provider("auto")
        fallback = auto.score_choices_batch(items[:2])
        assert fallback is not None and fallback[0] is not None
        assert fallback[0].data["scorer"] == "llama.cpp"
        auto.close()
        strict = provider("torch")
        with pytest.raises(ProviderError, match="architecture 'llama'"):
            strict.score_choices_batch(items[:2])
        strict.close()
    # too little memory for the 8-bit copy: auto says so and uses llama.cpp
    with unittest.mock.patch.object(torch_scorer, "available_memory", lambda: 2**20):
        short = provider("auto")
        scores = short.score_choices_batch(items[:2])
        assert scores is not None and scores[0] is not None
        assert scores[0].data["scorer"] == "llama.cpp"
        assert "needs about 0.4 GB of memory and 0.0 GB is available" in capfd.readouterr().err
        short.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(smol_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("uvicorn", reason="llama-cpp-python[server] extras")
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuneloop.llm.providers.llamacpp_runtime",  # llama_cpp.server, loadable here
                "--model",
                str(smol_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--model_alias",
                SMOL,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"server not up in 120 s: {log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_openai_provider_against_real_server(store: Store, server: str) -> None:
    from tuneloop.llm.providers.openai_compat import OpenAICompatProvider

    with OpenAICompatProvider(SMOL, server, max_retries=1) as provider:
        engine = Engine(store, provider, family="smollm")
        out = engine.chat([{"role": "user", "content": "Say hello."}], GenParams(max_tokens=8))
        assert out.completion is not None and out.completion.text
        assert out.completion.tokens_in and out.completion.tokens_out
        label = engine.classify(
            [{"role": "user", "content": "Answer with exactly one of: yes, no.\n\nIs water wet?"}],
            ["yes", "no"],
        )
        assert label.status in {"accepted", "needs_review"}
        if label.status == "accepted":
            assert label.label in {"yes", "no"}


def test_annotate_through_real_server(
    cli: CLI, tmp_path: Path, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server)
    path = tmp_path / "r.jsonl"
    path.write_text(
        "".join(
            json.dumps({"text": t}) + "\n"
            for t in ["Loved it.", "Hated it.", "Best film of the year.", "A dull mess."]
        )
    )
    assert (
        cli(
            "data", "import", str(path), "--task", "classification", "--labels", "positive,negative"
        )[0]
        == 0
    )
    code, out, err = cli("annotate", "--dataset", "r", "--model", f"openai:{SMOL}")
    assert code == 0, err
    assert "4 in the job" in out
    code, out, _ = cli("calls", "stats")
    assert SMOL in out
