"""The web app through FastAPI's TestClient: sign-in, cookies, CSRF, rate limiting, roles, what
annotators may see (pages and API alike), the assignment policy, skip and undo, every question
type's form, agreement equal to the metric's, adjudication, and the admin pages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import CLI
from tests.people import (
    GOLD,
    PASSWORD,
    add_llm_labels,
    add_people,
    fast_hashing,  # noqa: F401
    import_answers,
    import_reviews,
    record_ids,
)
from tuneloop.metrics.agreement import agreement
from tuneloop.store.db import Store, open_store
from tuneloop.store.models import Answer, QueueItem
from tuneloop.web.app import create_app
from tuneloop.workflows import answering, review
from tuneloop.workflows.queue_items import NewItem, dataset_items
from tuneloop.workflows.queues import QueueSpec, create_queue
from tuneloop.workflows.users import Actor

pytestmark = pytest.mark.usefixtures("fast_hashing")


class World:
    def __init__(self, store: Store, people: dict[str, Actor]) -> None:
        self.store = store
        self.people = people
        self.app = create_app(store)
        self.clients: list[TestClient] = []

    def client(self, base_url: str = "http://testserver") -> TestClient:
        client = TestClient(self.app, base_url=base_url)
        client.__enter__()
        self.clients.append(client)
        return client

    def signed_in(self, username: str) -> tuple[TestClient, str]:
        client = self.client()
        return client, login(client, username)

    def close(self) -> None:
        for client in self.clients:
            client.__exit__(None, None, None)


def web_world(cli: CLI, db_url: str, tmp_path: Path) -> Iterator[World]:
    """Datasets ``reviews`` (classification) and ``answers`` (open QA), people of each role,
    the app; closed afterwards (the body of each web test module's ``world`` fixture)."""
    import_reviews(cli, tmp_path)
    import_answers(cli, tmp_path)
    store = open_store(db_url)
    w = World(store, add_people(store))
    yield w
    w.close()
    store.dispose()


@pytest.fixture
def world(cli: CLI, db_url: str, tmp_path: Path) -> Iterator[World]:
    yield from web_world(cli, db_url, tmp_path)


def _token(html: str, pattern: str = r'name="csrf_token" value="([^"]+)"') -> str:
    found = re.search(pattern, html)
    assert found is not None, html[:2000]
    return found.group(1)


def csrf_of(html: str) -> str:
    return _token(html, r'<meta name="csrf-token" content="([^"]+)"')


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the form; the session's CSRF token."""
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": _token(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/queues").text)


def label_queue(w: World, k: int = 2, name: str = "sentiment", **kw: Any) -> int:
    spec = QueueSpec(
        name=name,
        question="label",
        dataset="reviews",
        annotators_per_item=k,
        members=["alice", "bob", "carol", "rita"],
        guidelines="Is the review positive or negative?",
        **kw,
    )
    return create_queue(w.store, spec, dataset_items(w.store, "reviews")).id


def item_of(html: str) -> int:
    return int(_token(html, r'id="item" data-item="(\d+)"'))


def test_login_logout_cookie_flags_and_next(world: World) -> None:
    client = world.client()
    response = client.get("/queues", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/queues"
    assert client.get("/api/queues").status_code == 401
    page = client.get("/login")
    login_cookie = page.headers["set-cookie"]
    assert "HttpOnly" in login_cookie and "SameSite=lax" in login_cookie
    token = _token(page.text)
    wrong = client.post(
        "/login", data={"username": "alice", "password": "nope nope nope", "csrf_token": token}
    )
    assert wrong.status_code == 401 and "wrong username or password" in wrong.text
    assert "tuneloop_session" not in client.cookies
    ok = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": "//evil.com"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/queues"
    cookie = ok.headers["set-cookie"]
    assert "tuneloop_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie.split("tuneloop_login")[0]  # plain http: not Secure
    page = client.get("/queues")
    assert page.status_code == 200 and "alice" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["x-frame-options"] == "DENY"
    # the session's token is stored hashed: the cookie value is not in the database
    session_token = client.cookies["tuneloop_session"]
    with world.store.engine.connect() as conn:
        dumped = json.dumps(
            [list(r) for r in conn.exec_driver_sql("SELECT * FROM web_session")], default=str
        )
    assert session_token not in dumped
    out = client.post("/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303
    assert client.get("/queues", follow_redirects=False).status_code == 303
    # the old cookie is dead even when replayed
    replay = world.client()
    replay.cookies.set("tuneloop_session", session_token)
    assert replay.get("/api/me").status_code == 401
    # a login form posted without its token (cross-site) is refused
    fresh = world.client()
    forged = fresh.post("/login", data={"username": "alice", "password": PASSWORD})
    assert forged.status_code == 403


def test_secure_cookies_over_https(world: World) -> None:
    client = world.client("https://testserver")
    page = client.get("/login")
    assert "Secure" in page.headers["set-cookie"]
    response = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": _token(page.text)},
        follow_redirects=False,
    )
    assert "Secure" in response.headers["set-cookie"]
    forced = create_app(world.store, secure_cookies=True, session_lifetime=timedelta(hours=1))
    with TestClient(forced) as plain:
        page = plain.get("/login")
        assert "Secure" in page.headers["set-cookie"]


def test_login_rate_limit(world: World) -> None:
    client = world.client()
    token = _token(client.get("/login").text)
    for _ in range(5):
        response = client.post(
            "/login", data={"username": "bob", "password": "wrong password", "csrf_token": token}
        )
        assert response.status_code == 401
    blocked = client.post(
        "/login", data={"username": "bob", "password": PASSWORD, "csrf_token": token}
    )
    assert blocked.status_code == 429 and "too many failed sign-ins" in blocked.text
    api = client.post("/api/login", json={"username": "bob", "password": PASSWORD})
    assert api.status_code == 429 and int(api.headers["retry-after"]) > 0
    # others are not locked out
    assert client.post("/api/login", json={"username": "carol", "password": PASSWORD}).is_success


def test_csrf_on_every_state_change(world: World) -> None:
    queue_id = label_queue(world, k=1)
    alice, csrf = world.signed_in("alice")
    item = item_of(alice.get(f"/queues/{queue_id}").text)
    url = f"/queues/{queue_id}/items/{item}/answer"
    assert alice.post(url, data={"label": "pos"}).status_code == 403
    assert alice.post(url, data={"label": "pos", "csrf_token": "forged"}).status_code == 403
    api = f"/api/queues/{queue_id}/items/{item}/answer"
    assert alice.post(api, json={"value": {"label": "pos"}}).status_code == 403
    wrong = alice.post(api, json={"value": {"label": "pos"}}, headers={"X-CSRF-Token": "x"})
    assert wrong.status_code == 403 and "CSRF" in wrong.json()["error"]
    for path in (f"/queues/{queue_id}/undo", f"/queues/{queue_id}/items/{item}/skip", "/logout"):
        assert alice.post(path).status_code == 403
    with world.store.transaction() as session:
        assert session.scalars(select(Answer)).all() == []  # nothing went through
    ok = alice.post(api, json={"value": {"label": "pos"}}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["answer_id"] > 0
    me = alice.get("/api/me").json()
    assert me == {
        "id": world.people["alice"].id,
        "username": "alice",
        "role": "annotator",
        "csrf_token": csrf,
    }


def test_roles_and_unassigned_queues(world: World) -> None:
    queue_id = label_queue(world)
    ids = record_ids(world.store, "answers")
    private = create_queue(
        world.store,
        QueueSpec("private", "feedback", dataset="answers", members=["alice"]),
        [NewItem(i) for i in ids],
    ).id
    carol, csrf = world.signed_in("carol")
    listed = carol.get("/queues").text
    assert "sentiment" in listed and "private" not in listed
    assert [q["name"] for q in carol.get("/api/queues").json()] == ["sentiment"]
    for path in (
        f"/queues/{private}",
        f"/queues/{private}/progress",
        f"/queues/{private}/items/1",
        f"/api/queues/{private}",
        f"/api/queues/{private}/next",
        f"/api/queues/{private}/progress",
    ):
        assert carol.get(path).status_code == 404, path
    sent = carol.post(
        f"/api/queues/{private}/items/1/answer",
        json={"value": {"text": "hi"}},
        headers={"X-CSRF-Token": csrf},
    )
    assert sent.status_code == 404
    for path in (
        f"/queues/{queue_id}/agreement",
        f"/queues/{queue_id}/disagreements",
        f"/api/queues/{queue_id}/agreement",
        f"/api/queues/{queue_id}/disagreements",
        "/admin/users",
        f"/admin/queues/{queue_id}",
        "/api/users",
    ):
        assert carol.get(path).status_code == 403, path
    rita, rita_csrf = world.signed_in("rita")
    assert rita.get(f"/queues/{private}/agreement").status_code == 200
    assert rita.get("/admin/users").status_code == 403
    added = rita.post(
        "/api/users",
        json={"username": "eve", "role": "admin", "password": PASSWORD},
        headers={"X-CSRF-Token": rita_csrf},
    )
    assert added.status_code == 403
    assert "not assigned" in rita.get(f"/queues/{private}").text


def test_annotators_never_see_gold_other_answers_or_llm_labels(world: World) -> None:
    ids = record_ids(world.store, "answers")
    feedback = create_queue(
        world.store,
        QueueSpec(
            "feedback",
            "feedback",
            dataset="answers",
            members=["alice", "bob"],
            annotators_per_item=2,
        ),
        [NewItem(i, [{"model": "secret-model", "text": f"model answer {i}"}]) for i in ids],
    ).id
    bob, bob_csrf = world.signed_in("bob")
    item = bob.get(f"/api/queues/{feedback}/next").json()["item"]
    sent = bob.post(
        f"/api/queues/{feedback}/items/{item['item_id']}/answer",
        json={"value": {"text": "BOB-SECRET-FEEDBACK"}},
        headers={"X-CSRF-Token": bob_csrf},
    )
    assert sent.status_code == 200
    alice, _ = world.signed_in("alice")
    seen = [
        alice.get(f"/queues/{feedback}").text,
        alice.get(f"/queues/{feedback}/items/{item['item_id']}").text,
        alice.get(f"/queues/{feedback}/progress").text,
        alice.get("/queues").text,
        alice.get(f"/api/queues/{feedback}/next").text,
        alice.get(f"/api/queues/{feedback}/items/{item['item_id']}").text,
        alice.get(f"/api/queues/{feedback}/progress").text,
        alice.get(f"/api/queues/{feedback}").text,
        alice.get("/api/queues").text,
    ]
    assert "model answer" in seen[0] and "question 0?" in seen[0]
    for text in seen:
        assert GOLD not in text and "BOB-SECRET" not in text and "secret-model" not in text
    assert 'per_annotator": {}' in seen[6] or '"per_annotator":{}' in seen[6]
    # classification: the gold label field never shows, the LLM label only with suggestions on
    add_llm_labels(world.store, record_ids(world.store, "reviews"), "pos")
    hidden = label_queue(world, k=1)
    shown = label_queue(world, k=1, name="suggested", show_suggestions=True)
    page = alice.get(f"/queues/{hidden}").text
    data = alice.get(f"/api/queues/{hidden}/next").json()["item"]
    assert "LLM suggestion" not in page and data["suggestion"] is None
    assert set(data["inputs"]) == {"text"} and "label" not in data["inputs"]
    page = alice.get(f"/queues/{shown}").text
    assert "LLM suggestion" in page
    assert alice.get(f"/api/queues/{shown}/next").json()["item"]["suggestion"] == {"label": "pos"}


def test_policy_skip_and_undo_through_the_pages(world: World) -> None:
    queue_id = label_queue(world, k=2)
    (alice, a_csrf), (bob, _), (carol, _) = (world.signed_in(n) for n in ("alice", "bob", "carol"))
    a, b, c = (item_of(x.get(f"/queues/{queue_id}").text) for x in (alice, bob, carol))
    assert a == b != c  # two distinct people per item: carol gets the next one
    page = alice.get(f"/queues/{queue_id}").text
    assert "Item 1 of 10" in page and "Is the review positive or negative?" in page
    assert 'data-key="1"' in page and "<kbd>1</kbd> pos" in page
    done = alice.post(
        f"/queues/{queue_id}/items/{a}/answer",
        data={"label": "neg", "csrf_token": a_csrf},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == f"/queues/{queue_id}"
    page = alice.get(f"/queues/{queue_id}").text
    assert item_of(page) == c and 'id="mine">1<' in page  # item 2: carol holds one of two places
    bad = alice.post(
        f"/queues/{queue_id}/items/{c}/answer", data={"label": "meh", "csrf_token": a_csrf}
    )
    assert bad.status_code == 400 and "label &#39;meh&#39; is not one of" in bad.text
    missing = alice.post(f"/queues/{queue_id}/items/{c}/answer", data={"csrf_token": a_csrf})
    assert missing.status_code == 400 and "choose a label" in missing.text
    skipped = alice.post(
        f"/queues/{queue_id}/items/{c}/skip", data={"csrf_token": a_csrf}, follow_redirects=False
    )
    assert skipped.status_code == 303
    page = alice.get(f"/queues/{queue_id}").text
    third = item_of(page)
    assert third not in (a, c) and "Skipped." not in page
    undone = alice.post(f"/queues/{queue_id}/undo", data={"csrf_token": a_csrf})
    assert undone.status_code == 200 and "taken back" in undone.text
    assert item_of(undone.text) == a and 'value="neg" data-key="2" checked' in undone.text
    with world.store.transaction() as session:
        assert session.scalars(select(Answer)).all() == []
    again = alice.post(f"/queues/{queue_id}/undo", data={"csrf_token": a_csrf})
    assert "Nothing to undo" in again.text


def test_api_flow(world: World) -> None:
    queue_id = label_queue(world, k=1)
    client = world.client()
    form_login = client.post("/api/login", data={"username": "alice", "password": PASSWORD})
    assert form_login.status_code in (400, 422)
    response = client.post("/api/login", json={"username": "alice", "password": "wrong one!!"})
    assert response.status_code == 401
    response = client.post("/api/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200 and response.json()["role"] == "annotator"
    headers = {"X-CSRF-Token": response.json()["csrf_token"]}
    first = client.get(f"/api/queues/{queue_id}/next").json()["item"]
    assert first["position"] == 1 and first["question"] == "label"
    url = f"/api/queues/{queue_id}/items/{first['item_id']}"
    bad = client.post(f"{url}/answer", json={"value": {"label": "meh"}}, headers=headers)
    assert bad.status_code == 400 and "is not one of" in bad.json()["error"]
    assert client.post(
        f"{url}/answer", json={"value": {"label": "pos"}}, headers=headers
    ).is_success
    second = client.get(f"/api/queues/{queue_id}/next").json()["item"]
    assert second["position"] == 2
    assert client.post(
        f"/api/queues/{queue_id}/items/{second['item_id']}/skip", headers=headers
    ).is_success
    assert client.get(f"/api/queues/{queue_id}/next").json()["item"]["position"] == 3
    undo = client.post(f"/api/queues/{queue_id}/undo", headers=headers).json()
    assert undo == {"item_id": first["item_id"]}
    back = client.get(f"/api/queues/{queue_id}/next").json()["item"]
    assert back["item_id"] == first["item_id"] and back["answer"] == {"label": "pos"}
    progress = client.get(f"/api/queues/{queue_id}/progress").json()
    assert (progress["mine"], progress["skipped"], progress["items"]) == (0, 1, 10)
    reset = client.post(f"/api/queues/{queue_id}/skips/reset", headers=headers).json()
    assert reset == {"reset": 1}
    assert client.post("/api/logout", headers=headers).is_success
    assert client.get("/api/me").status_code == 401


def test_every_question_type_through_its_form(world: World) -> None:
    ids = record_ids(world.store, "answers")
    two = [
        {"model": "hidden-model-1", "text": "first answer"},
        {"model": "hidden-model-2", "text": "second answer"},
    ]
    three = [*two, {"model": "hidden-model-3", "text": "third answer"}]
    one = [{"model": "hidden-model-1", "text": "the model said this"}]
    cases: list[
        tuple[str, list[dict[str, str]] | None, dict[str, Any], dict[str, Any], dict[str, Any]]
    ] = [
        (
            "multilabel",
            None,
            {"labels": ["x", "y", "z"]},
            {"labels": ["z", "x"]},
            {"labels": ["x", "z"]},
        ),
        ("rating", one, {}, {"rating": "4"}, {"rating": 4}),
        ("pairwise", two, {}, {"choice": "tie"}, {"choice": "tie"}),
        (
            "ranking",
            three,
            {},
            {"rank_0": "2", "rank_1": "3", "rank_2": "1"},
            {"ranking": [2, 0, 1]},
        ),
        ("feedback", one, {}, {"text": "too long"}, {"text": "too long"}),
        ("correction", one, {}, {"text": "the corrected answer"}, {"text": "the corrected answer"}),
    ]
    alice, csrf = world.signed_in("alice")
    for question, responses, options, form, stored in cases:
        queue_id = create_queue(
            world.store,
            QueueSpec(question, question, options=options, members=["alice"]),
            [NewItem(ids[0], responses)],
        ).id
        page = alice.get(f"/queues/{queue_id}")
        assert page.status_code == 200, page.text
        assert f'data-question="{question}"' in page.text
        if question == "rating":
            assert "excellent: right, complete and clear" in page.text  # the rubric is shown
        if question == "correction":
            assert ">the model said this</textarea>" in page.text  # the answer to edit
        if question in ("pairwise", "ranking"):
            assert "hidden-model" not in page.text and "Response B" in page.text
        item = item_of(page.text)
        response = alice.post(
            f"/queues/{queue_id}/items/{item}/answer",
            data={**form, "csrf_token": csrf},
            follow_redirects=False,
        )
        assert response.status_code == 303, (question, response.text)
        with world.store.transaction() as session:
            value = session.scalar(
                select(Answer.value).join(QueueItem).where(QueueItem.queue_id == queue_id)
            )
        assert value == stored, question
        assert "Nothing left for you" in alice.get(f"/queues/{queue_id}").text
    ranking = alice.post(
        f"/queues/{queue_id}/items/{item}/answer",
        data={"text": "", "csrf_token": csrf},
    )
    assert ranking.status_code == 400 and "needs a text" in ranking.text


def test_agreement_equals_the_metric_and_adjudication(world: World) -> None:
    queue_id = label_queue(world, k=3)
    answers = {
        "alice": ["pos", "pos", "neg", "neg", "pos"],
        "bob": ["pos", "neg", "neg", "neg", "pos"],
        "carol": ["pos", "pos", "neg", "pos", "neg"],
    }
    for name, labels in answers.items():
        client, csrf = world.signed_in(name)
        for label in labels:
            item = client.get(f"/api/queues/{queue_id}/next").json()["item"]
            client.post(
                f"/api/queues/{queue_id}/items/{item['item_id']}/answer",
                json={"value": {"label": label}},
                headers={"X-CSRF-Token": csrf},
            ).raise_for_status()
    rita, csrf = world.signed_in("rita")
    result = rita.get(f"/api/queues/{queue_id}/agreement?resamples=200").json()
    table = [list(row) for row in zip(*answers.values(), strict=True)]
    direct = agreement(table, "nominal", rater_names=list(answers), resamples=200)
    assert result["agreement"]["alpha"] == direct.alpha.to_dict()
    assert [(p["a"], p["b"], p["kappa"]) for p in result["agreement"]["pairs"]] == [
        (p.a, p.b, p.to_dict()["kappa"]) for p in direct.pairs
    ]
    pair = agreement([r[:2] for r in table], "nominal", rater_names=["alice", "bob"], resamples=200)
    assert result["agreement"]["pairs"][0]["alpha"] == pair.alpha.to_dict()
    page = rita.get(f"/queues/{queue_id}/agreement").text
    full = agreement(table, "nominal", rater_names=list(answers))
    assert full.alpha.format() in page and "Cohen's kappa" in page
    # disagreements: items 2, 4 and 5; the reviewer settles item 2 through the page
    listed = rita.get(f"/queues/{queue_id}/disagreements")
    assert listed.text.count("Settle") == 3
    disputed = rita.get(f"/api/queues/{queue_id}/disagreements").json()
    assert [d["position"] for d in disputed] == [2, 4, 5]
    first = disputed[0]
    page = rita.get(f"/queues/{queue_id}/disagreements/{first['item_id']}").text
    assert "Reference in the dataset" in page and "alice" in page and "bob" in page
    settled = rita.post(
        f"/queues/{queue_id}/disagreements/{first['item_id']}",
        data={"label": "neg", "note": "per guidelines", "csrf_token": csrf},
        follow_redirects=False,
    )
    assert settled.status_code == 303
    assert settled.headers["location"].startswith(
        f"/queues/{queue_id}/disagreements/{disputed[1]['item_id']}"
    )
    item = review.review_item(world.store, None, queue_id, first["item_id"])
    assert (item.final, item.final_by, item.note) == ({"label": "neg"}, "rita", "per guidelines")
    via_api = rita.post(
        f"/api/queues/{queue_id}/items/{disputed[1]['item_id']}/adjudicate",
        json={"value": {"label": "pos"}},
        headers={"X-CSRF-Token": csrf},
    )
    assert via_api.status_code == 200 and via_api.json()["final"] == {"label": "pos"}
    left = rita.get(f"/api/queues/{queue_id}/disagreements?resolved=false").json()
    assert [d["position"] for d in left] == [5]
    resolved = rita.get(f"/api/queues/{queue_id}/resolved").json()
    assert resolved[1]["how"] == "adjudicated" and resolved[1]["value"] == {"label": "neg"}
    # annotators cannot adjudicate
    alice, a_csrf = world.signed_in("alice")
    refused = alice.post(
        f"/api/queues/{queue_id}/items/{first['item_id']}/adjudicate",
        json={"value": {"label": "pos"}},
        headers={"X-CSRF-Token": a_csrf},
    )
    assert refused.status_code == 403


def test_admin_pages(world: World) -> None:
    queue_id = label_queue(world)
    ada, csrf = world.signed_in("ada")
    page = ada.get("/admin/users").text
    assert "alice" in page and "rita" in page and "$argon2" not in page
    added = ada.post(
        "/admin/users",
        data={"username": "dave", "role": "annotator", "password": PASSWORD, "csrf_token": csrf},
        follow_redirects=False,
    )
    assert added.status_code == 303
    short = ada.post(
        "/admin/users",
        data={"username": "erin", "role": "annotator", "password": "short", "csrf_token": csrf},
    )
    assert short.status_code == 400 and "at least 10 characters" in short.text
    ada.post("/admin/users/dave", data={"role": "reviewer", "csrf_token": csrf})
    ada.post("/admin/users/bob", data={"active": "0", "csrf_token": csrf})
    people = {u["username"]: u for u in ada.get("/api/users").json()}
    assert people["dave"]["role"] == "reviewer" and people["bob"]["active"] is False
    myself = ada.post("/admin/users/ada", data={"active": "0", "csrf_token": csrf})
    assert myself.status_code == 400
    members = ada.post(
        f"/admin/queues/{queue_id}/members",
        data={"member": ["alice", "dave"], "csrf_token": csrf},
        follow_redirects=False,
    )
    assert members.status_code == 303
    policy = ada.post(
        f"/admin/queues/{queue_id}/policy",
        data={
            "annotators_per_item": "3",
            "show_suggestions": "1",
            "status": "open",
            "guidelines": "New rules",
            "csrf_token": csrf,
        },
        follow_redirects=False,
    )
    assert policy.status_code == 303
    info = ada.get(f"/api/queues/{queue_id}").json()
    assert info["members"] == ["alice", "dave"] and info["annotators_per_item"] == 3
    assert info["show_suggestions"] is True and info["guidelines"] == "New rules"
    carol, c_csrf = world.signed_in("carol")
    assert carol.get(f"/queues/{queue_id}").status_code == 404  # no longer assigned
    refused = carol.post(
        "/admin/users",
        data={"username": "mallory", "role": "admin", "password": PASSWORD, "csrf_token": c_csrf},
    )
    assert refused.status_code == 403
    assert "mallory" not in {u["username"] for u in ada.get("/api/users").json()}


def test_assets_ship_in_the_package(world: World) -> None:
    client = world.client()
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "keydown" in script.text
    assert client.get("/static/app.css").status_code == 200
    for template in Path(create_app.__code__.co_filename).parent.joinpath("templates").iterdir():
        assert "http://" not in template.read_text() and "https://" not in template.read_text()


def test_progress_and_answers_keep_identity_and_time(world: World) -> None:
    queue_id = label_queue(world, k=1)
    alice, csrf = world.signed_in("alice")
    for label in ("pos", "neg"):
        item = item_of(alice.get(f"/queues/{queue_id}").text)
        alice.post(
            f"/queues/{queue_id}/items/{item}/answer", data={"label": label, "csrf_token": csrf}
        )
    with world.store.transaction() as session:
        rows = session.scalars(select(Answer).order_by(Answer.id)).all()
        assert [(a.user_id, a.value, a.source) for a in rows] == [
            (world.people["alice"].id, {"label": "pos"}, "web"),
            (world.people["alice"].id, {"label": "neg"}, "web"),
        ]
        assert all(a.created_at is not None and a.updated_at is not None for a in rows)
    page = alice.get(f"/queues/{queue_id}/progress").text
    assert 'id="mine">2<' in page and "per-annotator" not in page
    rita, _ = world.signed_in("rita")
    assert 'id="per-annotator"' in rita.get(f"/queues/{queue_id}/progress").text
    assert answering.progress(world.store, None, queue_id).answers == 2


def test_help_stays_light_and_commands_have_help(cli: CLI) -> None:
    code = (
        "import sys\n"
        "from tuneloop.cli.main import main\n"
        "main(['--help'])\n"
        "heavy = ('fastapi', 'starlette', 'uvicorn', 'argon2', 'jinja2', 'multipart')\n"
        "print('LOADED', sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "LOADED []" in out.stdout
    assert "users" in out.stdout and "queue" in out.stdout and "web" in out.stdout
    for args in (
        ["users", "add"],
        ["users", "list"],
        ["users", "disable"],
        ["queue", "create"],
        ["queue", "list"],
        ["queue", "show"],
        ["queue", "assign"],
        ["queue", "agreement"],
        ["web"],
    ):
        status, text, _ = cli(*args, "--help")
        assert status == 0 and "Usage:" in text, args


def test_web_command_serves(tmp_path: Path) -> None:
    """``tuneloop web`` starts uvicorn on the given port and serves the sign-in page."""
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = f"sqlite:///{tmp_path / 'served.db'}"
    command = [sys.executable, "-m", "tuneloop.cli", "--db", db, "web", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "tuneloop web did not start"
                time.sleep(0.2)
        assert page.status_code == 200 and 'name="password"' in page.text
        assert "HttpOnly" in page.headers["set-cookie"]
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout:
            process.stdout.close()
