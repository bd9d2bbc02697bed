"""Annotation queues: creation, the assignment policy, answering (skip, undo, progress), what
an annotator may see, agreement (the metrics' own numbers), adjudication, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.conftest import CLI
from tests.people import (
    GOLD,
    PASSWORD,
    add_llm_labels,
    add_people,
    answer_counts_agree,
    fast_hashing,  # noqa: F401
    import_answers,
    import_reviews,
    record_ids,
)
from tuneloop.errors import Conflict, Forbidden, NotFound, UserError
from tuneloop.metrics.agreement import agreement
from tuneloop.store.db import Store, open_store
from tuneloop.store.models import Answer, QueueItem
from tuneloop.workflows.answering import (
    next_item,
    open_item,
    progress,
    reset_skips,
    skip,
    submit,
    undo_last,
)
from tuneloop.workflows.queue_items import NewItem, dataset_items
from tuneloop.workflows.queues import (
    QueueSpec,
    assign,
    create_queue,
    list_queues,
    show_queue,
    update_queue,
)
from tuneloop.workflows.review import (
    adjudicate,
    disagreements,
    queue_agreement,
    resolved,
    review_item,
)
from tuneloop.workflows.users import Actor, list_users

pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def world(cli: CLI, db_url: str, tmp_path: Path) -> tuple[Store, dict[str, Actor]]:
    import_reviews(cli, tmp_path)
    import_answers(cli, tmp_path)
    store = open_store(db_url)
    people = add_people(store)
    yield store, people
    store.dispose()


def _label_queue(store: Store, k: int = 2, **kw: object) -> int:
    items = dataset_items(store, "reviews")
    spec = QueueSpec(
        name=str(kw.pop("name", "sentiment")),
        question="label",
        dataset="reviews",
        annotators_per_item=k,
        members=["alice", "bob", "carol", "rita"],
        guidelines="Positive or negative?",
        **kw,  # type: ignore[arg-type]
    )
    return create_queue(store, spec, items).id


def test_create_from_dataset_leaves_gold_out_and_checks_input(
    world: tuple[Store, dict[str, Actor]],
) -> None:
    store, _ = world
    queue_id = _label_queue(store)
    info = show_queue(store, None, queue_id)
    assert info.items == 10  # 12 records, the 2-record gold slice left out
    assert info.options == {"labels": ["pos", "neg"]}  # from the dataset
    assert info.members == ["alice", "bob", "carol", "rita"]
    assert len(dataset_items(store, "reviews", n=4, seed=1)) == 4
    assert len(dataset_items(store, "reviews", ids=["r3", "r5"])) == 2
    with pytest.raises(UserError, match="no record with id 'nope'"):
        dataset_items(store, "reviews", ids=["nope"])
    with pytest.raises(UserError, match="exists already"):
        _label_queue(store)
    with pytest.raises(UserError, match="unknown question type 'poll'"):
        create_queue(store, QueueSpec("q2", "poll"), [NewItem(1)])
    with pytest.raises(UserError, match="needs labels"):
        create_queue(store, QueueSpec("q2", "label"), [NewItem(1)])
    with pytest.raises(UserError, match="item 1: a pairwise item needs exactly 2 response"):
        create_queue(
            store,
            QueueSpec("q2", "pairwise", dataset="answers"),
            [NewItem(record_ids(store, "answers")[0])],
        )
    with pytest.raises(NotFound, match="no user 'zed'"):
        create_queue(
            store,
            QueueSpec("q2", "feedback", members=["zed"]),
            [NewItem(record_ids(store, "answers")[0])],
        )
    with pytest.raises(UserError, match="no record 99999"):
        create_queue(store, QueueSpec("q2", "feedback"), [NewItem(99999)])
    assert [q.name for q in list_queues(store, None)] == ["sentiment"]  # nothing half-written


def test_policy_distinct_annotators_per_item(world: tuple[Store, dict[str, Actor]]) -> None:
    store, p = world
    queue_id = _label_queue(store, k=2)
    a, b, c = (next_item(store, p[n], queue_id) for n in ("alice", "bob", "carol"))
    assert a is not None and b is not None and c is not None
    assert a.item_id == b.item_id != c.item_id  # two people hold item 1; carol gets item 2
    assert next_item(store, p["alice"], queue_id).item_id == a.item_id  # held: same again
    submit(store, p["alice"], queue_id, a.item_id, {"label": "pos"})
    submit(store, p["bob"], queue_id, b.item_id, {"label": "neg"})
    with pytest.raises(Conflict, match="has its 2 answer"):
        submit(store, p["carol"], queue_id, a.item_id, {"label": "pos"})
    # a second submit replaces the person's answer
    submit(store, p["alice"], queue_id, a.item_id, {"label": "neg"})
    with store.transaction() as session:
        values = session.scalars(
            select(Answer.value).where(Answer.queue_item_id == a.item_id).order_by(Answer.id)
        ).all()
    assert values == [{"label": "neg"}, {"label": "neg"}]
    with pytest.raises(UserError, match="label 'meh' is not one of"):
        submit(store, p["alice"], queue_id, c.item_id, {"label": "meh"})
    # answering the whole queue: every item ends with exactly two distinct people
    for name in ("alice", "bob", "carol") * 10:
        item = next_item(store, p[name], queue_id)
        if item is not None:
            submit(store, p[name], queue_id, item.item_id, {"label": "pos"})
    with store.transaction() as session:
        rows = session.execute(
            select(QueueItem.id, Answer.user_id)
            .join(Answer, Answer.queue_item_id == QueueItem.id)
            .where(QueueItem.queue_id == queue_id)
        ).all()
    per_item: dict[int, set[int]] = {}
    for item_id, user_id in rows:
        per_item.setdefault(item_id, set()).add(user_id)
    assert len(per_item) == 10 and all(len(users) == 2 for users in per_item.values())
    prog = progress(store, p["alice"], queue_id)
    assert (prog.items, prog.complete, prog.answers, prog.left_for_me) == (10, 10, 20, 0)
    assert prog.per_annotator == {}  # an annotator sees no one else's counts
    prog = progress(store, p["rita"], queue_id)
    assert sum(prog.per_annotator.values()) == 20 and set(prog.per_annotator) == {
        "alice",
        "bob",
        "carol",
    }


def test_skip_undo_and_progress(world: tuple[Store, dict[str, Actor]]) -> None:
    store, p = world
    alice = p["alice"]
    queue_id = _label_queue(store, k=1)
    first = next_item(store, alice, queue_id)
    assert first is not None and first.position == 1 and first.total == 10
    skip(store, alice, queue_id, first.item_id)
    second = next_item(store, alice, queue_id)
    assert second is not None and second.position == 2
    submit(store, alice, queue_id, second.item_id, {"label": "pos"})
    third = next_item(store, alice, queue_id)
    assert third is not None and third.position == 3
    mine = progress(store, alice, queue_id)
    assert (mine.mine, mine.skipped, mine.left_for_me, mine.per_annotator) == (1, 1, 8, {})
    # undo: the last answer goes back to a held draft and is served next
    assert answer_counts_agree(store) == 1
    assert undo_last(store, alice, queue_id) == second.item_id
    assert answer_counts_agree(store) == 0
    again = next_item(store, alice, queue_id)
    assert again is not None and again.item_id == second.item_id
    assert again.answer == {"label": "pos"}
    assert progress(store, alice, queue_id).mine == 0
    assert undo_last(store, alice, queue_id) is None
    submit(store, alice, queue_id, second.item_id, {"label": "neg"})
    # skipped items come back after a reset; before, the queue runs out without them
    for _ in range(10):
        item = next_item(store, alice, queue_id)
        if item is None:
            break
        submit(store, alice, queue_id, item.item_id, {"label": "neg"})
    assert next_item(store, alice, queue_id) is None
    assert reset_skips(store, alice, queue_id) == 1
    back = next_item(store, alice, queue_id)
    assert back is not None and back.item_id == first.item_id
    # an adjudicated answer cannot be undone
    submit(store, alice, queue_id, first.item_id, {"label": "pos"})
    adjudicate(store, p["rita"], queue_id, first.item_id, {"label": "neg"})
    with pytest.raises(Conflict, match="final answer"):
        undo_last(store, alice, queue_id)


def test_annotators_see_only_their_queues_and_no_gold(
    world: tuple[Store, dict[str, Actor]],
) -> None:
    store, p = world
    queue_id = _label_queue(store, k=2)
    ids = record_ids(store, "answers")
    rated = create_queue(
        store,
        QueueSpec("rate", "rating", dataset="answers", members=["alice"], annotators_per_item=2),
        [NewItem(i, [{"model": "secret-model", "text": f"response {i}"}]) for i in ids],
    ).id
    # carol is not assigned to "rate": it does not exist for her; rita (reviewer) sees it
    assert [q.name for q in list_queues(store, p["carol"])] == ["sentiment"]
    assert {q.name for q in list_queues(store, p["rita"])} == {"sentiment", "rate"}
    for call in (
        lambda: show_queue(store, p["carol"], rated),
        lambda: next_item(store, p["carol"], rated),
        lambda: open_item(store, p["carol"], rated, 1),
        lambda: progress(store, p["carol"], rated),
        lambda: submit(store, p["carol"], rated, 1, {"rating": 3}),
    ):
        with pytest.raises(NotFound):
            call()
    with pytest.raises(Forbidden, match="not assigned"):
        next_item(store, p["ada"], rated)  # admins see all but answer only where assigned
    for who in ("alice", "carol"):
        with pytest.raises(Forbidden):
            queue_agreement(store, p[who], queue_id)
        with pytest.raises(Forbidden):
            disagreements(store, p[who], queue_id)
        with pytest.raises(Forbidden):
            adjudicate(store, p[who], queue_id, 1, {"label": "pos"})
        with pytest.raises(Forbidden):
            assign(store, p[who], queue_id, add=["bob"])
    # what alice sees of an open-QA item: the question and the response, never the reference
    # answer, the model's name, or bob's answer
    view = next_item(store, p["alice"], rated)
    assert view is not None
    shown = json.dumps(view.to_dict())
    assert GOLD not in shown and "secret-model" not in shown
    assert view.inputs == {"question": "question 0?"}
    assert view.responses == [{"name": "A", "text": f"response {ids[0]}"}]
    assert view.options["rubric"]["5"].startswith("excellent")
    assert view.task == "open_qa"


def test_suggestions_only_where_the_queue_shows_them(
    world: tuple[Store, dict[str, Actor]],
) -> None:
    store, p = world
    add_llm_labels(store, record_ids(store, "reviews"), "pos")
    hidden = _label_queue(store, k=1)
    shown = _label_queue(store, k=1, name="with-suggestions", show_suggestions=True)
    view = next_item(store, p["alice"], hidden)
    assert view is not None and view.suggestion is None
    assert '"suggestion": null' in json.dumps(view.to_dict())
    assert view.inputs == {"text": view.inputs["text"]}  # no gold label field
    view = next_item(store, p["alice"], shown)
    assert view is not None and view.suggestion == {"label": "pos"}
    answer_id = submit(store, p["alice"], shown, view.item_id, {"label": "neg"})
    with store.transaction() as session:
        answer = session.get(Answer, answer_id)
        assert answer is not None and answer.meta == {"suggestion": {"label": "pos"}}
        assert answer.source == "web"
    # the admin switches suggestions off: they disappear from the items
    update_queue(store, p["ada"], shown, show_suggestions=False)
    view = next_item(store, p["alice"], shown)
    assert view is not None and view.suggestion is None


def _answer_all(store: Store, p: dict[str, Actor], queue_id: int, table: dict[str, list]) -> None:
    """Each person answers the items in order with the given values (None: skip)."""
    for name, values in table.items():
        for value in values:
            item = next_item(store, p[name], queue_id)
            assert item is not None
            if value is None:
                skip(store, p[name], queue_id, item.item_id)
            else:
                submit(store, p[name], queue_id, item.item_id, value)


def test_label_agreement_equals_the_metric_and_adjudication(
    world: tuple[Store, dict[str, Actor]],
) -> None:
    store, p = world
    queue_id = _label_queue(store, k=3)
    raw = {
        "alice": ["pos", "pos", "neg", "neg", "pos", "neg"],
        "bob": ["pos", "neg", "neg", "neg", "pos", None],
        "carol": ["pos", "pos", "neg", "pos", "neg", "neg"],
    }
    _answer_all(store, p, queue_id, {n: [v and {"label": v} for v in vs] for n, vs in raw.items()})
    result = queue_agreement(store, p["rita"], queue_id, resamples=200)
    names = ["alice", "bob", "carol"]
    # bob skipped item 6: the table has a missing cell there
    expected_rows: dict[int, list[object]] = {}
    with store.transaction() as session:
        for item_id, user, value in session.execute(
            select(QueueItem.position, Answer.user_id, Answer.value)
            .join(Answer, Answer.queue_item_id == QueueItem.id)
            .where(QueueItem.queue_id == queue_id)
        ):
            row = expected_rows.setdefault(item_id, [None, None, None])
            row[[p[n].id for n in names].index(user)] = value["label"]
    table = [expected_rows[k] for k in sorted(expected_rows)]
    direct = agreement(table, "nominal", rater_names=names, resamples=200)
    assert result.table == table and result.level == "nominal"
    assert result.overall is not None
    assert result.overall.alpha == direct.alpha
    assert [(x.a, x.b, x.kappa, x.n) for x in result.overall.pairs] == [
        (x.a, x.b, x.kappa, x.n) for x in direct.pairs
    ]
    pair = agreement([[r[0], r[1]] for r in table], "nominal", rater_names=names[:2], resamples=200)
    assert result.pair_alpha[("alice", "bob")] == pair.alpha
    as_dict = result.to_dict()
    assert as_dict["agreement"]["pairs"][0]["alpha"] == pair.alpha.to_dict()
    # disagreements: items whose answers differ; the reviewer sets the final answer
    disputed = disagreements(store, p["rita"], queue_id)
    assert [d.position for d in disputed] == [2, 4, 5]
    first = disputed[0]
    assert first.reference in ("pos", "neg") and len(first.answers) == 3
    adjudicate(store, p["rita"], queue_id, first.item_id, {"label": "pos"}, note="clear")
    item = review_item(store, p["rita"], queue_id, first.item_id)
    assert (item.final, item.final_by, item.note) == ({"label": "pos"}, "rita", "clear")
    assert len(disagreements(store, p["rita"], queue_id, include_resolved=False)) == 2
    with pytest.raises(UserError, match="not one of"):
        adjudicate(store, p["rita"], queue_id, first.item_id, {"label": "maybe"})
    final = {r.item_id: r for r in resolved(store, p["ada"], queue_id)}
    assert final[first.item_id].how == "adjudicated"
    assert final[first.item_id].value == {"label": "pos"}
    assert [r.how for r in final.values()].count("unanimous") == 3
    assert [r.how for r in final.values()].count("unanswered") == 4


def test_rating_and_ranking_agreement_are_ordinal(world: tuple[Store, dict[str, Actor]]) -> None:
    store, p = world
    ids = record_ids(store, "answers")
    rate = create_queue(
        store,
        QueueSpec("rate", "rating", members=["alice", "bob"], annotators_per_item=2),
        [NewItem(i, [{"model": "m", "text": f"r{i}"}]) for i in ids],
    ).id
    ratings = {"alice": [1, 2, 3, 4, 5, 5], "bob": [1, 3, 3, 5, 4, 5]}
    _answer_all(store, p, rate, {n: [{"rating": v} for v in vs] for n, vs in ratings.items()})
    result = queue_agreement(store, None, rate, resamples=100)
    direct = agreement(
        [list(r) for r in zip(ratings["alice"], ratings["bob"], strict=True)],
        "ordinal",
        rater_names=["alice", "bob"],
        value_order=[1, 2, 3, 4, 5],
        resamples=100,
    )
    assert result.overall is not None and result.overall.alpha == direct.alpha
    assert result.overall.pairs[0].kappa == direct.pairs[0].kappa
    responses = [{"model": f"m{j}", "text": f"answer {j}"} for j in range(3)]
    rank = create_queue(
        store,
        QueueSpec("rank", "ranking", members=["alice", "bob"], annotators_per_item=2),
        [NewItem(i, responses) for i in ids[:2]],
    ).id
    orders = {"alice": [[0, 1, 2], [2, 1, 0]], "bob": [[0, 2, 1], [2, 1, 0]]}
    _answer_all(store, p, rank, {n: [{"ranking": o} for o in os] for n, os in orders.items()})
    with store.transaction() as session:
        first = session.scalar(select(QueueItem.id).where(QueueItem.queue_id == rank).limit(1))
    assert first is not None
    with pytest.raises(UserError, match="every response index"):
        submit(store, p["alice"], rank, first, {"ranking": [0, 0, 1]})
    result = queue_agreement(store, None, rank, resamples=100)
    # units: (item, response) -> rank; alice ranks item 1 responses 1,2,3; bob 1,3,2
    table = [[1, 1], [2, 3], [3, 2], [3, 3], [2, 2], [1, 1]]
    direct = agreement(
        table, "ordinal", rater_names=["alice", "bob"], value_order=[1, 2, 3], resamples=100
    )
    assert result.table == table and result.overall is not None
    assert result.overall.alpha == direct.alpha
    fb = create_queue(store, QueueSpec("fb", "feedback", members=["alice"]), [NewItem(ids[0])])
    assert queue_agreement(store, None, fb.id).overall is None


def test_queue_cli(cli: CLI, tmp_path: Path) -> None:
    import_reviews(cli, tmp_path)
    import_answers(cli, tmp_path)
    for name, role in (("alice", "annotator"), ("bob", "annotator")):
        (tmp_path / "pw").write_text(PASSWORD)
        assert (
            cli("users", "add", name, "--role", role, "--password-file", str(tmp_path / "pw"))[0]
            == 0
        )
    code, out, err = cli(
        "queue",
        "create",
        "sentiment",
        "--dataset",
        "reviews",
        "--question",
        "label",
        "--split",
        "test",
        "-k",
        "2",
        "--assign",
        "alice,bob",
    )
    assert code == 0, err
    assert "sentiment" in out and "2 per item" in out and "alice, bob" in out
    items = tmp_path / "items.jsonl"
    items.write_text(
        json.dumps(
            {"id": "q0", "responses": [{"model": "a", "text": "x"}, {"model": "b", "text": "y"}]}
        )
        + "\n"
        + json.dumps({"id": "q1", "responses": [{"model": "a", "text": "only one"}]})
        + "\n"
    )
    code, _, err = cli(
        "queue",
        "create",
        "pairs",
        "--dataset",
        "answers",
        "--question",
        "pairwise",
        "--items",
        str(items),
    )
    assert code == 1 and f"{items}:2: a pairwise item needs exactly 2 response(s), got 1" in err
    items.write_text(items.read_text().splitlines()[0] + "\n")
    code, out, err = cli(
        "queue",
        "create",
        "pairs",
        "--dataset",
        "answers",
        "--question",
        "pairwise",
        "--items",
        str(items),
    )
    assert code == 0, err
    code, out, err = cli("queue", "assign", "pairs", "--add", "alice", "-k", "1", "--suggestions")
    assert code == 0 and "members alice" in out and "suggestions shown" in out
    code, out, _ = cli("queue", "list", "--json")
    listed = {q["name"]: q for q in json.loads(out)}
    assert listed["pairs"]["items"] == 1 and listed["sentiment"]["annotators_per_item"] == 2
    store = open_store(cli.db_url)
    try:
        people = {u.username: Actor(u.id, u.username, u.role) for u in list_users(store)}
        queue_id = listed["sentiment"]["id"]
        for name, label in (("alice", "pos"), ("bob", "neg"), ("alice", "pos"), ("bob", "pos")):
            item = next_item(store, people[name], queue_id)
            assert item is not None
            submit(store, people[name], queue_id, item.item_id, {"label": label})
    finally:
        store.dispose()
    code, out, err = cli("queue", "agreement", "sentiment", "--json", "--resamples", "50")
    assert code == 0, err
    data = json.loads(out)
    assert data["level"] == "nominal" and data["agreement"]["raters"] == ["alice", "bob"]
    code, out, _ = cli("queue", "show", "sentiment")
    assert code == 0 and "2 distinct people per item" in out and "alice" in out
    code, _, err = cli("queue", "show", "nope")
    assert code == 1 and "no queue 'nope'" in err


def test_items_file_rows_name_the_line(cli: CLI, tmp_path: Path) -> None:
    import_answers(cli, tmp_path)
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "q0"}\n{"id": "missing"}\n')
    code, _, err = cli(
        "queue",
        "create",
        "fb",
        "--dataset",
        "answers",
        "--question",
        "feedback",
        "--items",
        str(items),
    )
    assert code == 1 and f"{items}:2: field 'id': no record 'missing'" in err
    items.write_text('{"id": "q0", "colour": 1}\n')
    code, _, err = cli(
        "queue",
        "create",
        "fb",
        "--dataset",
        "answers",
        "--question",
        "feedback",
        "--items",
        str(items),
    )
    assert code == 1 and f"{items}:1: unknown field 'colour'" in err
    items.write_text("not json\n")
    code, _, err = cli(
        "queue",
        "create",
        "fb",
        "--dataset",
        "answers",
        "--question",
        "feedback",
        "--items",
        str(items),
    )
    assert code == 1 and f"{items}:1: not JSON" in err
