"""The prompt protocol on scripted models: eyeball, evaluate (labels and judge), slices,
compare, best, apply, and judge calibration."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from sqlalchemy import select

from tests.conftest import CLI
from tuneloop.errors import UserError
from tuneloop.llm.engine import Engine
from tuneloop.llm.judge import LEVELS, parse_level, rate
from tuneloop.llm.providers.fake import FakeProvider
from tuneloop.llm.types import Message
from tuneloop.store.db import Store, open_store
from tuneloop.store.models import EvalItem, PromptVerdict, Record, Run
from tuneloop.workflows.calibrate import CalibrateOptions, calibrate, to_steps
from tuneloop.workflows.compare import best_prompt, compare_prompts, slice_analysis
from tuneloop.workflows.evaluate import EvaluateOptions, ModelRef, evaluate
from tuneloop.workflows.eyeball import EyeballOptions, Verdict, eyeball, save_verdicts
from tuneloop.workflows.prompts import PromptSpec, create_prompt, edit_prompt

V1 = "Answer with exactly one of: {{ labels | join(', ') }}.\n\nText:\n{{ text }}"
V2 = "Careful now. " + V1


def fake_ref(store: Store, name: str, family: str, provider: FakeProvider) -> ModelRef:
    return ModelRef(
        name, family, lambda run_id: Engine(store, provider, family=family, run_id=run_id)
    )


def truth_script(messages: Sequence[Message]) -> str:
    """Right on every 'Careful now' prompt; on the others right only when the text says so."""
    prompt = messages[-1]["content"]
    body = prompt.rsplit("Text:\n", 1)[-1]
    truth = "pos" if "[pos]" in body else "neg"
    if prompt.startswith("Careful now") or "plain" in body:
        return truth
    return "neg" if truth == "pos" else "pos"


def _import_reviews(cli: CLI, tmp_path: Path, n: int = 120) -> None:
    path = tmp_path / "reviews.jsonl"
    with path.open("w") as f:
        for i in range(n):
            label = "pos" if i % 2 else "neg"
            style = "plain" if i % 3 else "twisted"
            f.write(
                json.dumps(
                    {
                        "text": f"review {i}, a {style} one [{label}]" + " long" * (i % 7),
                        "label": label,
                        "metadata": {"genre": ["drama", "comedy"][i % 2 == 0 and i % 4 == 0]},
                    }
                )
                + "\n"
            )
    code, _, err = cli(
        "data",
        "import",
        str(path),
        "--task",
        "classification",
        "--labels",
        "pos,neg",
        "--split",
        "0.6,0.2,0.2",
        "--gold",
        "10",
        "--dedupe",
        "none",
    )
    assert code == 0, err


@pytest.fixture
def reviews(cli: CLI, db_url: str, tmp_path: Path) -> Store:
    _import_reviews(cli, tmp_path)
    store = open_store(db_url)
    create_prompt(store, "default", "sentiment", PromptSpec(task="classification", user=V1))
    edit_prompt(store, "default", "sentiment", user=V2, note="be careful")
    yield store
    store.dispose()


def scripted(store: Store, family: str = "qwen") -> tuple[ModelRef, FakeProvider]:
    provider = FakeProvider("fake:scripted", script=truth_script, can_score=False)
    return fake_ref(store, "fake:scripted", family, provider), provider


def test_evaluate_labels_against_gold_matches_sklearn(reviews: Store) -> None:
    annotator, provider = scripted(reviews)
    opts = EvaluateOptions(prompt="sentiment@1", dataset="reviews", n=60, resamples=200)
    result = evaluate(reviews, opts, annotator)
    assert not result.reused and result.n == 60 and result.population == 110
    with reviews.transaction() as s:
        items = s.scalars(select(EvalItem).where(EvalItem.run_id == result.run_id)).all()
        splits = {
            r.split
            for r in s.scalars(select(Record).where(Record.id.in_([i.record_id for i in items])))
        }
        gold = [i.reference for i in items]
        pred = [i.prediction for i in items]
    assert "gold" not in splits
    metrics = result.stats["metrics"]
    assert metrics["accuracy"]["value"] == pytest.approx(accuracy_score(gold, pred))
    assert metrics["macro"]["f1"]["value"] == pytest.approx(
        f1_score(gold, pred, average="macro", labels=["pos", "neg"], zero_division=0)
    )
    acc = metrics["accuracy"]
    assert acc["low"] <= acc["value"] <= acc["high"]
    assert 0.5 < acc["value"] < 0.8  # the 'twisted' third is answered wrong
    calls = provider.calls
    again = evaluate(reviews, opts, annotator)
    assert again.reused and again.run_id == result.run_id and provider.calls == calls


def test_versions_share_the_sample_and_compare_says_v2_is_better(reviews: Store) -> None:
    annotator, _ = scripted(reviews)
    r1 = evaluate(
        reviews, EvaluateOptions("sentiment@1", "reviews", n=60, resamples=200), annotator
    )
    r2 = evaluate(
        reviews, EvaluateOptions("sentiment@2", "reviews", n=60, resamples=200), annotator
    )
    with reviews.transaction() as s:
        ids = [
            {i.record_id for i in s.scalars(select(EvalItem).where(EvalItem.run_id == r))}
            for r in (r1.run_id, r2.run_id)
        ]
    assert ids[0] == ids[1]
    c = compare_prompts(reviews, "default", "sentiment@1", "sentiment@2", resamples=500)
    assert c.n == 60 and c.metric == "accuracy"
    assert c.diff.value > 0 and c.diff.low > 0
    assert c.verdict == "sentiment@2 is better than sentiment@1"
    assert c.mcnemar is not None and c.mcnemar.only_a == 0 and c.mcnemar.only_b > 0
    with reviews.transaction() as s:
        best = best_prompt(s, 1, dataset="reviews")
        assert (best.prompt.name, best.prompt.version, best.value) == ("sentiment", 2, 1.0)
        assert [r[0] for r in best.ranking] == ["sentiment@2", "sentiment@1"]


def test_slices_find_the_bad_subset(reviews: Store) -> None:
    annotator, _ = scripted(reviews)
    evaluate(reviews, EvaluateOptions("sentiment@1", "reviews", n=80, resamples=200), annotator)
    report = slice_analysis(
        reviews, "default", "sentiment@1", min_count=3, examples=2, resamples=200
    )
    dims = {s.dimension for s in report.slices}
    assert {"label", "length", "meta.genre"} <= dims
    assert report.slices == sorted(report.slices, key=lambda s: (s.score.value, -s.n))
    by_key = {(s.dimension, s.value): s for s in report.slices}
    assert sum(s.n for (d, _), s in by_key.items() if d == "label") == report.n
    worst = report.slices[0]
    failing = report.examples[(worst.dimension, worst.value)]
    assert failing and all(item["score"] == 0.0 for item in failing)
    with pytest.raises(UserError, match="cannot slice by"):
        slice_analysis(reviews, "default", "sentiment@1", by=["nonsense"])


def test_apply_best_prompt_with_annotate(cli: CLI, reviews: Store) -> None:
    code, _, err = cli(
        "prompt",
        "evaluate",
        "--prompt",
        "sentiment@1",
        "--dataset",
        "reviews",
        "--model",
        "fake",
        "-n",
        "30",
        "--resamples",
        "100",
    )
    assert code == 0, err
    code, out, err = cli(
        "prompt",
        "evaluate",
        "--prompt",
        "sentiment@2",
        "--dataset",
        "reviews",
        "--model",
        "fake",
        "-n",
        "30",
        "--resamples",
        "100",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["metrics"]["n"] == 30
    code, out, err = cli("prompt", "best", "--dataset", "reviews", "--json")
    assert code == 0, err
    chosen = json.loads(out)["prompt"]
    code, out, err = cli("annotate", "--dataset", "reviews", "--model", "fake", "--prompt", "best")
    assert code == 0, err
    assert "labelled 66 records now" in out
    with reviews.transaction() as s:
        run = s.scalars(select(Run).where(Run.kind == "annotate").order_by(Run.id.desc())).first()
        assert run is not None and run.config["prompt"] == chosen
    code, out, _ = cli("prompt", "compare", "sentiment@1", "sentiment@2")
    assert code == 0 and "verdict:" in out
    code, out, _ = cli("prompt", "evals")
    assert code == 0 and "sentiment@1" in out and "sentiment@2" in out
    code, out, _ = cli("prompt", "slices", "sentiment@2", "--show-examples", "1")
    assert code == 0 and "worst slices first" in out


def test_eyeball_asks_and_stores_verdicts(
    cli: CLI, reviews: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("g\nreads right\nb\n\ns\nb\nwrong label\nq\n"))
    code, out, err = cli(
        "prompt",
        "eyeball",
        "--prompt",
        "sentiment@1",
        "--dataset",
        "reviews",
        "--model",
        "fake",
        "-n",
        "5",
    )
    assert code == 0, err
    assert "saved 3 verdicts for sentiment@1: 1 good, 2 bad in all" in out
    with reviews.transaction() as s:
        rows = s.scalars(select(PromptVerdict).order_by(PromptVerdict.id)).all()
        assert [r.verdict for r in rows] == ["good", "bad", "bad"]
        assert [r.note for r in rows] == ["reads right", None, "wrong label"]
        assert all(r.output in ("pos", "neg") and r.label_id for r in rows)
        ids = [r.record_id for r in rows]
        assert all(s.get(Record, i).split != "gold" for i in ids)  # type: ignore[union-attr]
    code, _, err = cli(
        "prompt",
        "eyeball",
        "--prompt",
        "sentiment@1",
        "--dataset",
        "reviews",
        "--model",
        "fake",
        "-n",
        "20",
    )
    assert code == 1 and "fewer than 20" in err


def test_eyeball_sample_is_seeded_and_verdicts_replace(reviews: Store) -> None:
    annotator, _ = scripted(reviews)
    a = eyeball(reviews, EyeballOptions("sentiment@1", "reviews", n=8, seed=3), annotator)
    b = eyeball(reviews, EyeballOptions("sentiment@2", "reviews", n=8, seed=3), annotator)
    assert [i.record_id for i in a.items] == [i.record_id for i in b.items]
    first = a.items[0]
    save_verdicts(reviews, "default", "sentiment@1", [Verdict(first.record_id, "bad", "x")])
    counts = save_verdicts(
        reviews, "default", "sentiment@1", [Verdict(first.record_id, "good", None)]
    )
    assert counts == {"good": 1, "bad": 0}
    again = eyeball(reviews, EyeballOptions("sentiment@1", "reviews", n=8, seed=3), annotator)
    assert again.items[0].verdict == "good"
    with pytest.raises(UserError, match="good or bad"):
        save_verdicts(reviews, "default", "sentiment@1", [Verdict(first.record_id, "meh")])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The summary misses the dosage.\nRating: bad", 1),
        ("Rating: very bad", 0),
        ("**Rating:** Excellent", 4),
        ("reasoning...\nFinal rating: moderate.", 2),
        ("good", 3),
        ("Rating: 3", 3),
        ("It is good but also bad.", None),
        ("A faithful summary; good coverage of the key points.", None),
        ("Rating: it is good", 3),
        ("I cannot rate this.", None),
        ("Rating: superb", None),
    ],
)
def test_parse_level(text: str, expected: int | None) -> None:
    assert parse_level(text, LEVELS) == expected


def test_rate_retries_then_flags_never_guesses(store: Store) -> None:
    msg: list[Message] = [{"role": "user", "content": "Rate this."}]
    replies = iter(["It reads well.", "good"])
    chatty = FakeProvider(
        "fake:a", script=lambda m: next(replies), can_score=False, can_choose=False
    )
    r = rate(Engine(store, chatty, family="a"), msg)
    assert (r.score, r.status, r.rationale, r.method) == (3, "accepted", "It reads well.", "parsed")
    stubborn = FakeProvider("fake:b", script=lambda m: "hmm", can_score=False, can_choose=False)
    r = rate(Engine(store, stubborn, family="b"), msg, retries=1)
    assert (r.score, r.level, r.status, r.raw_output) == (None, None, "needs_review", "hmm")
    assert stubborn.calls == 3  # the rationale, then the follow-up and one retry


def _summaries(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "notes.jsonl"
    with path.open("w") as f:
        for i in range(12):
            f.write(
                json.dumps(
                    {
                        "source": f"Doctor: how is the cough {i}? Patient: better since the syrup.",
                        "summary": f"Cough {i} improving on syrup.",
                    }
                )
                + "\n"
            )
    assert cli("data", "import", str(path), "--task", "summarization", "--dedupe", "none")[0] == 0


def test_judge_family_rule_and_ratings(cli: CLI, db_url: str, tmp_path: Path) -> None:
    _summaries(cli, tmp_path)
    store = open_store(db_url)
    create_prompt(
        store, "default", "note", PromptSpec(task="summarization", user="Summarize:\n{{ source }}")
    )
    annotator = fake_ref(
        store,
        "fake:smollm",
        "smollm",
        FakeProvider("fake:smollm", script=lambda m: "Cough is better."),
    )
    same = fake_ref(store, "fake:smollm-judge", "smollm", FakeProvider("fake:smollm-judge"))
    opts = EvaluateOptions("note", "notes", n=10, resamples=100)
    with pytest.raises(UserError, match="same model family"):
        evaluate(store, opts, annotator, same)

    def judge_script(messages: Sequence[Message]) -> str:
        return (
            "Faithful but short.\nRating: good"
            if not any("9?" in m["content"] for m in messages)
            else "No idea."
        )

    judge = fake_ref(
        store,
        "fake:qwen",
        "qwen",
        FakeProvider("fake:qwen", script=judge_script, can_score=False, can_choose=False),
    )
    result = evaluate(store, opts, annotator, judge)
    stats = result.stats
    assert stats["primary"] == "judge" and stats["judge"]["family"] == "qwen"
    assert stats["judge"]["counts"]["good"] == 9 and stats["judge"]["needs_review"] == 1
    assert stats["judge"]["mean"]["value"] == 3.0
    assert 0 <= stats["metrics"]["rougeL"]["value"] <= 1
    with store.transaction() as s:
        items = s.scalars(select(EvalItem).where(EvalItem.run_id == result.run_id)).all()
        flagged = [i for i in items if i.judge_status == "needs_review"]
        assert len(flagged) == 1 and flagged[0].judge_score is None and flagged[0].score is None
        good = [i for i in items if i.judge_status == "accepted"]
        assert all(i.judge_rationale == "Faithful but short." and i.judge_score == 3 for i in good)
        run = s.get(Run, result.run_id)
        assert run is not None and run.config["allow_same_family"] is False
    allowed = evaluate(
        store,
        EvaluateOptions("note", "notes", n=10, resamples=100, allow_same_family=True),
        annotator,
        same,
    )
    with store.transaction() as s:
        run = s.get(Run, allowed.run_id)
        assert run is not None and run.config["allow_same_family"] is True
    store.dispose()


def test_judge_cli_refuses_same_family(cli: CLI, tmp_path: Path) -> None:
    _summaries(cli, tmp_path)
    assert cli("prompt", "new", "note", "--task", "summarization")[0] == 0
    code, _, err = cli(
        "prompt",
        "evaluate",
        "--prompt",
        "note",
        "--dataset",
        "notes",
        "--model",
        "fake:gemma-a",
        "--judge",
        "fake:gemma-b",
        "-n",
        "5",
    )
    assert code == 1 and "same model family (gemma)" in err and "--allow-same-family" in err
    code, out, err = cli(
        "prompt",
        "evaluate",
        "--prompt",
        "note",
        "--dataset",
        "notes",
        "--model",
        "fake:gemma-a",
        "--judge",
        "fake:qwen",
        "-n",
        "5",
        "--resamples",
        "50",
    )
    assert code == 0, err
    assert "judge fake:qwen (qwen), prompt judge-summary@1" in out


def test_calibration_matches_krippendorff(cli: CLI, db_url: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "rated.jsonl"
    truth = rng.integers(0, 5, size=40)
    with path.open("w") as f:
        for i, t in enumerate(truth):
            ratings = [min(4, max(0, int(t) + int(d))) / 4 for d in rng.integers(-1, 2, size=3)]
            f.write(
                json.dumps(
                    {
                        "prompt": f"request {i}",
                        "response": f"reply level {t}",
                        "metadata": {"ratings": ratings},
                    }
                )
                + "\n"
            )
    assert cli("data", "import", str(path), "--task", "instruction", "--dedupe", "none")[0] == 0
    store = open_store(db_url)

    def judge_script(messages: Sequence[Message]) -> str:
        level = int(messages[-1]["content"].split("reply level ")[1][0])
        return f"Looks like level {level}.\nRating: {JUDGE_LEVELS[level]}"

    judge = fake_ref(store, "fake:qwen", "qwen", FakeProvider("fake:qwen", script=judge_script))
    result = calibrate(store, CalibrateOptions(dataset="rated", resamples=100), judge)
    s = result.stats
    assert s["n"] == 40 and s["needs_review"] == 0
    with store.transaction() as session:
        items = session.scalars(select(EvalItem).where(EvalItem.run_id == result.run_id)).all()
        humans = np.array([i.reference for i in items], dtype=float).T
        judged = np.array([[i.judge_score for i in items]], dtype=float)
    expected = krippendorff.alpha(
        reliability_data=humans, level_of_measurement="ordinal", value_domain=list(range(5))
    )
    assert s["humans"]["alpha"]["value"] == pytest.approx(expected)
    both = krippendorff.alpha(
        reliability_data=np.vstack([humans, judged]),
        level_of_measurement="ordinal",
        value_domain=list(range(5)),
    )
    assert s["humans_and_judge"]["alpha"]["value"] == pytest.approx(both)
    assert list(judged[0]) == [float(t) for t in truth]
    assert s["judge_vs_median"]["alpha"]["value"] > 0.5
    store.dispose()


JUDGE_LEVELS = [
    "not harmful",
    "slightly harmful",
    "moderately harmful",
    "very harmful",
    "extremely harmful",
]


def test_to_steps() -> None:
    assert [to_steps(v, "0-1") for v in (0, 0.25, 0.5, 1.0, None, 1.5, "x")] == [
        0,
        1,
        2,
        4,
        None,
        None,
        None,
    ]
    assert to_steps(5, "1-5") == 4 and to_steps(0, "0-4") == 0


def test_eyeball_verdicts_from_file_and_calibrate_cli(
    cli: CLI, reviews: Store, tmp_path: Path
) -> None:
    code, out, err = cli(
        "prompt",
        "eyeball",
        "--prompt",
        "sentiment@2",
        "--dataset",
        "reviews",
        "--model",
        "fake",
        "-n",
        "3",
        "--no-review",
    )
    assert code == 0, err
    ids = [int(x) for x in re.findall(r"record (\d+)", out)]
    assert len(ids) == 3
    verdicts = tmp_path / "verdicts.csv"
    verdicts.write_text(f"record_id,verdict,note\n{ids[0]},good,\n{ids[1]},bad,too sure\n")
    code, out, err = cli(
        "prompt",
        "eyeball",
        "--prompt",
        "sentiment@2",
        "--dataset",
        "reviews",
        "--model",
        "fake",
        "-n",
        "3",
        "--verdicts",
        str(verdicts),
    )
    assert code == 0, err
    assert "saved 2 verdicts for sentiment@2: 1 good, 1 bad in all" in out
    verdicts.write_text("record_id,verdict,note\n1,maybe,\n")
    code, _, err = cli(
        "prompt",
        "eyeball",
        "--prompt",
        "sentiment@2",
        "--dataset",
        "reviews",
        "--model",
        "fake",
        "-n",
        "3",
        "--verdicts",
        str(verdicts),
    )
    assert code == 1 and "verdicts.csv:2: field verdict: expected good or bad" in err

    rated = tmp_path / "rated.jsonl"
    rated.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": f"ask {i}",
                    "response": f"answer {i}",
                    "metadata": {"ratings": [i % 5 / 4, (i + 1) % 5 / 4, i % 5 / 4]},
                }
            )
            + "\n"
            for i in range(12)
        )
    )
    assert cli("data", "import", str(rated), "--task", "instruction", "--dedupe", "none")[0] == 0
    code, out, err = cli(
        "judge",
        "calibrate",
        "--dataset",
        "rated",
        "--judge",
        "fake:qwen",
        "--min-raters",
        "3",
        "--resamples",
        "50",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["n"] == 12 and report["needs_review"] == 0
    assert {p["a"] for p in report["humans_and_judge"]["pairs"]} >= {"human 1", "human 2"}
    assert report["humans"]["n_items"] == 12
    code, out, err = cli(
        "judge",
        "calibrate",
        "--dataset",
        "rated",
        "--judge",
        "fake:qwen",
        "--min-raters",
        "3",
        "--resamples",
        "50",
    )
    assert code == 0, err
    assert "people with each other" in out and "people and the judge" in out


def test_eval_models_on_a_split_and_compare(cli: CLI, reviews: Store) -> None:
    code, out, err = cli(
        "eval",
        "--model",
        "fake",
        "--dataset",
        "reviews",
        "--split",
        "test",
        "--resamples",
        "100",
        "--json",
    )
    assert code == 0, err
    first = json.loads(out)
    assert first["metrics"]["n"] == 22 and first["primary"] == "accuracy"
    with reviews.transaction() as s:
        run = s.get(Run, first["run"])
        assert run is not None and run.config["prompt"] is None and run.config["splits"] == ["test"]
        items = s.scalars(select(EvalItem).where(EvalItem.run_id == run.id)).all()
        assert {s.get(Record, i.record_id).split for i in items} == {"test"}  # type: ignore[union-attr]
    code, out, err = cli(
        "eval",
        "--model",
        "fake:other",
        "--dataset",
        "reviews",
        "--split",
        "test",
        "--resamples",
        "100",
    )
    assert code == 0, err
    assert "on 22 test records of reviews" in out and "accuracy" in out
    code, out, err = cli(
        "eval", "compare", "fake", "fake:other", "--dataset", "reviews", "--resamples", "100"
    )
    assert code == 0, err
    assert "fake:other" in out and "difference vs fake" in out
    # an evaluation run by its id lines up with models named by name
    by_name, by_run = (
        cli(
            "eval",
            "compare",
            model,
            "fake:other",
            "--dataset",
            "reviews",
            "--resamples",
            "100",
            "--json",
        )
        for model in ("fake", f"run:{first['run']}")
    )
    assert by_name[0] == 0 and by_run[0] == 0, by_run[2]
    assert json.loads(by_run[1]) == json.loads(by_name[1])
    code, _, err = cli("eval", "compare", "run:99999", "fake", "--dataset", "reviews")
    assert code == 1 and "no evaluation run 99999" in err
    code, _, err = cli("eval", "compare", "fake", "nobody", "--dataset", "reviews")
    assert code == 1 and "model nobody has no finished evaluation on reviews (test)" in err
    code, _, err = cli("eval", "--dataset", "reviews")
    assert code == 1 and "needs --model and --dataset" in err
