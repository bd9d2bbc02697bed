"""People answering at the same moment, on SQLite and PostgreSQL: two annotators submitting the
same item at once never lose or duplicate an answer and never go past the queue's people per
item, through the workflow and through the API; one person's double submit stays one answer;
people asking for their next item at once get different items when one person per item is
asked for.

The workflow's window between its check (how many answers the item has) and its write is
widened with a short sleep, so that without the lock the race would happen every time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.people import PASSWORD, add_people, answer_counts_agree, fast_hashing  # noqa: F401
from tuneloop.errors import Conflict
from tuneloop.store.db import Store
from tuneloop.store.models import Answer, QueueItem
from tuneloop.web.app import create_app
from tuneloop.workflows import answering
from tuneloop.workflows.queue_items import NewItem
from tuneloop.workflows.queues import QueueSpec, create_queue
from tuneloop.workflows.users import Actor

pytestmark = pytest.mark.usefixtures("fast_hashing")

ITEMS = 6


@pytest.fixture
def people(store: Store) -> dict[str, Actor]:
    return add_people(store)


@pytest.fixture
def slow_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer's timestamps are taken between the check and the write: a sleep there
    widens the window in which a second submit could slip through."""
    real = answering._now

    def slow() -> datetime:
        time.sleep(0.02)
        return real()

    monkeypatch.setattr(answering, "_now", slow)


def make_queue(store: Store, per_item: int, members: list[str], n: int = ITEMS) -> list[int]:
    """A label queue of ``n`` items; their ids in order (the queue is the items' queue)."""
    queue_id = create_queue(
        store,
        QueueSpec(
            f"race-{per_item}-{len(members)}",
            "label",
            options={"labels": ["pos", "neg"]},
            annotators_per_item=per_item,
            members=members,
        ),
        [NewItem(None, [{"model": "m", "text": f"text {i}"}]) for i in range(n)],
    ).id
    with store.transaction() as session:
        return list(
            session.scalars(
                select(QueueItem.id)
                .where(QueueItem.queue_id == queue_id)
                .order_by(QueueItem.position)
            )
        )


def queue_of(store: Store, item_id: int) -> int:
    with store.transaction() as session:
        item = session.get(QueueItem, item_id)
        assert item is not None
        return item.queue_id


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released together; each one's result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a submit hung"
    return results


def stored(store: Store, item_id: int) -> list[tuple[int, int, dict[str, Any]]]:
    """(answer id, user id, value) of every answer to the item."""
    with store.transaction() as session:
        rows = session.execute(
            select(Answer.id, Answer.user_id, Answer.value)
            .where(Answer.queue_item_id == item_id)
            .order_by(Answer.id)
        ).all()
    return [(a, u, v) for a, u, v in rows]


@pytest.mark.usefixtures("slow_writes")
def test_two_annotators_one_place(store: Store, people: dict[str, Actor]) -> None:
    items = make_queue(store, 1, ["alice", "bob"])
    queue_id = queue_of(store, items[0])
    alice, bob = people["alice"], people["bob"]
    for item in items:
        results = at_once(
            [
                partial(answering.submit, store, alice, queue_id, item, {"label": "pos"}),
                partial(answering.submit, store, bob, queue_id, item, {"label": "neg"}),
            ]
        )
        won = [(who, r) for who, r in zip((alice, bob), results, strict=True) if isinstance(r, int)]
        lost = [r for r in results if not isinstance(r, int)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], Conflict) and "has its 1 answer(s) already" in str(lost[0])
        who, answer_id = won[0]
        value = {"label": "pos" if who is alice else "neg"}
        assert stored(store, item) == [(answer_id, who.id, value)]
    assert answer_counts_agree(store) == len(items)


@pytest.mark.usefixtures("slow_writes")
def test_three_annotators_two_places(store: Store, people: dict[str, Actor]) -> None:
    names = ["alice", "bob", "carol"]
    items = make_queue(store, 2, names, n=4)
    queue_id = queue_of(store, items[0])
    for item in items:
        results = at_once(
            [
                partial(answering.submit, store, people[name], queue_id, item, {"label": "pos"})
                for name in names
            ]
        )
        ids = sorted(r for r in results if isinstance(r, int))
        assert len(ids) == 2 and sum(isinstance(r, Conflict) for r in results) == 1, results
        rows = stored(store, item)
        assert [a for a, _, _ in rows] == ids
        assert len({u for _, u, _ in rows}) == 2
    assert answer_counts_agree(store) == 2 * len(items)


@pytest.mark.usefixtures("slow_writes")
def test_one_person_submitting_twice_at_once(store: Store, people: dict[str, Actor]) -> None:
    """A double click, or the same item open in two tabs: one answer, the later value."""
    items = make_queue(store, 1, ["alice"], n=3)
    queue_id = queue_of(store, items[0])
    alice = people["alice"]
    for item in items:
        results = at_once(
            [
                partial(answering.submit, store, alice, queue_id, item, {"label": "pos"}),
                partial(answering.submit, store, alice, queue_id, item, {"label": "neg"}),
            ]
        )
        assert all(isinstance(r, int) for r in results), results
        assert results[0] == results[1]
        rows = stored(store, item)
        assert len(rows) == 1 and rows[0][:2] == (results[0], alice.id)
        assert rows[0][2] in ({"label": "pos"}, {"label": "neg"})
    assert answer_counts_agree(store) == len(items)


def test_next_item_at_once_respects_the_quota(store: Store, people: dict[str, Actor]) -> None:
    names = ["alice", "bob", "carol", "rita"]
    items = make_queue(store, 1, names, n=8)
    queue_id = queue_of(store, items[0])
    actors = [people[n] for n in names]
    for _ in range(2):
        views = at_once([partial(answering.next_item, store, a, queue_id) for a in actors])
        served = [v.item_id for v in views]
        assert len(set(served)) == len(actors), served  # nobody shares a one-person item
        sent = at_once(
            [
                partial(answering.submit, store, a, queue_id, i, {"label": "pos"})
                for a, i in zip(actors, served, strict=True)
            ]
        )
        assert all(isinstance(r, int) for r in sent), sent
    assert answering.next_item(store, actors[0], queue_id) is None
    with store.transaction() as session:
        counts = session.execute(
            select(Answer.queue_item_id, func.count()).group_by(Answer.queue_item_id)
        ).all()
    assert sorted(i for i, _ in counts) == sorted(items) and {n for _, n in counts} == {1}
    assert answer_counts_agree(store) == len(items)


@pytest.fixture
def clients(store: Store, people: dict[str, Actor]) -> Iterator[dict[str, tuple[TestClient, str]]]:
    app = create_app(store)
    out: dict[str, tuple[TestClient, str]] = {}
    try:
        for name in ("alice", "bob"):
            client = TestClient(app)
            client.__enter__()
            response = client.post("/api/login", json={"username": name, "password": PASSWORD})
            out[name] = (client, response.json()["csrf_token"])
        yield out
    finally:
        for client, _ in out.values():
            client.__exit__(None, None, None)


def test_api_submits_at_once(store: Store, clients: dict[str, tuple[TestClient, str]]) -> None:
    items = make_queue(store, 1, ["alice", "bob"], n=8)
    queue_id = queue_of(store, items[0])

    def send(name: str, item: int) -> int:
        client, csrf = clients[name]
        response = client.post(
            f"/api/queues/{queue_id}/items/{item}/answer",
            json={"value": {"label": "pos" if name == "alice" else "neg"}},
            headers={"X-CSRF-Token": csrf},
        )
        return response.status_code

    for item in items:
        statuses = at_once([partial(send, "alice", item), partial(send, "bob", item)])
        assert sorted(statuses) == [200, 409], statuses
        assert len(stored(store, item)) == 1
    # and a person's two simultaneous submits of one item are one answer
    more = make_queue(store, 2, ["alice", "bob"], n=2)
    queue_id = queue_of(store, more[0])
    for item in more:
        assert at_once([partial(send, "alice", item), partial(send, "alice", item)]) == [200, 200]
        assert len(stored(store, item)) == 1
