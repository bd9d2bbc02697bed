"""An admin creates queues in the web app (the New queue page and POST /api/queues), over the
same workflows as ``tuneloop queue create``: items from a dataset's splits, a seeded sample or
record ids, or from an uploaded items file (responses for pairwise and ranking); every option
of the form lands in the queue; mistakes come back on the form with what was typed kept;
nobody but an admin may create one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import CLI
from tests.people import (
    fast_hashing,  # noqa: F401
    record_ids,
)
from tests.test_web import World, web_world
from tuneloop.store.models import Queue, QueueItem
from tuneloop.workflows.queue_items import dataset_choices, dataset_items

pytestmark = pytest.mark.usefixtures("fast_hashing")


@pytest.fixture
def world(cli: CLI, db_url: str, tmp_path: Path) -> Iterator[World]:
    """Datasets ``reviews`` (classification) and ``answers`` (open QA), people of each role."""
    yield from web_world(cli, db_url, tmp_path)


def form(csrf: str, **fields: Any) -> dict[str, Any]:
    """The new-queue form as a browser sends it with nothing changed, then ``fields``."""
    from tuneloop.questions import DEFAULT_RUBRIC

    base: dict[str, Any] = {
        "csrf_token": csrf,
        "question": "label",
        "annotators_per_item": "1",
        "seed": "0",
        "allow_tie": "1",
        **{f"rubric_{r}": text for r, text in DEFAULT_RUBRIC.items()},
    }
    return {**base, **fields}


def dataset_id(w: World, name: str) -> str:
    """The value of the dataset's option in the form."""
    return str(next(d.id for d in dataset_choices(w.store) if d.ref.startswith(f"{name}@")))


def items_of(w: World, queue_id: int) -> list[tuple[int | None, Any]]:
    with w.store.transaction() as session:
        rows = session.execute(
            select(QueueItem.record_id, QueueItem.responses)
            .where(QueueItem.queue_id == queue_id)
            .order_by(QueueItem.position)
        ).all()
    return [(r, s) for r, s in rows]


def created(response: Any) -> int:
    assert response.status_code == 303, response.text[:3000]
    found = re.fullmatch(r"/admin/queues/(\d+)\?notice=created", response.headers["location"])
    assert found, response.headers["location"]
    return int(found.group(1))


def test_the_form_and_its_link(world: World) -> None:
    ada, _ = world.signed_in("ada")
    page = ada.get("/queues").text
    assert 'href="/admin/queues/new"' in page
    new = ada.get("/admin/queues/new")
    assert new.status_code == 200
    text = new.text
    assert 'enctype="multipart/form-data"' in text and 'name="csrf_token"' in text
    assert "reviews@1: classification, 12 records, labels pos, neg" in text
    assert all(f'value="{q}"' in text for q in ("label", "rating", "pairwise", "ranking"))
    assert 'name="member" value="alice"' in text and "excellent: right, complete" in text
    assert 'name="name" required maxlength="200" autocomplete="off" autofocus' in text
    for name in ("alice", "rita"):
        client, _ = world.signed_in(name)
        assert client.get("/admin/queues/new").status_code == 403
        assert 'href="/admin/queues/new"' not in client.get("/queues").text


def test_label_queue_from_splits(world: World) -> None:
    ada, csrf = world.signed_in("ada")
    response = ada.post(
        "/admin/queues",
        data=form(
            csrf,
            name="sentiment-web",
            dataset=dataset_id(world, "reviews"),
            split=["validation", "test"],
            annotators_per_item="2",
            member=["alice", "bob"],
            show_suggestions="1",
            guidelines="Positive or negative?\r\nAsk if unsure.",
            prompt="How does the reviewer feel?",
        ),
        follow_redirects=False,
    )
    queue_id = created(response)
    info = ada.get(f"/api/queues/{queue_id}").json()
    expected = dataset_items(world.store, "reviews", splits=["validation", "test"])
    assert info == {
        "id": queue_id,
        "name": "sentiment-web",
        "project": "default",
        "question": "label",
        "options": {"labels": ["pos", "neg"], "prompt": "How does the reviewer feel?"},
        "guidelines": "Positive or negative?\nAsk if unsure.",
        "annotators_per_item": 2,
        "show_suggestions": True,
        "status": "open",
        "dataset": "reviews@1",
        "items": len(expected),
        "members": ["alice", "bob"],
    }
    assert [r for r, _ in items_of(world, queue_id)] == [i.record_id for i in expected]
    manage = ada.get(response.headers["location"])
    assert "Queue created." in manage.text
    alice, _ = world.signed_in("alice")
    work = alice.get(f"/queues/{queue_id}").text
    assert "How does the reviewer feel?" in work and f"Item 1 of {len(expected)}" in work


def test_rating_queue_with_a_sample_and_its_own_rubric(world: World) -> None:
    ada, csrf = world.signed_in("ada")
    rubric = {f"rubric_{r}": f"level {r} of 5" for r in range(1, 6)}
    fields = form(
        csrf,
        name="answers-rated",
        question="rating",
        dataset=dataset_id(world, "answers"),
        n="3",
        seed="7",
        labels="ignored,for,ratings",
        member=["carol"],
        **rubric,
    )
    queue_id = created(ada.post("/admin/queues", data=fields, follow_redirects=False))
    info = ada.get(f"/api/queues/{queue_id}").json()
    assert info["options"] == {"rubric": {str(r): f"level {r} of 5" for r in range(1, 6)}}
    sample = dataset_items(world.store, "answers", n=3, seed=7)
    assert [r for r, _ in items_of(world, queue_id)] == [i.record_id for i in sample]
    carol, _ = world.signed_in("carol")
    assert "level 5 of 5" in carol.get(f"/queues/{queue_id}").text


def test_pairwise_and_ranking_from_an_items_file(world: World) -> None:
    ada, csrf = world.signed_in("ada")
    pairs = "\n".join(
        json.dumps(
            {"id": f"q{i}", "responses": [{"model": "a", "text": "x"}, {"model": "b", "text": "y"}]}
        )
        for i in range(3)
    )
    fields = form(
        csrf,
        name="pairs",
        question="pairwise",
        dataset=dataset_id(world, "answers"),
        member=["alice"],
    )
    del fields["allow_tie"]  # the box unticked: no tie
    response = ada.post(
        "/admin/queues",
        data=fields,
        files={"items": ("pairs.jsonl", pairs.encode(), "application/json")},
        follow_redirects=False,
    )
    queue_id = created(response)
    info = ada.get(f"/api/queues/{queue_id}").json()
    assert info["options"] == {"allow_tie": False} and info["items"] == 3
    ids = record_ids(world.store, "answers")
    assert [r for r, _ in items_of(world, queue_id)] == ids[:3]
    # ranking without a dataset: items of responses only, the file with a byte order mark
    three = [{"model": f"m{i}", "text": f"answer {i}"} for i in range(3)]
    lines = "\ufeff" + json.dumps({"responses": three}) + "\n\n" + json.dumps({"responses": three})
    response = ada.post(
        "/admin/queues",
        data=form(csrf, name="ranks", question="ranking", member=["alice", "bob"]),
        files={"items": ("ranks.jsonl", lines.encode(), "application/octet-stream")},
        follow_redirects=False,
    )
    queue_id = created(response)
    assert items_of(world, queue_id) == [(None, three), (None, three)]


@pytest.mark.parametrize(
    ("fields", "upload", "message"),
    [
        ({"name": " ", "dataset": "reviews"}, None, "a queue needs a name"),
        ({}, None, "a queue needs a dataset or an items file"),
        ({"dataset": "999999"}, None, "no dataset with id &#39;999999&#39;"),
        ({"question": "essay", "dataset": "reviews"}, None, "unknown question type"),
        ({"dataset": "reviews", "n": "many"}, None, "the sample size must be a whole number"),
        ({"dataset": "reviews", "annotators_per_item": "0"}, None, "annotators per item must be"),
        ({"dataset": "reviews", "split": ["holdout"]}, None, "unknown split &#39;holdout&#39;"),
        ({"dataset": "reviews", "ids": "r1,nope"}, None, "no record with id &#39;nope&#39;"),
        ({"dataset": "reviews", "member": ["mallory"]}, None, "no user &#39;mallory&#39;"),
        ({"question": "multilabel"}, '{"record_id": 1}', "needs labels"),
        ({"question": "pairwise"}, '{"record_id": 1}', "needs exactly 2 response(s), got 0"),
        ({"question": "rating", "rubric_3": " "}, '{"record_id": 1}', "the rubric describes"),
        ({}, "not json", "items.jsonl:1: not JSON"),
        ({}, '{"id": "r1"}', "items.jsonl:1: field &#39;id&#39; needs a dataset (--dataset)"),
        ({"dataset": "reviews", "n": "2"}, '{"id": "r1"}', "not both"),
        ({}, b"\xff\xfe", "not UTF-8 text"),
        ({}, "", "would have no items"),
    ],
)
def test_mistakes_come_back_on_the_form(
    world: World, fields: dict[str, Any], upload: str | bytes | None, message: str
) -> None:
    ada, csrf = world.signed_in("ada")
    if fields.get("dataset") in ("reviews", "answers"):
        fields = {**fields, "dataset": dataset_id(world, fields["dataset"])}
    data = form(csrf, **{"name": "broken", "guidelines": "KEPT <b>guidelines</b>", **fields})
    files = None
    if upload is not None:
        raw = upload.encode() if isinstance(upload, str) else upload
        files = {"items": ("items.jsonl", raw, "application/json")}
    response = ada.post("/admin/queues", data=data, files=files)
    assert response.status_code == 400, response.text[:2000]
    assert 'id="form-error"' in response.text and message in response.text, response.text[:3000]
    assert "KEPT &lt;b&gt;guidelines&lt;/b&gt;</textarea>" in response.text  # typed text kept
    with world.store.transaction() as session:
        assert session.scalars(select(Queue.name)).all() == []  # nothing half-made


def test_a_name_taken_and_the_values_kept(world: World) -> None:
    ada, csrf = world.signed_in("ada")
    ds = dataset_id(world, "reviews")
    fields = form(csrf, name="twice", dataset=ds, split=["test"], member=["bob"], n="2")
    created(ada.post("/admin/queues", data=fields, follow_redirects=False))
    again = ada.post("/admin/queues", data=fields)
    assert again.status_code == 400 and "exists already" in again.text
    assert 'name="split" value="test" checked' in again.text
    assert 'name="member" value="bob" checked' in again.text
    assert (
        f'<option value="{ds}" selected>' in again.text
        and 'name="n" min="1" value="2"' in again.text
    )


def test_only_admins_with_a_csrf_token(world: World) -> None:
    ds = dataset_id(world, "reviews")
    for name in ("alice", "rita"):
        client, csrf = world.signed_in(name)
        refused = client.post("/admin/queues", data=form(csrf, name=f"by-{name}", dataset=ds))
        assert refused.status_code == 403
        api = client.post(
            "/api/queues",
            json={"name": f"api-{name}", "question": "label", "dataset": "reviews"},
            headers={"X-CSRF-Token": csrf},
        )
        assert api.status_code == 403
    ada, csrf = world.signed_in("ada")
    fields = form(csrf, name="no-token", dataset=ds)
    del fields["csrf_token"]
    assert ada.post("/admin/queues", data=fields).status_code == 403
    forged = ada.post(
        "/admin/queues",
        data={**fields, "csrf_token": "forged"},
        files={"items": ("items.jsonl", b'{"record_id": 1}', "application/json")},
    )
    assert forged.status_code == 403
    no_header = ada.post("/api/queues", json={"name": "x", "question": "label"})
    assert no_header.status_code == 403
    with world.store.transaction() as session:
        assert session.scalars(select(Queue.name)).all() == []


def test_the_api_creates_queues(world: World) -> None:
    ada, csrf = world.signed_in("ada")
    headers = {"X-CSRF-Token": csrf}
    made = ada.post(
        "/api/queues",
        json={
            "name": "api-labels",
            "question": "label",
            "dataset": "reviews",
            "splits": ["train"],
            "n": 3,
            "seed": 1,
            "annotators_per_item": 2,
            "members": ["alice", "bob"],
            "guidelines": "be quick",
        },
        headers=headers,
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["items"], body["members"], body["dataset"]) == (3, ["alice", "bob"], "reviews@1")
    sample = dataset_items(world.store, "reviews", splits=["train"], n=3, seed=1)
    assert [r for r, _ in items_of(world, body["id"])] == [i.record_id for i in sample]
    three = [{"model": f"m{i}", "text": f"answer {i}"} for i in range(3)]
    ranked = ada.post(
        "/api/queues",
        json={
            "name": "api-ranking",
            "question": "ranking",
            "dataset": "answers",
            "items": [{"id": "q1", "responses": three}, {"id": "q2", "responses": three}],
            "members": ["alice"],
        },
        headers=headers,
    )
    assert ranked.status_code == 201 and ranked.json()["items"] == 2
    bad = ada.post(
        "/api/queues",
        json={"name": "bad", "question": "ranking", "items": [{"id": "q1", "responses": three}]},
        headers=headers,
    )
    assert (
        bad.status_code == 400
        and bad.json()["error"] == "items[0]: field 'id' needs a dataset (--dataset)"
    )
    mixed = ada.post(
        "/api/queues",
        json={"name": "mixed", "question": "label", "dataset": "reviews", "n": 2, "items": []},
        headers=headers,
    )
    assert mixed.status_code == 400 and "not both" in mixed.json()["error"]
    taken = ada.post(
        "/api/queues",
        json={"name": "api-labels", "question": "label", "dataset": "reviews"},
        headers=headers,
    )
    assert taken.status_code == 400 and "exists already" in taken.json()["error"]
