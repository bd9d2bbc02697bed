"""The engine (cache, log, constrained labels) and bulk annotation, on the scripted provider."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import CLI
from tuneloop.llm.engine import Engine, parse_choice
from tuneloop.llm.providers.fake import FakeProvider
from tuneloop.llm.types import Message
from tuneloop.store.db import Store, open_store
from tuneloop.store.models import Label, LLMCall, Record, Run

MSG: list[Message] = [
    {
        "role": "user",
        "content": "Classify. Answer with exactly one of: pos, neg.\n\nText:\nclearly pos",
    }
]


def n_calls(store: Store) -> int:
    with store.transaction() as s:
        return s.scalar(select(func.count()).select_from(LLMCall)) or 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pos", "pos"),
        ("  NEG. ", "neg"),
        ("The answer is: pos", "pos"),
        ("pos or neg", None),
        ("positive", None),
        ('"neg"', "neg"),
        ("", None),
    ],
)
def test_parse_choice(text: str, expected: str | None) -> None:
    assert parse_choice(text, ["pos", "neg"]) == expected


def test_classify_by_scores_is_cached(store: Store) -> None:
    fake = FakeProvider()
    engine = Engine(store, fake, family="fake")
    first = engine.classify(MSG, ["pos", "neg"])
    assert (first.label, first.status, first.method, first.cached) == (
        "pos",
        "accepted",
        "scores",
        False,
    )
    assert first.confidence is not None and 0.5 < first.confidence < 1.0
    assert first.margin is not None and first.margin > 0
    again = engine.classify(MSG, ["pos", "neg"])
    assert (again.label, again.cached, again.confidence) == ("pos", True, first.confidence)
    assert fake.calls == 1 and n_calls(store) == 1
    Engine(store, fake, family="fake", use_cache=False).classify(MSG, ["pos", "neg"])
    assert fake.calls == 2 and n_calls(store) == 2
    with store.transaction() as s:
        call = s.scalars(select(LLMCall)).first()
        assert call is not None
        assert call.params["op"] == "score" and call.family == "fake"
        assert set(call.output_data["logprobs"]) == {"pos", "neg"}


def _msg(text: str) -> list[Message]:
    return [
        {"role": "user", "content": f"Classify. Answer with exactly one of: pos, neg.\n\n{text}"}
    ]


def test_classify_many_scores_cache_misses_together(store: Store) -> None:
    fake = FakeProvider(can_batch=True)
    engine = Engine(store, fake, family="fake")
    texts = ["clearly pos", "surely neg", "no idea", "[alone] pos", "a neg one", "meh"]
    items = [(_msg(t), ["pos", "neg"]) for t in texts]
    engine.classify(*items[0])  # already in the cache
    assert fake.calls == 1
    results = engine.classify_many(items)
    # one batch for the five misses; the item the batch left alone scored by itself
    assert fake.batches == [5] and fake.calls == 3
    assert n_calls(store) == 6
    alone = Engine(store, FakeProvider(), family="fake", use_cache=False)
    for result, item in zip(results, items, strict=True):
        single = alone.classify(*item)
        assert (result.label, result.method) == (single.label, "scores")
        assert result.confidence == pytest.approx(single.confidence)
        assert result.margin == pytest.approx(single.margin)
    assert [r.cached for r in results] == [True, False, False, False, False, False]
    with store.transaction() as s:
        logged = s.scalars(select(LLMCall).where(LLMCall.id.in_(results[1].call_ids))).one()
        assert logged.params["op"] == "score" and logged.latency_ms is not None
    # again: everything from the cache, no batch, no call
    again = engine.classify_many(items)
    assert [r.cached for r in again] == [True] * 6 and fake.batches == [5] and fake.calls == 3
    assert [r.label for r in again] == [r.label for r in results]
    # a provider that cannot batch labels the same items one by one
    plain = FakeProvider()
    one_by_one = Engine(store, plain, family="fake", use_cache=False).classify_many(items)
    assert [r.label for r in one_by_one] == [r.label for r in results] and plain.calls == 6


def test_annotate_with_a_batching_provider(cli: CLI, store: Store, tmp_path: Path) -> None:
    from tuneloop.workflows.annotate import AnnotateOptions, annotate

    path = _reviews(tmp_path, 40)
    assert cli("data", "import", str(path), "--task", "classification", "--dedupe", "none")[0] == 0
    fakes: list[FakeProvider] = []

    def make_engine(run_id: int, *, batch: bool = True) -> Engine:
        fakes.append(FakeProvider(can_batch=batch))
        return Engine(store, fakes[-1], family="fake", run_id=run_id, use_cache=False)

    opts = AnnotateOptions("reviews", "fake", splits=["unsplit"], batch_size=16)
    result = annotate(store, opts, make_engine)
    assert result.labelled == 40 and fakes[0].batches == [16, 16, 8]
    with store.transaction() as s:
        got = {lab.record_id: (lab.value, lab.confidence) for lab in s.scalars(select(Label))}
    assert len(got) == 40
    # the same labels and confidences as one record at a time
    opts = AnnotateOptions("reviews", "fake", splits=["unsplit"], batch_size=16, limit=39)
    annotate(store, opts, lambda run_id: make_engine(run_id, batch=False))
    assert fakes[1].batches == [] and fakes[1].calls == 39
    with store.transaction() as s:
        labels = s.scalars(select(Label).where(Label.run_id != result.run_id)).all()
        assert len(labels) == 39
        for lab in labels:
            assert (lab.value, lab.confidence) == pytest.approx(got[lab.record_id])


def test_classify_constrained_then_parsed_then_needs_review(store: Store) -> None:
    constrained = Engine(store, FakeProvider(can_score=False), family="fake")
    assert constrained.classify(MSG, ["pos", "neg"]).method == "constrained"

    answers = iter(["I think it is good", "Positive!", "neg"])

    def script(messages: Sequence[Message]) -> str:
        return next(answers)

    parsed = Engine(
        store,
        FakeProvider("fake:parsed", script=script, can_score=False, can_choose=False),
        family="fake",
    ).classify(MSG, ["pos", "neg"], retries=2)
    assert (parsed.label, parsed.method, len(parsed.call_ids)) == ("neg", "parsed", 3)

    stubborn = FakeProvider(
        "fake:stubborn", script=lambda m: "no idea", can_score=False, can_choose=False
    )
    result = Engine(store, stubborn, family="fake").classify(MSG, ["pos", "neg"], retries=1)
    assert (result.label, result.status, result.raw_output) == (None, "needs_review", "no idea")
    assert stubborn.calls == 2


def _reviews(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "reviews.jsonl"
    words = ["pos", "neg", "meh"]
    with path.open("w") as f:
        for i in range(n):
            f.write(
                json.dumps(
                    {
                        "text": f"review {i} is rather {words[i % 3]} overall",
                        "label": "pos" if i % 2 else "neg",
                    }
                )
                + "\n"
            )
    return path


def test_annotate_labels_split_resumes_and_reuses_cache(
    cli: CLI, db_url: str, tmp_path: Path
) -> None:
    path = _reviews(tmp_path, 60)
    assert (
        cli(
            "data",
            "import",
            str(path),
            "--task",
            "classification",
            "--split",
            "0.5,0.25,0.25",
            "--gold",
            "8",
            "--dedupe",
            "none",
        )[0]
        == 0
    )
    code, out, err = cli("annotate", "--dataset", "reviews", "--model", "fake", "--batch-size", "4")
    assert code == 0, err
    assert "labelled 26 records now, 26 in the job; 0 need review" in out
    store = open_store(db_url)
    with store.transaction() as s:
        labels = s.scalars(select(Label)).all()
        assert len(labels) == 26 and {lab.value for lab in labels} <= {"pos", "neg"}
        assert all(lab.confidence is not None and lab.source == "llm" for lab in labels)
        assert all(lab.llm_call_id is not None for lab in labels)
    calls = n_calls(store)
    # the same command again: nothing left, no new calls
    code, out, _ = cli("annotate", "--dataset", "reviews", "--model", "fake")
    assert "(resumed): labelled 0 records now, 26 in the job" in out
    assert n_calls(store) == calls
    # a new job over train + validation: train answers come from the cache
    code, out, _ = cli(
        "annotate",
        "--dataset",
        "reviews",
        "--model",
        "fake",
        "--split",
        "train",
        "--split",
        "validation",
    )
    assert "labelled 39 records now" in out and "26 answers from the cache" in out
    assert n_calls(store) == calls + 13
    with store.transaction() as s:
        gold_labelled = s.scalar(
            select(func.count())
            .select_from(Label)
            .join(Record, Record.id == Label.record_id)
            .where(Record.split == "gold")
        )
        assert gold_labelled == 0
    code, out, _ = cli("calls", "stats")
    assert "fake" in out
    store.dispose()


def test_annotate_generative_task(cli: CLI, db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(
        "".join(
            json.dumps({"source": f"meeting {i} notes about budgets and hiring"}) + "\n"
            for i in range(5)
        )
    )
    assert cli("data", "import", str(path), "--task", "summarization")[0] == 0
    code, out, err = cli("annotate", "--dataset", "s", "--model", "fake", "--split", "unsplit")
    assert code == 0, err
    assert "labelled 5 records now" in out


@pytest.mark.slow
def test_kill_9_mid_annotation_then_resume(db_url: str, tmp_path: Path) -> None:
    path = _reviews(tmp_path, 240)
    base = [sys.executable, "-m", "tuneloop.cli", "--db", db_url]
    env = {**os.environ, "COLUMNS": "200"}
    subprocess.run(
        [*base, "data", "import", str(path), "--task", "classification", "--dedupe", "none"],
        check=True,
        capture_output=True,
        env=env,
    )
    cmd = [
        *base,
        "annotate",
        "--dataset",
        "reviews",
        "--model",
        "fake",
        "--split",
        "unsplit",
        "--batch-size",
        "8",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, "TUNELOOP_FAKE_DELAY": "0.03"},
    )
    store = open_store(db_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with store.transaction() as s:
            done = s.scalar(select(func.count()).select_from(Label)) or 0
        if done >= 40:
            break
        time.sleep(0.1)
    time.sleep(0.15)  # land inside a batch: some calls made, their labels not yet written
    assert proc.poll() is None, "finished before the kill; slow it down"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with store.transaction() as s:
        labels_before = s.scalar(select(func.count()).select_from(Label)) or 0
        calls_before = s.scalar(select(func.count()).select_from(LLMCall)) or 0
    assert 40 <= labels_before < 240 and calls_before >= labels_before

    done_run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert done_run.returncode == 0, done_run.stderr
    assert "(resumed)" in done_run.stdout and "240 in the job" in done_run.stdout
    with store.transaction() as s:
        per_record = Counter(s.scalars(select(Label.record_id)))
        assert len(per_record) == 240 and set(per_record.values()) == {1}
        calls_after = s.scalar(select(func.count()).select_from(LLMCall)) or 0
        runs = s.scalars(select(Run).where(Run.kind == "annotate")).all()
        assert len(runs) == 1 and runs[0].status == "finished"
    # every answer paid for before the kill was reused: one call per record in all
    assert calls_after == 240
    store.dispose()


def test_failed_calls_are_logged_not_cached(store: Store) -> None:
    from tuneloop.llm.types import ProviderError

    state = {"fail": True}

    def flaky(messages: Sequence[Message]) -> str:
        if state["fail"]:
            raise ProviderError("HTTP 503: overloaded", retryable=True)
        return "pos"

    engine = Engine(
        store,
        FakeProvider("fake:flaky", script=flaky, can_score=False, can_choose=False),
        family="fake",
    )
    with pytest.raises(ProviderError):
        engine.chat(MSG)
    state["fail"] = False
    out = engine.chat(MSG)
    assert out.completion is not None and out.completion.text == "pos" and not out.cached
    with store.transaction() as s:
        rows = s.scalars(select(LLMCall).order_by(LLMCall.id)).all()
        assert [r.error for r in rows] == ["HTTP 503: overloaded", None]


def test_price_table_from_project_config(cli: CLI, db_url: str, tmp_path: Path) -> None:
    (tmp_path / "tuneloop.yaml").write_text(
        "name: default\nprices:\n  fake:\n    input: 1000000\n    output: 2000000\n"
    )
    path = _reviews(tmp_path, 3)
    assert (
        cli(
            "data",
            "import",
            str(path),
            "--task",
            "summarization",
            "--map",
            "source=text",
            "--dedupe",
            "none",
        )[0]
        == 0
    )
    code, out, err = cli(
        "--project", str(tmp_path), "annotate", "--dataset", "reviews", "--model", "fake"
    )
    assert code == 0, err
    store = open_store(db_url)
    with store.transaction() as s:
        calls = s.scalars(select(LLMCall)).all()
        assert calls and all(
            c.cost_usd == (c.tokens_in or 0) * 1.0 + (c.tokens_out or 0) * 2.0 for c in calls
        )
    store.dispose()
    total = sum(c.cost_usd or 0 for c in calls)
    assert f"cost ${total:.4f}" in out
    (tmp_path / "tuneloop.yaml").write_text("prices:\n  fake: 3\n")
    code, _, err = cli(
        "--project", str(tmp_path), "annotate", "--dataset", "reviews", "--model", "fake"
    )
    assert code == 1 and "prices: fake: expected {input: USD per 1M tokens, output: ...}" in err
