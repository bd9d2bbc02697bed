"""Simulated annotators and the selection experiment: simulated people answer a label queue from
the records' own labels (exactly with noise 0, a seeded share flipped otherwise) through the web
app's answering, within the queue's policy, once; the random strategy draws a seeded uniform
sample without asking the model; and the experiment of bench/selection.py runs end to end on the
tiny model."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import CLI
from tests.people import PASSWORD, add_people, fast_hashing  # noqa: F401
from tests.test_feedback import Scripted, chosen_ids, import_rows, ref
from tuneloop.errors import UserError
from tuneloop.store.db import Store
from tuneloop.store.models import Answer, Label, QueueMember, Record, User
from tuneloop.workflows.answering import next_item, submit
from tuneloop.workflows.feedback import SelectOptions, select_hard
from tuneloop.workflows.feedback_data import apply_feedback
from tuneloop.workflows.feedback_simulate import SimulateOptions, simulate_answers
from tuneloop.workflows.queue_items import NewItem
from tuneloop.workflows.queues import QueueSpec, create_queue, update_queue
from tuneloop.workflows.users import authenticate

pytestmark = pytest.mark.usefixtures("fast_hashing")

LABELS = ("a", "b", "c")


def truth(i: int) -> str:
    return LABELS[i % 3]


@pytest.fixture
def abc40(cli: CLI, tmp_path: Path) -> None:
    """40 records ``s00`` .. ``s39`` with labels a, b, c in turn; the same label also in the
    metadata field ``true``."""
    rows = [
        {"id": f"s{i:02}", "text": f"sentence {i:02}", "label": truth(i), "true": truth(i)}
        for i in range(40)
    ]
    import_rows(cli, tmp_path, "abc", rows, "--task", "classification", "--labels", "a,b,c")


def record_ids(store: Store) -> list[int]:
    with store.transaction() as s:
        return list(s.scalars(select(Record.id).order_by(Record.position)))


def queue(store: Store, name: str, per_item: int = 1, n: int = 40, **spec: Any) -> int:
    items = [NewItem(i) for i in record_ids(store)[:n]]
    spec.setdefault("dataset", "abc")
    return create_queue(
        store, QueueSpec(name, "label", annotators_per_item=per_item, **spec), items
    ).id


def answers(store: Store, queue_id: int) -> list[tuple[str, str, str, str]]:
    """(record, annotator, label, source) of every answer in the queue."""
    from tuneloop.store.models import QueueItem

    with store.transaction() as s:
        rows = s.execute(
            select(Record.external_id, User.username, Answer.value, Answer.source)
            .join(QueueItem, QueueItem.id == Answer.queue_item_id)
            .join(Record, Record.id == QueueItem.record_id)
            .join(User, User.id == Answer.user_id)
            .where(QueueItem.queue_id == queue_id)
            .order_by(Record.external_id, User.username)
        ).all()
    return [(r, u, v["label"], src) for r, u, v, src in rows]


def reference(record: str) -> str:
    return truth(int(record[1:]))


# --- simulated annotators -----------------------------------------------------------------------


def test_noise_zero_answers_the_references(store: Store, abc40: None) -> None:
    q = queue(store, "exact", per_item=2)
    result = simulate_answers(store, SimulateOptions("exact", noise=0.0))
    assert (result.answers, result.flipped, result.items, result.complete) == (80, 0, 40, 40)
    assert result.annotators == result.new_users == ["sim-1", "sim-2"]  # the policy's 2 per item
    assert result.per_annotator == {"sim-1": 40, "sim-2": 40} and result.notes == []
    given = answers(store, q)
    assert len(given) == 80
    assert all(label == reference(r) and source == "simulated" for r, _, label, source in given)
    # the simulated people are annotators of the queue who cannot sign in
    with store.transaction() as s:
        sims = s.scalars(select(User).where(User.username.like("sim-%"))).all()
        assert {(u.role, u.active, u.password_hash) for u in sims} == {("annotator", False, None)}
        members = s.scalar(select(func.count()).where(QueueMember.queue_id == q))
        assert members == 2
    with pytest.raises(UserError, match="wrong username or password"):
        authenticate(store, "sim-1", "", "127.0.0.1")
    # apply makes them human labels, exactly the references
    applied = apply_feedback(store, "exact")
    assert (applied.added, applied.skipped) == (40, {})
    with store.transaction() as s:
        labels = s.execute(
            select(Record.external_id, Label.value).join(Record, Record.id == Label.record_id)
        ).all()
    assert sorted(labels) == sorted((r, reference(r)) for r, *_ in given[::2])


def test_noise_flips_a_seeded_share_to_other_labels(store: Store, abc40: None) -> None:
    queue(store, "half")
    result = simulate_answers(store, SimulateOptions("half", noise=0.5, annotators=1))
    assert result.answers == 40 and result.flipped == 19  # the count for seed 0
    given = answers(store, result.queue_id)
    flipped = [(reference(r), label) for r, _, label, _ in given if label != reference(r)]
    assert len(flipped) == 19 and all(label in LABELS for _, label in flipped)
    assert len(set(flipped)) > 3  # some reference was flipped to each of the other two labels
    # the same seed on another queue of the same records: the same answers; another seed differs
    queue(store, "again")
    simulate_answers(store, SimulateOptions("again", noise=0.5, annotators=1))
    assert [a[:3] for a in answers(store, result.queue_id)] == [
        a[:3] for a in answers(store, queue_id_of(store, "again"))
    ]
    queue(store, "other")
    other = simulate_answers(store, SimulateOptions("other", noise=0.5, annotators=1, seed=4))
    assert answers(store, other.queue_id) != answers(store, result.queue_id)
    assert 12 <= other.flipped <= 28


def queue_id_of(store: Store, name: str) -> int:
    from tuneloop.workflows.queues import resolve_queue

    return resolve_queue(store, name)


def test_policy_people_and_idempotence(store: Store, abc40: None) -> None:
    people = add_people(store)
    q = queue(store, "pair", per_item=2, n=6, members=["alice"])
    # alice answers the first two items herself; a third she holds (working on it now)
    for _ in range(2):
        item = next_item(store, people["alice"], q)
        assert item is not None
        submit(store, people["alice"], q, item.item_id, {"label": "c"})
    held = next_item(store, people["alice"], q)
    assert held is not None
    # one simulated person on a queue that asks two per item: a note, items incomplete
    one = simulate_answers(store, SimulateOptions("pair", noise=0.0, annotators=1))
    assert one.per_annotator == {"sim-1": 6} and one.complete == 2
    assert "asks 2 people per item and 1 simulated annotators answered" in one.notes[0]
    # three simulated people: only as many answers as the policy leaves room for
    three = simulate_answers(store, SimulateOptions("pair", noise=0.0, annotators=3))
    assert three.per_annotator == {"sim-1": 0, "sim-2": 3, "sim-3": 0}
    assert three.new_users == ["sim-2", "sim-3"]
    assert (three.complete, three.items) == (5, 6)  # alice holds the third item
    assert three.notes == [
        "1 items still need answers: people are working on them now (run again when they are done)"
    ]
    per_item = Counter(r for r, *_ in answers(store, q))
    assert max(per_item.values()) == 2
    # alice answers hers; a second run adds nothing more (and nothing twice)
    submit(store, people["alice"], q, held.item_id, {"label": "a"})
    before = answers(store, q)
    again = simulate_answers(store, SimulateOptions("pair", noise=0.0, annotators=3))
    assert (again.answers, again.complete, again.new_users, again.notes) == (0, 6, [], [])
    assert answers(store, q) == before
    # every item has alice's and one simulated answer, or two simulated ones
    assert sorted(Counter(u for _, u, _, _ in before).items()) == [
        ("alice", 3),
        ("sim-1", 6),
        ("sim-2", 3),
    ]


def test_refusals_write_nothing(cli: CLI, store: Store, abc40: None, tmp_path: Path) -> None:
    add_people(store)
    create_queue(
        store,
        QueueSpec("rated", "rating"),
        [NewItem(record_ids(store)[0], [{"model": "m", "text": "x"}])],
    )
    queue(store, "labels", n=4)

    def refused(match: str, **opts: Any) -> None:
        with store.transaction() as s:
            users = s.scalar(select(func.count()).select_from(User))
            given = s.scalar(select(func.count()).select_from(Answer))
        with pytest.raises(UserError, match=match):
            simulate_answers(store, SimulateOptions(**{"queue": "labels", **opts}))
        with store.transaction() as s:
            assert s.scalar(select(func.count()).select_from(User)) == users
            assert s.scalar(select(func.count()).select_from(Answer)) == given

    refused("queue 'rated' asks rating: simulated annotators answer label queues", queue="rated")
    refused("no queue 'nope'", queue="nope")
    refused("--noise is a probability from 0 to 1, got 1.5", noise=1.5)
    refused("--annotators must be 1..20, got 0", annotators=0)
    refused("--reference 'true': give meta.NAME", reference="true")
    refused(
        r"queue 'labels': 4 of 4 items have no metadata field 'missing' to answer from \(item 1 "
        r"\(record 's00'\) first\)",
        reference="meta.missing",
    )
    # a true label that is none of the queue's labels
    create_queue(
        store,
        QueueSpec("ab-only", "label", {"labels": ["a", "b"]}),
        [NewItem(i) for i in record_ids(store)[:3]],
    )
    refused(
        r"queue 'ab-only' item 3 \(record 's02'\): its reference label 'c' is not one",
        queue="ab-only",
    )
    # records without a reference
    import_rows(
        cli, tmp_path, "bare", [{"id": "u1", "text": "no label here"}], "--task", "classification",
        "--labels", "a,b,c",
    )  # fmt: skip
    with store.transaction() as s:
        bare = s.scalar(select(Record.id).where(Record.external_id == "u1"))
    assert bare is not None
    create_queue(store, QueueSpec("bare", "label", {"labels": list(LABELS)}), [NewItem(bare)])
    refused(
        r"queue 'bare': 1 of 1 items have no reference label .* --reference meta.NAME",
        queue="bare",
    )
    # a closed queue; a person who can sign in under a simulated name
    update_queue(store, None, queue_id_of(store, "labels"), status="closed")
    refused("queue 'labels' is closed")
    update_queue(store, None, queue_id_of(store, "labels"), status="open")
    from tuneloop.workflows.users import add_user

    add_user(store, "sim-1", "annotator", PASSWORD)
    refused("user 'sim-1' is a person who can sign in")


def test_reference_from_metadata(store: Store, cli: CLI, tmp_path: Path) -> None:
    """The truth kept in a metadata field (how an experiment keeps it from training)."""
    rows = [{"id": f"m{i}", "text": f"hidden {i}", "secret": truth(i)} for i in range(5)]
    import_rows(cli, tmp_path, "hidden", rows, "--task", "classification", "--labels", "a,b,c")
    with store.transaction() as s:
        ids = list(s.scalars(select(Record.id).where(Record.external_id.like("m%"))))
    create_queue(store, QueueSpec("hidden", "label", dataset="hidden"), [NewItem(i) for i in ids])
    result = simulate_answers(store, SimulateOptions("hidden", noise=0.0, reference="meta.secret"))
    assert result.answers == 5
    assert [label for *_, label, _ in answers(store, result.queue_id)] == [
        truth(i) for i in range(5)
    ]


def test_cli_simulate(cli: CLI, store: Store, abc40: None) -> None:
    queue(store, "cli", n=10)
    code, out, err = cli("feedback", "simulate", "--queue", "cli", "--noise", "0")
    assert code == 0, err
    assert "queue cli: 10 simulated answers from sim-1 (0 flipped, noise 0); 10 of 10 items" in out
    assert "new simulated annotators (no password, cannot sign in): sim-1" in out
    code, out, err = cli("feedback", "simulate", "--queue", "cli", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["answers"], data["complete"], data["new_users"]) == (0, 10, [])
    code, _, err = cli("feedback", "simulate", "--queue", "cli", "--noise", "-1")
    assert code == 1 and "--noise is a probability from 0 to 1, got -1" in err


# --- the random strategy ------------------------------------------------------------------------


def test_random_draws_a_seeded_sample_without_asking_the_model(store: Store, abc40: None) -> None:
    model = Scripted("student", probs=lambda t: {"a": 0.5, "b": 0.3, "c": 0.2})
    opts = SelectOptions(dataset="abc", split="unsplit", strategy="random", n=5, queue="r1")
    first = select_hard(store, opts, [ref(store, model)])
    assert model.calls == 0 and first.scored == 0  # a label queue shows no answer
    assert len(set(chosen_ids(first))) == 5
    hardness = [c["hardness"] for c in first.chosen]
    assert hardness == sorted(hardness, reverse=True) and all(0 <= h < 1 for h in hardness)
    # the same seed again: the same draw
    same = SelectOptions(
        dataset="abc", split="unsplit", strategy="random", n=5, queue="r2", include_queued=True
    )
    assert chosen_ids(select_hard(store, same, [ref(store, model)])) == chosen_ids(first)
    # the next draw leaves out what was asked and goes on in the same random order
    more = SelectOptions(dataset="abc", split="unsplit", strategy="random", n=3, queue="r3")
    eight = SelectOptions(
        dataset="abc", split="unsplit", strategy="random", n=8, queue="r4", include_queued=True
    )
    nxt = chosen_ids(select_hard(store, more, [ref(store, model)]))
    assert chosen_ids(first) + nxt == chosen_ids(select_hard(store, eight, [ref(store, model)]))
    # another seed: another draw
    other = SelectOptions(
        dataset="abc", split="unsplit", strategy="random", n=5, seed=1, include_queued=True
    )
    assert chosen_ids(select_hard(store, other, [ref(store, model)])) != chosen_ids(first)
    # a rating queue shows the model's answer: the model answers the drawn records only
    rated = SelectOptions(
        dataset="abc", split="unsplit", strategy="random", n=4, question="rating", seed=2
    )
    result = select_hard(store, rated, [ref(store, model)])
    assert model.calls == 4 and result.scored == 4
    assert all(c["answer"] == "a" for c in result.chosen)


# --- the experiment of bench/selection.py, on the tiny model -------------------------------------


def test_selection_experiment_on_the_tiny_model(
    cli: CLI, store: Store, tmp_path: Path, tiny_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Start model on noisy LLM labels, then uncertainty and random rounds of simulated human
    labels, each retrained and evaluated; tables, plot and paired differences come out (the
    accuracies of a tiny random model mean nothing: only the structure is checked)."""
    pytest.importorskip("trl")
    from bench.selection import Config, command, estimate, main, run

    rows = [
        {"id": f"f{i:02}", "text": f"film {i} was {'good' if i % 2 else 'bad'}",
         "label": "pos" if i % 2 else "neg"}
        for i in range(30)
    ]  # fmt: skip
    import_rows(cli, tmp_path, "films", rows, "--task", "classification", "--labels", "pos,neg")
    cfg = Config(
        data="films",
        base=str(tiny_base),
        pool=12,
        validation=8,
        budgets=(2, 4),
        max_steps=2,
        batch_size=4,
        threads=1,
        resamples=100,
    )
    work = tmp_path / "work"
    said: list[str] = []
    outcome = run(store, cfg, work, say=said.append)

    assert [(p.strategy, p.n) for p in outcome.points] == [
        ("start", 0),
        ("uncertainty", 2),
        ("uncertainty", 4),
        ("random", 2),
        ("random", 4),
    ]
    # each model learnt from the human labels its strategy bought, the LLM labels elsewhere
    assert [(p.human_used, p.llm_used) for p in outcome.points] == [
        (0, 12),
        (2, 10),
        (4, 8),
        (2, 10),
        (4, 8),
    ]
    assert all(p.human_wrong <= p.human_used for p in outcome.points)
    for p in outcome.points:
        acc = p.accuracy
        assert acc["low"] is not None and acc["high"] is not None and acc["value"] is not None
        assert acc["low"] <= acc["value"] <= acc["high"]
        assert (p.vs_start is None) == (p.strategy == "start")
    assert [(c.n, c.strategy, c.baseline) for c in outcome.paired] == [
        (2, "uncertainty", "random"),
        (4, "uncertainty", "random"),
    ]
    for c in outcome.paired:
        assert c.diff["low"] is not None and c.diff["high"] is not None
        assert c.diff["low"] <= (c.diff["value"] or 0.0) <= c.diff["high"]
        assert c.only_baseline is not None and c.verdict
    assert 0.0 < outcome.llm_label_accuracy <= 1.0
    # the human labels are simulated answers, on the strategies' own copies of the pool
    with store.transaction() as s:
        sources = Counter(s.scalars(select(Answer.source)))
        humans = s.scalar(select(func.count()).where(Label.source == "human"))
    assert sources == {"simulated": 8} and humans == 8
    # the tables
    first, second = outcome.table.split("\n\n")
    lines = first.splitlines()
    assert lines[0].startswith("| strategy | N human labels | accuracy [95% CI] | vs start model")
    assert len(lines) == 2 + 5 and lines[2].startswith("| start | 0 | ")
    assert lines[3].startswith("| uncertainty | 2 | ") and "| 2 (" in lines[3]
    paired = second.splitlines()
    assert paired[0].startswith("| N | difference [95% CI] | paired bootstrap p |")
    assert len(paired) == 2 + 2 and paired[2].startswith("| 2 | uncertainty - random: ")
    # the files next to the results
    files = {k: Path(v) for k, v in outcome.files.items()}
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in files["svg"].read_text()
    assert outcome.table in files["markdown"].read_text()
    assert len(json.loads(files["json"].read_text())["points"]) == 5
    assert any("LLM labels agree with the true labels" in line for line in said)

    # a second run in the workdir redoes nothing; other options there are refused
    from tuneloop.store.models import Run

    with store.transaction() as s:
        runs = s.scalar(select(func.count()).select_from(Run))
    again = run(store, cfg, work, say=said.append)
    assert again.table == outcome.table
    with store.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Run)) == runs
    # the start model with another training seed joins the same workdir: the training noise
    spread = run(store, replace(cfg, spread=1), work, say=said.append)
    # so does another strategy: only its own line is trained, on its own copy of the pool
    more = run(
        store,
        replace(cfg, spread=1, strategies=("uncertainty", "random", "disagreement")),
        work,
        say=said.append,
    )
    lines = [(p.strategy, p.n) for p in more.points]
    assert lines[5:] == [("disagreement", 2), ("disagreement", 4)]
    assert [p.eval_run for p in more.points[:5]] == [p.eval_run for p in outcome.points]
    assert [(c.strategy, c.n) for c in more.paired] == [
        ("uncertainty", 2),
        ("disagreement", 2),
        ("uncertainty", 4),
        ("disagreement", 4),
    ]
    assert [(p.strategy, p.n, p.model) for p in spread.spread] == [("start", 0, "sel-start-seed1")]
    assert (spread.spread[0].human_used, spread.spread[0].llm_used) == (0, 12)
    assert spread.spread[0].vs_start is not None and spread.table.startswith(again.table)
    seeds = spread.table.split("\n\n")[2].splitlines()
    assert seeds[0].startswith("| training seed (start model, same data and labels) |")
    assert seeds[2].startswith("| 0 | ") and seeds[3].startswith("| 1 | ")
    assert spread.table.endswith(".") and "Accuracy range across training seeds: " in spread.table
    assert len(json.loads(Path(spread.files["json"]).read_text())["spread"]) == 1
    with pytest.raises(UserError, match="holds an experiment with other options \\(noise\\)"):
        run(store, Config(**{**cfg.__dict__, "noise": 0.2}), work)

    # the plan and its estimate, without running anything
    seconds, plan = estimate(Config())
    assert 45 * 60 <= seconds <= 75 * 60 and plan[-1].startswith("total: about")
    assert command(Config(pool=96, validation=200, budgets=(12, 24, 48))) == (
        "python bench/selection.py --pool 96 --validation 200 --budgets 12,24,48"
    )
    capsys.readouterr()
    assert main(["--estimate", "--quick", "--workdir", str(tmp_path / "plan")]) == 0
    out = capsys.readouterr().out
    assert "plan: python bench/selection.py --pool 40 --validation 60 --budgets 5,10" in out
    assert "5 training runs" in out and not (tmp_path / "plan" / ".tuneloop").exists()
    assert main(["--budgets", "5,3", "--estimate"]) == 1
    assert "--budgets must rise" in capsys.readouterr().err


# --- the README section's commands ---------------------------------------------------------------

HEADING = "### Simulated people, for experiments"


def test_simulate_section_commands_run(
    cli: CLI, store: Store, tmp_path: Path, tiny_base: Path
) -> None:
    """Every ``$ tuneloop`` line of the section runs in order, after a student trained on the
    README's reviews (from the tiny base instead of SmolLM2), and prints the lines shown."""
    import re
    import shlex
    import shutil

    pytest.importorskip("trl")
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    section = readme.split(HEADING, 1)[1].split("\n## ", 1)[0]
    shutil.copytree(root / "examples", tmp_path / "examples")
    before = [
        "init --name movies",
        "data import examples/reviews.jsonl --task classification --map text=review "
        "--map label=sentiment --split 0.5,0.25,0.25 --gold 4",
        f"train sft --dataset reviews --name reviews-student --labels mix --max-steps 2 "
        f"--batch-size 2 --base {tiny_base} --threads 1",
    ]
    for line in before:
        code, out, err = cli(*shlex.split(line))
        assert code == 0, (line, out, err)
    steps: list[tuple[list[str], list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ tuneloop "):
                steps.append((shlex.split(line[2:])[1:], []))
            elif steps and line.strip():
                steps[-1][1].append(line)
    assert len(steps) >= 4
    for args, shown in steps:
        code, out, err = cli(*args)
        assert code == 0, (args, out, err)
        for line in shown:
            assert line in out.splitlines(), (args, out)
    with store.transaction() as s:
        sources = Counter(s.scalars(select(Answer.source)))
        humans = s.scalar(select(func.count()).where(Label.source == "human"))
    assert set(sources) == {"simulated"} and humans
