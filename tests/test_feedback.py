"""Human feedback on a model: each selection strategy picks the items it should (a provider
scripted with known label scores, answers and ratings), K responses per item, feedback into
human labels and TRL's formats (a ranking of 3 gives 3 pairs; TRL's DPOTrainer reads the
file), and the whole round on the tiny model: select, answer in the web app, apply, retrain,
compare with intervals."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import CLI
from tests.people import GOLD, PASSWORD, add_people, fast_hashing  # noqa: F401
from tuneloop.errors import UserError
from tuneloop.llm.engine import Engine
from tuneloop.llm.types import ChoiceScores, Completion, GenParams, Message
from tuneloop.metrics.hardness import Hard, entropy, hardest, margin
from tuneloop.preferences import preference_pairs
from tuneloop.store.db import Store
from tuneloop.store.models import Label, LLMCall, QueueItem, Record, Run
from tuneloop.workflows.answering import next_item, submit
from tuneloop.workflows.evaluate import ModelRef
from tuneloop.workflows.feedback import SelectOptions, select_hard
from tuneloop.workflows.feedback_data import apply_feedback, export_feedback
from tuneloop.workflows.queue_items import NewItem
from tuneloop.workflows.queues import QueueSpec, create_queue
from tuneloop.workflows.review import adjudicate
from tuneloop.workflows.users import Actor

pytestmark = pytest.mark.usefixtures("fast_hashing")


# --- a provider the test scripts ----------------------------------------------------------------


def _body(messages: Sequence[Message]) -> str:
    """The record's text (classification) or question (open QA) in a chat-format prompt."""
    content = messages[-1]["content"]
    for head in ("Text:\n", "Question:\n", "Answer to rate:\n"):
        if head in content:
            return content.split(head, 1)[1].split("\n")[0].strip()
    return content


class Scripted:
    """Label scores, greedy answers and samples that the test decides: ``probs(text)`` gives
    a record's label distribution, ``answer(text)`` its greedy answer; a sample (temperature
    above 0) is ``sample <seed % variants>``."""

    kind = "fake"

    def __init__(
        self,
        model: str,
        probs: Callable[[str], dict[str, float]] | None = None,
        answer: Callable[[str], str] | None = None,
        variants: int = 1000,
    ) -> None:
        self.model = model
        self.probs = probs
        self.answer = answer or (lambda text: f"{model} says {text}")
        self.variants = variants
        self.calls = 0

    def chat(self, messages: Sequence[Message], params: GenParams) -> Completion:
        self.calls += 1
        if params.temperature > 0:
            text = f"sample {(params.seed or 0) % self.variants}"
        else:
            text = self.answer(_body(messages))
        return Completion(text, 1, 1, "stop")

    def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str]
    ) -> ChoiceScores | None:
        if self.probs is None:
            return None
        self.calls += 1
        p = self.probs(_body(messages))
        return ChoiceScores({c: math.log(p.get(c, 1e-9)) for c in choices}, 1)

    def choose(
        self, messages: Sequence[Message], choices: Sequence[str], params: GenParams
    ) -> Completion | None:
        return None


def ref(store: Store, provider: Scripted, family: str = "qwen") -> ModelRef:
    def make(run_id: int | None) -> Engine:
        return Engine(store, provider, family=family, run_id=run_id)

    return ModelRef(provider.model, family, make)


def import_rows(
    cli: CLI, tmp_path: Path, name: str, rows: list[dict[str, Any]], *args: str
) -> None:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = cli("data", "import", str(path), "--name", name, "--dedupe", "none", *args)
    assert code == 0, err


def chosen_ids(result: Any) -> list[str]:
    return [c["record"] for c in result.chosen]


def items_of(store: Store, queue_id: int) -> list[QueueItem]:
    with store.transaction() as s:
        items = s.scalars(
            select(QueueItem).where(QueueItem.queue_id == queue_id).order_by(QueueItem.position)
        ).all()
        for item in items:
            s.expunge(item)
        return list(items)


# three labels, so that the lowest margin and the highest entropy can differ
DISTRIBUTIONS = {
    "t0": {"a": 0.98, "b": 0.01, "c": 0.01},  # sure
    "t1": {"a": 0.50, "b": 0.46, "c": 0.04},  # margin 0.04: the lowest margin
    "t2": {"a": 0.36, "b": 0.32, "c": 0.32},  # margin 0.04 too, and the highest entropy
    "t3": {"a": 0.60, "b": 0.20, "c": 0.20},
    "t4": {"a": 0.90, "b": 0.05, "c": 0.05},
    "t5": {"a": 0.45, "b": 0.30, "c": 0.25},  # margin 0.15, high entropy
}


@pytest.fixture
def abc(cli: CLI, tmp_path: Path) -> None:
    rows = [{"id": t, "text": t, "label": "a"} for t in DISTRIBUTIONS]
    import_rows(cli, tmp_path, "abc", rows, "--task", "classification", "--labels", "a,b,c")


# --- pure pieces --------------------------------------------------------------------------------


def test_pairs_from_rankings_and_choices() -> None:
    texts = ["one", "two", "three"]
    ranked = preference_pairs({"ranking": [2, 0, 1]}, texts)
    assert ranked.pairs == [(2, 0), (2, 1), (0, 1)] and ranked.ties == 0  # 3*2/2 pairs
    assert preference_pairs({"choice": "A"}, texts[:2]).pairs == [(0, 1)]
    assert preference_pairs({"choice": "B"}, texts[:2]).pairs == [(1, 0)]
    tie = preference_pairs({"choice": "tie"}, texts[:2])
    assert (tie.pairs, tie.ties) == ([], 1)
    same = preference_pairs({"ranking": [0, 1, 2]}, ["x", " x", "y"])  # two equal texts
    assert (same.pairs, same.ties) == ([(0, 2), (1, 2)], 1)
    four = preference_pairs({"ranking": [3, 1, 0, 2]}, ["a", "b", "c", "d"])
    assert len(four.pairs) == 6
    p = {"a": 0.5, "b": 0.5}
    assert margin(p) == 0 and entropy(p) == pytest.approx(math.log(2))
    order = hardest({1: Hard(0.2), 2: Hard(None), 3: Hard(0.9), 4: Hard(0.9, tie=1.0)}, 3)
    assert order == [2, 4, 3]


# --- strategies ---------------------------------------------------------------------------------


def test_uncertainty_by_margin_and_entropy_and_reuse(
    cli: CLI, store: Store, abc: None, tmp_path: Path
) -> None:
    provider = Scripted("scripted", probs=lambda text: DISTRIBUTIONS[text])
    model = ref(store, provider)
    opts = SelectOptions(dataset="abc", split="unsplit", n=3, queue="by-margin")
    result = select_hard(store, opts, [model])
    assert chosen_ids(result) == ["t1", "t2", "t5"]  # margins 0.04, 0.04, 0.15
    assert result.chosen[0]["margin"] == pytest.approx(0.04)
    assert result.chosen[0]["hardness"] == pytest.approx(0.96)  # 1 - margin
    assert result.chosen[0]["probs"] == pytest.approx(DISTRIBUTIONS["t1"])
    assert (result.scored, result.question, result.reused) == (6, "label", False)
    items = items_of(store, result.queue_id)
    assert [i.responses for i in items] == [None, None, None]  # a label queue: no responses
    with store.transaction() as s:
        run = s.get(Run, result.run_id)
        assert run is not None and run.kind == "feedback-select" and run.status == "finished"
        assert [c["record"] for c in run.stats["chosen"]] == ["t1", "t2", "t5"]
        assert run.config["strategy"] == "uncertainty" and run.config["models"] == ["scripted"]
        assert s.scalar(select(func.count()).select_from(Label)) == 0  # scoring writes no label
    # the same options: the same run and queue, no model call
    calls = provider.calls
    again = select_hard(store, opts, [model])
    assert again.reused and again.queue_id == result.queue_id and provider.calls == calls
    # entropy ranks t2 (near uniform) first; records already in a label queue are left out
    by_entropy = SelectOptions(dataset="abc", split="unsplit", n=3, measure="entropy")
    result = select_hard(store, by_entropy, [model])
    assert chosen_ids(result) == ["t3", "t4", "t0"]
    assert result.notes == ["3 records already in a label queue"]
    assert provider.calls == calls  # every score came from the cache
    with_queued = SelectOptions(
        dataset="abc", split="unsplit", n=2, measure="entropy", include_queued=True
    )
    assert chosen_ids(select_hard(store, with_queued, [model])) == ["t2", "t5"]
    with store.transaction() as s:
        runs = s.scalar(select(func.count()).where(Run.kind == "feedback-select"))
    with pytest.raises(UserError, match="no records in split unsplit that are not in a label"):
        select_hard(store, SelectOptions(dataset="abc", split="unsplit", n=5), [model])
    with store.transaction() as s:  # the refused selection left no run behind
        assert s.scalar(select(func.count()).where(Run.kind == "feedback-select")) == runs


def test_candidates_scores_a_seeded_sample_of_the_split(
    cli: CLI, store: Store, abc: None, tmp_path: Path
) -> None:
    provider = Scripted("scripted", probs=lambda text: DISTRIBUTIONS[text])
    model = ref(store, provider)
    opts = SelectOptions(dataset="abc", split="unsplit", n=2, candidates=4, queue="sampled")
    result = select_hard(store, opts, [model])
    assert result.scored == 4 and provider.calls == 4
    assert result.notes == ["scored a seeded sample of 4 of the 6 records"]
    with store.transaction() as s:
        run = s.get(Run, result.run_id)
        assert run is not None and run.config["candidates"] == 4
        calls = s.scalars(select(LLMCall).where(LLMCall.run_id == result.run_id)).all()
        sample = sorted(_body(c.messages) for c in calls)
    assert len(set(sample)) == 4
    # the queue holds the hardest of the sample: its two lowest margins
    by_margin = sorted(sample, key=lambda t: (margin(DISTRIBUTIONS[t]), t))
    assert sorted(chosen_ids(result)) == sorted(by_margin[:2])
    # the same seed draws the same sample: every score of a second selection is cached
    again = SelectOptions(
        dataset="abc", split="unsplit", n=2, candidates=4, queue="again", include_queued=True
    )
    assert chosen_ids(select_hard(store, again, [model])) == chosen_ids(result)
    assert provider.calls == 4
    with pytest.raises(UserError, match="--candidates 1 is fewer than --n 2"):
        select_hard(
            store, SelectOptions(dataset="abc", split="unsplit", n=2, candidates=1), [model]
        )


def test_disagreement_among_model_llms_people_and_reference(
    cli: CLI, store: Store, abc: None
) -> None:
    answers = {"t0": "a", "t1": "a", "t2": "a", "t3": "a", "t4": "b", "t5": "a"}

    def probs(text: str) -> dict[str, float]:
        sure = 0.9 if text != "t3" else 0.5  # t3: less sure than t1
        return {c: (sure if c == answers[text] else (1 - sure) / 2) for c in "abc"}

    model = ref(store, Scripted("student", probs=probs))
    with store.transaction() as s:
        ids = {r.external_id: r.id for r in s.scalars(select(Record))}

        def llm(record: str, value: str, by: str) -> None:
            call = LLMCall(cache_key=by, provider="fake", model=by, family="x", messages=[])
            s.add(call)
            s.flush()
            s.add(Label(record_id=ids[record], value=value, source="llm", llm_call_id=call.id))

        # every reference is "a"
        llm("t0", "a", "gpt-big")  # all agree: left out
        llm("t1", "b", "gpt-big")  # model a, ref a, llm b, human b: 2 of 4 differ
        s.add(Label(record_id=ids["t1"], value="b", source="human"))
        llm("t2", "c", "student")  # the examined model's own label: not a vote
        llm("t3", "b", "gpt-big")  # model a, ref a, llm b, human b: 2 of 4 differ
        s.add(Label(record_id=ids["t3"], value="b", source="human"))
        # t4: model b, ref a: 1 of 2 differ
        llm("t5", "c", "gpt-big")  # model a, ref a, llm c: 1 of 3 differ
        s.add(Label(record_id=ids["t5"], value="x", source="human", status="rejected"))
    opts = SelectOptions(dataset="abc", split="unsplit", strategy="disagreement", n=10)
    result = select_hard(store, opts, [model])
    # t3 before t1 (the same disagreement; the model is less sure of t3); t0 and t2 agree
    assert chosen_ids(result) == ["t3", "t1", "t4", "t5"]
    assert [c["disagreement"] for c in result.chosen] == pytest.approx([0.5, 0.5, 0.5, 1 / 3])
    assert result.chosen[0]["votes"] == {
        "model": "a",
        "llm:gpt-big": "b",
        "human": "b",
        "reference": "a",
    }


def test_judge_low_on_a_generative_task(cli: CLI, store: Store, tmp_path: Path) -> None:
    rows = [{"id": f"q{i}", "question": f"q{i}", "answer": f"{GOLD} {i}"} for i in range(5)]
    import_rows(cli, tmp_path, "qa", rows, "--task", "open_qa")
    ratings = {"q0": "good", "q1": "very bad", "q2": "excellent", "q3": "bad", "q4": "moderate"}
    model = ref(store, Scripted("student", answer=lambda q: f"my answer to {q}"))

    def judge_says(text: str) -> str:  # text: the answer being rated
        return f"Fine.\nRating: {ratings[text.removeprefix('my answer to ')]}"

    judge = ref(store, Scripted("judge", answer=judge_says), family="llama")
    opts = SelectOptions(
        dataset="qa", split="unsplit", strategy="judge-low", n=2, question="correction"
    )
    result = select_hard(store, opts, [model], judge)
    assert chosen_ids(result) == ["q1", "q3"]
    assert [c["judge"] for c in result.chosen] == ["very bad", "bad"]
    items = items_of(store, result.queue_id)
    assert [i.responses for i in items] == [
        [{"model": "student", "text": "my answer to q1"}],
        [{"model": "student", "text": "my answer to q3"}],
    ]
    same_family = ref(store, Scripted("judge-2", answer=judge_says), family="qwen")
    with pytest.raises(UserError, match="same model family"):
        select_hard(store, opts, [model], same_family)
    with pytest.raises(UserError, match="uncertainty needs a label distribution"):
        select_hard(store, SelectOptions(dataset="qa", split="unsplit"), [model])
    with pytest.raises(UserError, match="judge-low needs --judge"):
        select_hard(store, opts, [model])
    # a label is no answer to an open question: apply refuses a label queue on these records
    people = add_people(store)
    spec = QueueSpec("qa-labels", "label", {"labels": ["ok", "wrong"]}, members=["alice"])
    with store.transaction() as s:
        first = s.scalars(select(Record.id).order_by(Record.position)).first()
    assert first is not None
    labelled = create_queue(store, spec, [NewItem(first)]).id
    _answer(store, people, labelled, {"alice": [{"label": "ok"}]})
    with pytest.raises(
        UserError, match=r"item 1: a label is no answer to open_qa records \(qa@1\)"
    ):
        apply_feedback(store, "qa-labels")


def test_slice_takes_the_failing_items_of_the_worst_slices(
    cli: CLI, store: Store, tmp_path: Path
) -> None:
    rows = []  # texts of one length: no length slice differs
    for i in range(12):
        source = "forum" if i % 3 == 0 else "news"  # 4 forum records, 8 news records
        rows.append(
            {"id": f"s{i:02}", "text": f"s{i:02}", "label": "a", "metadata": {"source": source}}
        )
    import_rows(cli, tmp_path, "src", rows, "--task", "classification", "--labels", "a,b")
    wrong = {"s00", "s03", "s06", "s01"}  # 3 of 4 forum records wrong, 1 of 8 news records

    def probs(text: str) -> dict[str, float]:
        return {"a": 0.2, "b": 0.8} if text in wrong else {"a": 0.8, "b": 0.2}

    model = ref(store, Scripted("student", probs=probs))
    opts = SelectOptions(
        dataset="src", split="unsplit", strategy="slice", n=10, min_slice=3, question="correction"
    )
    result = select_hard(store, opts, [model])
    assert chosen_ids(result) == ["s00", "s03", "s06"]  # forum (0.25) is below the mean (0.67)
    assert {c["slice"] for c in result.chosen} == {"meta.source=forum"}
    assert [c["answer"] for c in result.chosen] == ["b", "b", "b"]


# --- K responses per item -----------------------------------------------------------------------


def test_k_responses_sampled_or_one_per_model(cli: CLI, store: Store, abc: None) -> None:
    people = add_people(store)
    sampler = Scripted("sampler", probs=lambda t: DISTRIBUTIONS[t], variants=2)
    opts = SelectOptions(
        dataset="abc",
        split="unsplit",
        n=2,
        question="ranking",
        responses=3,
        temperature=0.7,
        members=["alice"],
    )
    # the sampler gives only 2 distinct answers: 3 draws... then repeats fill the third place
    result = select_hard(store, opts, [ref(store, sampler)])
    for item in items_of(store, result.queue_id):
        assert item.responses is not None and len(item.responses) == 3
        assert {r["model"] for r in item.responses} == {"sampler"}
        assert {r["temperature"] for r in item.responses} == {0.7}
        assert {r["text"] for r in item.responses} == {"sample 0", "sample 1"}
    assert result.notes[-1] == "2 items show the same response twice (samples alike)"
    # several models: one greedy response each, in a seeded order; people see no model names
    models = [
        ref(store, Scripted(f"secret-{j}", DISTRIBUTIONS.__getitem__, f"answer {j} to {{}}".format))
        for j in range(3)
    ]
    opts = SelectOptions(
        dataset="abc", split="unsplit", n=2, question="ranking", members=["alice"], queue="three"
    )
    result = select_hard(store, opts, models)
    orders = []
    for item in items_of(store, result.queue_id):
        assert item.responses is not None
        by_model = {r["model"]: r["text"] for r in item.responses}
        assert sorted(by_model) == ["secret-0", "secret-1", "secret-2"]
        assert all(text.startswith(f"answer {m[-1]} to t") for m, text in by_model.items())
        orders.append([r["model"] for r in item.responses])
    assert orders[0] != orders[1]  # the order is shuffled per item (seeded)
    view = next_item(store, people["alice"], result.queue_id)
    assert view is not None and len(view.responses) == 3
    assert "secret" not in json.dumps(view.to_dict())
    # pairwise takes two; one model needs a temperature to draw two different answers
    with pytest.raises(UserError, match="--responses 2 but 3 models"):
        select_hard(store, SelectOptions(dataset="abc", question="pairwise"), models)
    with pytest.raises(UserError, match="needs --temperature above 0"):
        select_hard(
            store, SelectOptions(dataset="abc", question="pairwise", temperature=0), models[:1]
        )
    with pytest.raises(UserError, match="pairwise or ranking queues only"):
        select_hard(store, SelectOptions(dataset="abc", question="rating"), models)
    unscored = ref(store, Scripted("endpoint", answer=lambda text: "a"))
    with pytest.raises(UserError, match="uncertainty needs label scores, and endpoint gives"):
        select_hard(store, SelectOptions(dataset="abc", split="unsplit"), [unscored])
    with pytest.raises(UserError, match="unknown strategy 'hardest'"):
        select_hard(store, SelectOptions(dataset="abc", strategy="hardest"), models[:1])
    with pytest.raises(UserError, match="--dataset is needed"):
        select_hard(store, SelectOptions(), models[:1])


# --- feedback into data -------------------------------------------------------------------------


def _ranking_queue(store: Store, question: str = "ranking") -> tuple[int, list[int]]:
    """A queue on the abc records with three (pairwise: two) responses from named models."""
    with store.transaction() as s:
        ids = list(s.scalars(select(Record.id).order_by(Record.position)))[:3]
    k = 2 if question == "pairwise" else 3
    responses = [{"model": f"m{j}", "text": f"response {j}"} for j in range(k)]
    spec = QueueSpec(
        question, question, dataset="abc", members=["alice", "bob"], annotators_per_item=2
    )
    queue = create_queue(store, spec, [NewItem(i, responses) for i in ids])
    return queue.id, ids


def _answer(
    store: Store, people: dict[str, Actor], queue_id: int, values: dict[str, list[Any]]
) -> None:
    for name, answers in values.items():
        for value in answers:
            item = next_item(store, people[name], queue_id)
            assert item is not None
            submit(store, people[name], queue_id, item.item_id, value)


def test_preferences_export_loads_in_trl(cli: CLI, store: Store, abc: None, tmp_path: Path) -> None:
    people = add_people(store)
    queue_id, _ = _ranking_queue(store)
    both = [{"ranking": [2, 0, 1]}, {"ranking": [0, 1, 2]}]
    _answer(store, people, queue_id, {"alice": [*both, {"ranking": [1, 0, 2]}]})
    _answer(store, people, queue_id, {"bob": [*both, {"ranking": [2, 1, 0]}]})  # item 3 differs
    out = tmp_path / "prefs.jsonl"
    result = export_feedback(store, "ranking", "preferences", out)
    assert (result.rows, result.items, result.skipped) == (6, 2, {"disagreement": 1})
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "response 2"}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "response 0"}]
    assert (rows[0]["chosen_model"], rows[0]["rejected_model"]) == ("m2", "m0")
    assert rows[0]["prompt"][0]["role"] == "user" and "Text:\nt0" in rows[0]["prompt"][0]["content"]
    # the reviewer decides item 3: its 3 pairs join
    with store.transaction() as s:
        third = s.scalar(
            select(QueueItem.id).where(QueueItem.queue_id == queue_id, QueueItem.position == 2)
        )
    assert third is not None
    adjudicate(store, people["rita"], queue_id, third, {"ranking": [1, 2, 0]})
    assert export_feedback(store, "ranking", "preferences", out).rows == 9

    pytest.importorskip("trl")
    from datasets import Dataset, load_dataset
    from trl.data_utils import is_conversational
    from trl.trainer.dpo_config import DPOConfig
    from trl.trainer.dpo_trainer import DPOTrainer

    from tests.tiny import tiny_llama, tiny_tokenizer

    data = load_dataset("json", data_files=str(out), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(data.column_names) and len(data) == 9
    assert is_conversational(data[0])
    tokenizer = tiny_tokenizer()
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
        activation_checkpointing=False,
    )
    trainer = DPOTrainer(
        model=tiny_llama(len(tokenizer)),
        ref_model=tiny_llama(len(tokenizer)),
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
    )
    # the trainer tokenized every record: prompt (the chat template) and both answers
    tokenized = trainer.train_dataset
    assert isinstance(tokenized, Dataset) and len(tokenized) == 9
    first = tokenized[0]
    assert first["chosen_ids"] and first["rejected_ids"] and first["prompt_ids"]
    assert tokenizer.decode(first["chosen_ids"]).startswith("response 2")


def test_pairwise_ties_dropped_ratings_per_rater_and_corrections(
    cli: CLI, store: Store, abc: None, tmp_path: Path
) -> None:
    people = add_people(store)
    queue_id, _ = _ranking_queue(store, "pairwise")
    choices = [{"choice": "A"}, {"choice": "tie"}, {"choice": "B"}]
    _answer(store, people, queue_id, {"alice": choices, "bob": choices})
    result = export_feedback(store, "pairwise", "preferences", tmp_path / "p.jsonl")
    assert (result.rows, result.skipped) == (2, {"tie": 1})
    with pytest.raises(UserError, match="queue 'pairwise' asks pairwise: --kind sft takes"):
        export_feedback(store, "pairwise", "sft", tmp_path / "x.jsonl")
    with pytest.raises(UserError, match="unknown export kind 'dpo'"):
        export_feedback(store, "pairwise", "dpo", tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()
    # ratings: one row per rater and response, with the model's name
    with store.transaction() as s:
        ids = list(s.scalars(select(Record.id).order_by(Record.position)))[:2]
    rated = create_queue(
        store,
        QueueSpec(
            "rated", "rating", dataset="abc", members=["alice", "bob"], annotators_per_item=2
        ),
        [NewItem(i, [{"model": "student", "text": f"answer {i}"}]) for i in ids],
    ).id
    _answer(store, people, rated, {"alice": [{"rating": 2}, {"rating": 5}]})
    _answer(store, people, rated, {"bob": [{"rating": 3}]})
    result = export_feedback(store, "rated", "ratings", tmp_path / "r.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert (result.rows, result.items) == (3, 2)
    assert [(r["rater"], r["rating"], r["model"]) for r in rows] == [
        ("alice", 2, "student"),
        ("bob", 3, "student"),
        ("alice", 5, "student"),
    ]
    assert rows[0]["response"] == f"answer {ids[0]}" and rows[0]["prompt"][0]["role"] == "user"
    # a correction: an SFT record, and a preference of the correction over the response
    fixed = create_queue(
        store,
        QueueSpec("fixed", "correction", dataset="abc", members=["alice"]),
        [NewItem(ids[0], [{"model": "student", "text": "c"}])],
    ).id
    _answer(store, people, fixed, {"alice": [{"text": "b"}]})
    export_feedback(store, "fixed", "sft", tmp_path / "sft.jsonl")
    (row,) = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert row["completion"] == [{"role": "assistant", "content": "b"}]
    assert "label" not in json.dumps(row["prompt"])  # never the reference output
    export_feedback(store, "fixed", "preferences", tmp_path / "fp.jsonl")
    (pref,) = [json.loads(x) for x in (tmp_path / "fp.jsonl").read_text().splitlines()]
    assert (pref["chosen_model"], pref["rejected_model"]) == ("human", "student")


def test_apply_is_idempotent_and_all_or_nothing(cli: CLI, store: Store, abc: None) -> None:
    people = add_people(store)
    with store.transaction() as s:
        ids = list(s.scalars(select(Record.id).order_by(Record.position)))
    spec = QueueSpec(
        "check", "label", dataset="abc", members=["alice", "bob"], annotators_per_item=2
    )
    queue_id = create_queue(store, spec, [NewItem(i) for i in ids[:4]]).id
    _answer(store, people, queue_id, {"alice": [{"label": v} for v in "abca"]})
    _answer(store, people, queue_id, {"bob": [{"label": v} for v in "abcb"]})  # item 4 differs
    first = apply_feedback(store, "check")
    assert (first.added, first.replaced, first.unchanged) == (3, 0, 0)
    assert first.skipped == {"disagreement": 1} and first.splits == {"unsplit": 3}
    again = apply_feedback(store, "check")
    assert (again.added, again.replaced, again.unchanged) == (0, 0, 3)

    def human_labels() -> list[tuple[int, Any, str]]:
        with store.transaction() as s:
            rows = s.execute(
                select(Label.record_id, Label.value, Label.status)
                .where(Label.source == "human")
                .order_by(Label.id)
            )
            return [(r, v, st) for r, v, st in rows]

    assert [(r, v) for r, v, st in human_labels() if st == "accepted"] == [
        (ids[0], "a"),
        (ids[1], "b"),
        (ids[2], "c"),
    ]
    items = items_of(store, queue_id)
    adjudicate(store, people["rita"], queue_id, items[0].id, {"label": "c"}, "on reflection")
    changed = apply_feedback(store, "check")
    assert (changed.added, changed.replaced, changed.unchanged) == (0, 1, 2)
    accepted = {r: v for r, v, st in human_labels() if st == "accepted"}
    assert accepted[ids[0]] == "c" and len(accepted) == 3
    # a correction that is no label of the dataset: one error, nothing written
    fixed = create_queue(
        store,
        QueueSpec("fixed", "correction", dataset="abc", members=["alice"]),
        [
            NewItem(ids[4], [{"model": "m", "text": "a"}]),
            NewItem(ids[5], [{"model": "m", "text": "a"}]),
        ],
    ).id
    _answer(store, people, fixed, {"alice": [{"text": "b"}, {"text": "positive"}]})
    before = human_labels()
    with pytest.raises(
        UserError,
        match=r"queue 'fixed' item 2: the answer 'positive' is not a label of abc@1 \(a, b, c\)",
    ):
        apply_feedback(store, "fixed")
    assert human_labels() == before
    with pytest.raises(UserError, match="feedback apply takes label and correction queues"):
        apply_feedback(store, str(_ranking_queue(store)[0]))


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_select_export_apply(cli: CLI, abc: None, tmp_path: Path) -> None:
    code, out, err = cli(
        "feedback", "select", "--model", "fake", "--dataset", "abc", "--split", "unsplit",
        "--n", "3", "--queue", "hard",
    )  # fmt: skip
    assert code == 0, err
    assert "queue hard (id 1): 3 label items, the hardest by uncertainty" in out
    code, out, err = cli(
        "feedback", "select", "--model", "fake", "--dataset", "abc", "--split", "unsplit",
        "--n", "3", "--queue", "hard", "--json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["reused"] is True and len(data["chosen"]) == 3
    code, _, err = cli(
        "feedback", "select", "--model", "fake", "--dataset", "abc", "--strategy", "x"
    )
    assert code == 1 and "unknown strategy 'x'" in err
    code, _, err = cli("feedback", "apply", "--queue", "hard")
    assert code == 0, err
    code, out, err = cli("feedback", "apply", "--queue", "nope")
    assert code == 1 and "no queue 'nope'" in err
    code, _, err = cli("feedback", "export", "--queue", "hard", "--kind", "sft", "--out", "x.jsonl")
    assert code == 1 and "queue 'hard' has nothing to export as sft yet (3 unanswered)" in err


# --- the whole round, on the tiny model ---------------------------------------------------------


def test_feedback_round_on_the_tiny_model(
    cli: CLI, store: Store, tmp_path: Path, tiny_base: Path
) -> None:
    """Train a student, select the training records it is least sure of, two annotators answer
    in the web app (a reviewer settles their disagreement), apply, export, retrain on the mix
    (the human labels win), and compare both models on the validation split with intervals."""
    pytest.importorskip("trl")
    from fastapi.testclient import TestClient

    from tuneloop.web.app import create_app

    rows = [
        {"id": f"r{i}", "text": f"film {i} was {'good' if i % 2 else 'bad'}",
         "label": "pos" if i % 2 else "neg"}
        for i in range(60)
    ]  # fmt: skip
    import_rows(
        cli, tmp_path, "reviews", rows, "--task", "classification", "--split", "0.5,0.25,0.25",
        "--gold", "8",
    )  # fmt: skip
    add_people(store)
    train = ("train", "sft", "--dataset", "reviews", "--base", str(tiny_base), "--max-steps", "2",
             "--batch-size", "4", "--threads", "1")  # fmt: skip
    code, out, err = cli(*train, "--labels", "gold", "--name", "student")
    assert code == 0, err

    # the 6 training records the student is least sure of, as a label queue for two people
    code, out, err = cli(
        "feedback", "select", "--model", "student", "--split", "train", "--strategy",
        "uncertainty", "--n", "6", "-k", "2", "--assign", "alice,bob", "--queue", "hard", "--json",
    )  # fmt: skip
    assert code == 0, err
    selected = json.loads(out)
    assert len(selected["chosen"]) == 6 and selected["question"] == "label"
    margins = [c["margin"] for c in selected["chosen"]]
    assert margins == sorted(margins)  # lowest margin first
    with store.transaction() as s:
        train_size = s.scalar(select(func.count()).where(Record.split == "train")) or 0
        assert selected["scored"] == train_size

    # alice and bob answer through the JSON API; they disagree on the first item
    queue_id = selected["queue_id"]
    app = create_app(store)
    given: dict[str, list[tuple[int, str]]] = {}
    for name in ("alice", "bob"):
        with TestClient(app) as client:
            me = client.post("/api/login", json={"username": name, "password": PASSWORD})
            assert me.status_code == 200, me.text
            headers = {"X-CSRF-Token": me.json()["csrf_token"]}
            while True:
                item = client.get(f"/api/queues/{queue_id}/next", headers=headers).json()["item"]
                if item is None:
                    break
                assert GOLD not in json.dumps(item) and set(item["inputs"]) == {"text"}
                label = "neg" if name == "bob" and not given.get(name) else "pos"
                answered = client.post(
                    f"/api/queues/{queue_id}/items/{item['item_id']}/answer",
                    json={"value": {"label": label}},
                    headers=headers,
                )
                assert answered.status_code == 200, answered.text
                given.setdefault(name, []).append((item["item_id"], label))
    assert len(given["alice"]) == len(given["bob"]) == 6
    with TestClient(app) as client:
        me = client.post("/api/login", json={"username": "rita", "password": PASSWORD})
        headers = {"X-CSRF-Token": me.json()["csrf_token"]}
        disputed = client.get(f"/api/queues/{queue_id}/disagreements", headers=headers).json()
        assert [d["item_id"] for d in disputed] == [given["bob"][0][0]]
        decided = client.post(
            f"/api/queues/{queue_id}/items/{disputed[0]['item_id']}/adjudicate",
            json={"value": {"label": "neg"}, "note": "it says bad"},
            headers=headers,
        )
        assert decided.status_code == 200, decided.text

    # the answers become human labels (once), and SFT records
    code, out, err = cli("feedback", "apply", "--queue", "hard")
    assert code == 0, err
    assert "6 human labels added, 0 replaced, 0 unchanged" in out and "train 6" in out
    code, out, err = cli("feedback", "apply", "--queue", "hard")
    assert code == 0 and "0 human labels added, 0 replaced, 6 unchanged" in out
    code, out, err = cli(
        "feedback",
        "export",
        "--queue",
        "hard",
        "--kind",
        "sft",
        "--out",
        str(tmp_path / "sft.jsonl"),
    )
    assert code == 0 and "wrote 6 sft records from 6 items of queue hard" in out

    # retrain from the same base on the mix: the human labels win over the references
    code, out, err = cli(*train, "--labels", "mix", "--name", "student2")
    assert code == 0, err
    assert f"examples by label source: human 6, gold {train_size - 6}" in out
    with store.transaction() as s:
        from tuneloop.store.models import ModelEntry

        entry = s.scalars(select(ModelEntry).where(ModelEntry.name == "student2")).one()
        assert entry.label_sources["counts"] == {"human": 6, "gold": train_size - 6, "llm": 0}

    # both models on the validation split, compared item by item with intervals
    for name in ("student", "student2"):
        code, _, err = cli("eval", "--model", name, "--dataset", "reviews", "--split", "validation")
        assert code == 0, err
    code, out, err = cli(
        "eval", "compare", "student", "student2", "--dataset", "reviews", "--split",
        "validation", "--json", "--resamples", "200",
    )  # fmt: skip
    assert code == 0, err
    (comparison,) = json.loads(out)
    with store.transaction() as s:
        validation = s.scalar(select(func.count()).where(Record.split == "validation"))
    assert comparison["n"] == validation and comparison["metric"] == "accuracy"
    assert (comparison["a"], comparison["b"]) == ("student (chat format)", "student2 (chat format)")
    diff = comparison["diff"]
    assert diff["low"] <= diff["value"] <= diff["high"]
    assert {"only_a", "only_b", "p_value"} <= set(comparison["mcnemar"])
    assert comparison["verdict"]


# --- the README section's commands --------------------------------------------------------------

SECTION = "## Feedback on the model"
SHOWN = ("imported ", "wrote ", "error: ")


def test_readme_section_commands_run(
    cli: CLI, store: Store, tmp_path: Path, tiny_base: Path
) -> None:
    """Every ``$ tuneloop`` line of README's feedback walkthrough runs in order (console and
    text blocks), after what the README has made by then (the student trained from the tiny
    base instead of SmolLM2); people answer where the section says they do; shown output lines
    appear. (The other strategies at its end have a test each above.)"""
    import shlex
    import shutil

    pytest.importorskip("trl")
    root = Path(__file__).resolve().parents[1]
    shutil.copytree(root / "examples", tmp_path / "examples")
    before = [
        "init --name movies",
        "data import examples/reviews.jsonl --task classification --map text=review "
        "--map label=sentiment --split 0.5,0.25,0.25 --gold 4",
        f"train sft --dataset reviews --name reviews-student --labels mix --max-steps 4 "
        f"--batch-size 2 --base {tiny_base} --threads 1",
    ]
    for line in before:
        code, out, err = cli(*shlex.split(line))
        assert code == 0, (line, out, err)
    people = add_people(store)
    steps: list[tuple[list[str], list[str]]] = []
    readme = (root / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    walkthrough = section.split("Other ways to pick items")[0]  # those: tests above
    for block in re.findall(r"```(?:console|text)\n(.*?)```", walkthrough, flags=re.S):
        for text in block.splitlines():
            if text.startswith("$ tuneloop "):
                steps.append((shlex.split(text[2:])[1:], []))
            elif steps and text.startswith(SHOWN):
                steps[-1][1].append(text)
    assert len(steps) >= 12
    for args, shown in steps:
        if args == ["web"]:  # people answer; a reviewer settles the one disagreement
            hard = _queue_id(store, "reviews-hard")
            _answer(store, people, hard, {"alice": [{"label": "positive"}] * 3})
            _answer(
                store, people, hard, {"bob": [{"label": "negative"}] + [{"label": "positive"}] * 2}
            )
            first = items_of(store, hard)[0]
            adjudicate(store, people["rita"], hard, first.id, {"label": "negative"})
            rank = _queue_id(store, "reviews-rank")
            _answer(store, people, rank, {"alice": [{"ranking": [0, 1, 2]}] * 3})
            continue
        if args[:2] == ["train", "sft"]:
            args = [*args, "--threads", "1"]
        code, out, err = cli(*args)
        expect_error = any(s.startswith("error: ") for s in shown)
        assert code == (1 if expect_error else 0), (args, out, err)
        for line in shown:
            assert line in (err if line.startswith("error: ") else out).splitlines(), (args, out)
        if args[:2] == ["train", "sft"]:
            assert "human 3" in out, out
        if args[:2] == ["eval", "compare"]:
            assert "reviews-student-2" in out and "difference vs reviews-student" in out


def _queue_id(store: Store, name: str) -> int:
    from tuneloop.store.models import Queue

    with store.transaction() as s:
        found = s.scalar(select(Queue.id).where(Queue.name == name))
    assert found is not None
    return found
