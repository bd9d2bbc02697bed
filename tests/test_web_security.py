"""Who may reach what in the web app, on SQLite and PostgreSQL, with FastAPI's TestClient:

- every page and API route for every role, from one table (route x role -> status); a route
  missing from the table fails the test, so new routes get a row;
- every state-changing route refuses a request without the session's CSRF token or with a
  wrong one (403) and changes nothing;
- an annotator reaches no other queue, no gold label or reference output and no one else's
  answer, by URL or API, whatever ids they try (403 or 404);
- a record, response, label, queue name, guideline, answer or note holding HTML or script is
  shown as inert text on every page that shows it;
- wrong passwords lock the username and address out (unknown names too), only that pair, and
  only for the window.

What tests/test_web.py checks already (cookie flags, the login form's CSRF, the API's CSRF
header, the page and API 429) is not repeated here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.routing import Route

from tests.conftest import CLI
from tests.people import (
    GOLD,
    PASSWORD,
    fast_hashing,  # noqa: F401
    record_ids,
)
from tests.test_web import World, login, web_world
from tuneloop.store.models import (
    Adjudication,
    Answer,
    LoginAttempt,
    Queue,
    QueueClaim,
    QueueItem,
    QueueMember,
    User,
)
from tuneloop.workflows import answering, review, users
from tuneloop.workflows.queue_items import NewItem, dataset_choices, dataset_items
from tuneloop.workflows.queues import QueueSpec, create_queue

pytestmark = pytest.mark.usefixtures("fast_hashing")

ROLES = ("anon", "alice", "carol", "rita", "ada")  # member, outsider annotator, reviewer, admin


@pytest.fixture
def world(cli: CLI, db_url: str, tmp_path: Path) -> Iterator[World]:
    yield from web_world(cli, db_url, tmp_path)


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # the route's path, its parameters filled in from the test's values
    body: dict[str, Any] | None  # a form (pages) or JSON (API); "{who}" becomes the role
    statuses: str  # expected status per role, in the order of ROLES


FORM_LOGIN = {"username": "bob", "password": PASSWORD, "csrf_token": "login-token"}
NEW_QUEUE = {"name": "made-by-{who}", "question": "label", "dataset": "{reviews}", "seed": "0"}
NEW_QUEUE_API = {"name": "api-by-{who}", "question": "label", "dataset": "reviews", "n": 2}
POLICY = {"annotators_per_item": "2", "status": "open", "guidelines": "label it"}

CASES = [
    # signing in and out
    Case("GET", "/login", None, "200 303 303 303 303"),
    Case("POST", "/login", FORM_LOGIN, "303 303 303 303 303"),
    Case("POST", "/logout", {}, "303 303 303 303 303"),
    Case("POST", "/api/login", {"username": "bob", "password": PASSWORD}, "200 200 200 200 200"),
    Case("POST", "/api/logout", {}, "401 200 200 200 200"),
    Case("GET", "/api/me", None, "401 200 200 200 200"),
    # answering: members only; an annotator learns nothing of queues not theirs (404)
    Case("GET", "/", None, "303 303 303 303 303"),
    Case("GET", "/queues", None, "303 200 200 200 200"),
    Case("GET", "/queues/{queue_id}", None, "303 200 404 200 200"),
    Case("GET", "/queues/{queue_id}/items/{item_id}", None, "303 200 404 200 200"),
    Case(
        "POST", "/queues/{queue_id}/items/{item_id}/answer", {"label": "pos"}, "303 303 404 403 403"
    ),
    Case("POST", "/queues/{queue_id}/items/{item_id}/skip", {}, "303 303 404 403 403"),
    Case("POST", "/queues/{queue_id}/undo", {}, "303 303 404 403 403"),
    Case("POST", "/queues/{queue_id}/skips/reset", {}, "303 303 404 403 403"),
    Case("GET", "/queues/{queue_id}/progress", None, "303 200 404 200 200"),
    Case("GET", "/api/queues", None, "401 200 200 200 200"),
    Case("GET", "/api/queues/{queue_id}", None, "401 200 404 200 200"),
    Case("GET", "/api/queues/{queue_id}/next", None, "401 200 404 403 403"),
    Case("GET", "/api/queues/{queue_id}/items/{item_id}", None, "401 200 404 200 200"),
    Case(
        "POST",
        "/api/queues/{queue_id}/items/{item_id}/answer",
        {"value": {"label": "neg"}},
        "401 200 404 403 403",
    ),
    Case("POST", "/api/queues/{queue_id}/items/{item_id}/skip", {}, "401 200 404 403 403"),
    Case("POST", "/api/queues/{queue_id}/undo", {}, "401 200 404 403 403"),
    Case("POST", "/api/queues/{queue_id}/skips/reset", {}, "401 200 404 403 403"),
    Case("GET", "/api/queues/{queue_id}/progress", None, "401 200 404 200 200"),
    # reviewing: reviewers and admins
    Case("GET", "/queues/{queue_id}/agreement", None, "303 403 403 200 200"),
    Case("GET", "/queues/{queue_id}/disagreements", None, "303 403 403 200 200"),
    Case("GET", "/queues/{queue_id}/disagreements/{item_id}", None, "303 403 403 200 200"),
    Case(
        "POST",
        "/queues/{queue_id}/disagreements/{item_id}",
        {"label": "pos"},
        "303 403 403 303 303",
    ),
    Case("GET", "/api/queues/{queue_id}/agreement", None, "401 403 403 200 200"),
    Case("GET", "/api/queues/{queue_id}/disagreements", None, "401 403 403 200 200"),
    Case("GET", "/api/queues/{queue_id}/items/{item_id}/review", None, "401 403 403 200 200"),
    Case(
        "POST",
        "/api/queues/{queue_id}/items/{item_id}/adjudicate",
        {"value": {"label": "neg"}, "note": "by {who}"},
        "401 403 403 200 200",
    ),
    Case("GET", "/api/queues/{queue_id}/resolved", None, "401 403 403 200 200"),
    Case("GET", "/reports", None, "303 403 403 200 200"),
    Case("GET", "/reports/{run_id}", None, "303 403 403 404 404"),
    # administration: admins
    Case("GET", "/admin", None, "303 403 403 403 303"),
    Case("GET", "/admin/users", None, "303 403 403 403 200"),
    Case(
        "POST",
        "/admin/users",
        {"username": "page-{who}", "role": "annotator", "password": PASSWORD},
        "303 403 403 403 303",
    ),
    Case("POST", "/admin/users/{username}", {"role": "annotator"}, "303 403 403 403 303"),
    Case("GET", "/admin/queues/new", None, "303 403 403 403 200"),
    Case("POST", "/admin/queues", NEW_QUEUE, "303 403 403 403 303"),
    Case("GET", "/admin/queues/{queue_id}", None, "303 403 403 403 200"),
    Case(
        "POST",
        "/admin/queues/{queue_id}/members",
        {"member": ["alice", "bob"]},
        "303 403 403 403 303",
    ),
    Case("POST", "/admin/queues/{queue_id}/policy", POLICY, "303 403 403 403 303"),
    Case("POST", "/api/queues", NEW_QUEUE_API, "401 403 403 403 201"),
    Case("POST", "/api/queues/{queue_id}/members", {"add": ["bob"]}, "401 403 403 403 200"),
    Case("POST", "/api/queues/{queue_id}/policy", {"status": "open"}, "401 403 403 403 200"),
    Case("GET", "/api/users", None, "401 403 403 403 200"),
    Case(
        "POST",
        "/api/users",
        {"username": "api-{who}", "role": "annotator", "password": PASSWORD},
        "401 403 403 403 200",
    ),
    Case("POST", "/api/users/{username}", {"role": "annotator"}, "401 403 403 403 200"),
]
PUBLIC_POSTS = {"/login", "/api/login"}  # signing in needs no session (the form has its own token)


def fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    return value


@dataclass
class Setup:
    world: World
    values: dict[str, str]  # path parameters and body placeholders

    def client(self, who: str) -> tuple[TestClient, str]:
        """A client with a fresh session of ``who`` (none for anon) and its CSRF token."""
        client = self.world.client()
        if who == "anon":
            return client, ""
        token, info = users.create_session(self.world.store, self.world.people[who])
        client.cookies.set("tuneloop_session", token)
        return client, info.csrf_token

    def send(self, case: Case, who: str, csrf: str | None = "valid") -> Any:
        client, token = self.client(who)
        url = case.path.format(**self.values)
        body = fill(case.body, {**self.values, "who": who})
        if case.method == "GET":
            return client.get(url, follow_redirects=False)
        sent = token if csrf == "valid" else csrf
        if url == "/login":
            client.cookies.set("tuneloop_login", "login-token")
        if url.startswith("/api/"):
            headers = {"X-CSRF-Token": sent} if sent is not None and token else {}
            return client.post(url, json=body, headers=headers, follow_redirects=False)
        form = dict(body or {})
        if sent is not None and token and url != "/login":
            form["csrf_token"] = sent
        return client.post(url, data=form, follow_redirects=False)


@pytest.fixture
def setup(world: World) -> Setup:
    queue_id = create_queue(
        world.store,
        QueueSpec(
            "sentiment",
            "label",
            dataset="reviews",
            annotators_per_item=2,
            members=["alice", "bob"],
            guidelines="label it",
        ),
        dataset_items(world.store, "reviews"),
    ).id
    item = answering.next_item(world.store, world.people["bob"], queue_id)
    assert item is not None
    reviews = next(d.id for d in dataset_choices(world.store) if d.ref == "reviews@1")
    values = {
        "queue_id": str(queue_id),
        "item_id": str(item.item_id),
        "username": "bob",
        "run_id": "999999",
        "reviews": str(reviews),
    }
    return Setup(world, values)


def routes(world: World) -> set[tuple[str, str]]:
    """(method, path) of every route of the app, through the routers it includes."""
    out = set()
    pending = list(world.app.routes)
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)  # FastAPI's included routers
        if included is not None:
            pending.extend(included.routes)
        elif isinstance(route, Route) and route.methods:
            out.update((m, route.path) for m in route.methods if m != "HEAD")
    return out


def test_every_route_for_every_role(setup: Setup) -> None:
    table = {(c.method, c.path) for c in CASES}
    assert len(table) == len(CASES), "a route is in the table twice"
    assert routes(setup.world) == table, "routes and the table differ: give new routes a row"
    wrong = []
    for case in CASES:
        for who, expected in zip(ROLES, case.statuses.split(), strict=True):
            response = setup.send(case, who)
            if response.status_code != int(expected):
                wrong.append(f"{case.method} {case.path} as {who}: {response.status_code}")
            elif response.status_code == 303 and who == "anon" and case.path != "/login":
                assert response.headers["location"].startswith("/login?next="), case
            elif response.status_code in (401, 403, 404):
                if case.path.startswith("/api/"):
                    assert response.headers["content-type"] == "application/json"
                    assert response.json()["error"]
                else:
                    assert 'role="alert"' in response.text
    assert wrong == []


def _counts(w: World) -> dict[str, int]:
    with w.store.transaction() as session:
        tables = (Answer, Adjudication, QueueClaim, Queue, QueueMember, User)
        out = {t.__name__: session.scalar(select(func.count()).select_from(t)) or 0 for t in tables}
        roles = select(User.username, User.role).order_by(User.username)
        out["roles"] = hash(tuple(session.execute(roles).all()))
        policy = select(Queue.annotators_per_item, Queue.guidelines, Queue.status).order_by(
            Queue.id
        )
        out["policy"] = hash(tuple(session.execute(policy).all()))
        return out


def test_every_state_change_needs_the_csrf_token(setup: Setup) -> None:
    before = _counts(setup.world)
    checked = 0
    for case in CASES:
        if case.method != "POST" or case.path in PUBLIC_POSTS:
            continue
        statuses = dict(zip(ROLES, case.statuses.split(), strict=True))
        who = next(r for r in ROLES[1:] if statuses[r].startswith(("2", "3")))
        for csrf in (None, "", "forged-token"):
            response = setup.send(case, who, csrf=csrf)
            assert response.status_code == 403, (case.path, who, csrf, response.text[:300])
            assert "CSRF" in response.text
        checked += 1
    assert checked == sum(c.method == "POST" and c.path not in PUBLIC_POSTS for c in CASES) > 20
    assert _counts(setup.world) == before  # nothing went through
    # the token of one session is not good for another (a stolen page's token elsewhere)
    case = next(c for c in CASES if c.path == "/api/queues/{queue_id}/items/{item_id}/answer")
    _, other = setup.client("alice")
    assert setup.send(case, "alice", csrf=other).status_code == 403


def test_an_annotator_reaches_no_other_queue_gold_or_answers(world: World) -> None:
    """alice works on ``mine``; bob alone on ``theirs`` (open QA whose references hold GOLD)."""
    mine = create_queue(
        world.store,
        QueueSpec(
            "mine", "label", dataset="reviews", annotators_per_item=2, members=["alice", "bob"]
        ),
        dataset_items(world.store, "reviews"),
    ).id
    theirs = create_queue(
        world.store,
        QueueSpec("theirs", "feedback", dataset="answers", members=["bob"]),
        [
            NewItem(i, [{"model": "secret-model", "text": "an answer"}])
            for i in record_ids(world.store, "answers")
        ],
    ).id
    bob = world.people["bob"]
    shared = answering.next_item(world.store, bob, mine)
    other = answering.next_item(world.store, bob, theirs)
    assert shared is not None and other is not None
    answering.submit(world.store, bob, mine, shared.item_id, {"label": "neg"})
    answering.submit(world.store, bob, theirs, other.item_id, {"text": "BOB-SECRET text"})
    review.adjudicate(
        world.store, world.people["rita"], mine, shared.item_id, {"label": "pos"}, "RITA-NOTE"
    )

    alice, csrf = world.signed_in("alice")
    headers = {"X-CSRF-Token": csrf}
    q, o, s = theirs, other.item_id, shared.item_id
    refused = {
        # another queue, by URL and API, with its own ids and with ids from my queue
        f"/queues/{q}": 404,
        f"/queues/{q}/items/{o}": 404,
        f"/queues/{q}/items/{s}": 404,
        f"/queues/{q}/progress": 404,
        f"/api/queues/{q}": 404,
        f"/api/queues/{q}/next": 404,
        f"/api/queues/{q}/items/{o}": 404,
        f"/api/queues/{q}/progress": 404,
        # its items through my queue
        f"/queues/{mine}/items/{o}": 404,
        f"/api/queues/{mine}/items/{o}": 404,
        # gold labels, reference outputs and everyone's answers: reviewers' pages
        f"/api/queues/{q}/items/{o}/review": 403,
        f"/api/queues/{mine}/items/{s}/review": 403,
        f"/api/queues/{q}/resolved": 403,
        f"/api/queues/{mine}/resolved": 403,
        f"/api/queues/{mine}/disagreements": 403,
        f"/queues/{mine}/disagreements/{s}": 403,
        f"/queues/{q}/disagreements/{o}": 403,
        f"/api/queues/{mine}/agreement": 403,
        "/reports": 403,
        "/api/users": 403,
        f"/admin/queues/{q}": 403,
    }
    for path, status in refused.items():
        response = alice.get(path)
        assert response.status_code == status, path
        assert "BOB-SECRET" not in response.text and GOLD not in response.text, path
    posts = {
        f"/api/queues/{q}/items/{o}/answer": 404,
        f"/api/queues/{mine}/items/{o}/answer": 404,
        f"/api/queues/{q}/items/{o}/skip": 404,
        f"/api/queues/{q}/undo": 404,
        f"/api/queues/{mine}/items/{s}/adjudicate": 403,
        f"/api/queues/{q}/members": 403,
    }
    for path, status in posts.items():
        body = {"value": {"text": "x"}, "add": ["alice"]}
        assert alice.post(path, json=body, headers=headers).status_code == status, path
    # on the item we share she sees her own answer only: none yet, nor bob's, nor the final one
    view = alice.get(f"/api/queues/{mine}/items/{s}").json()
    assert view["answer"] is None and "RITA" not in json.dumps(view)
    assert not {"answers", "final", "reference", "note"} & set(view)
    page = alice.get(f"/queues/{mine}/items/{s}").text
    assert 'value="neg" data-key="2" checked' not in page and "RITA-NOTE" not in page
    progress = alice.get(f"/api/queues/{mine}/progress").json()
    assert progress["per_annotator"] == {} and progress["mine"] == 0
    # her undo never takes back bob's answer
    assert alice.post(f"/api/queues/{mine}/undo", headers=headers).json() == {"item_id": None}
    with world.store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Answer)) == 2
    # ids that do not exist at all look the same as ids she may not see
    assert alice.get("/api/queues/987654").status_code == 404
    assert alice.get(f"/api/queues/{mine}/items/987654").status_code == 404


PAYLOAD = "<script>alert(1)</script><img src=x onerror=alert(2)>"
LABEL = '"><svg onload=alert(3)>'  # breaks out of an attribute unless escaped there
RAW = ("<script>alert(1)</script>", "<img src=x", "<svg onload", 'onerror=alert(2)">')


def _inert(html: str, where: str, shown: bool = True) -> None:
    for raw in RAW:
        assert raw not in html, (where, raw)
    if shown:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in html, (
            where
        )


def test_html_and_script_in_data_render_as_inert_text(
    world: World, cli: CLI, tmp_path: Path
) -> None:
    path = tmp_path / "evil.jsonl"
    rows = [{"id": f"e{i}", "text": f"{PAYLOAD} {i}", "label": "pos"} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = cli(
        "data",
        "import",
        str(path),
        "--task",
        "classification",
        "--labels",
        "pos,neg",
        "--dedupe",
        "none",
    )
    assert code == 0, err
    label_q = create_queue(
        world.store,
        QueueSpec(
            PAYLOAD,
            "label",
            options={"labels": [LABEL, "neg"], "prompt": PAYLOAD},
            dataset="evil",
            guidelines=PAYLOAD,
            annotators_per_item=2,
            members=["alice", "bob"],
        ),
        dataset_items(world.store, "evil"),
    ).id
    text_q = create_queue(
        world.store,
        QueueSpec(
            "evil-feedback",
            "feedback",
            dataset="evil",
            annotators_per_item=2,
            members=["alice", "bob"],
        ),
        [
            NewItem(i, [{"model": PAYLOAD, "text": PAYLOAD}])
            for i in record_ids(world.store, "evil")
        ],
    ).id
    for name, label, text in (("alice", LABEL, "A"), ("bob", "neg", "B")):
        person = world.people[name]
        item = answering.next_item(world.store, person, label_q)
        assert item is not None
        answering.submit(world.store, person, label_q, item.item_id, {"label": label})
        item = answering.next_item(world.store, person, text_q)
        assert item is not None
        answering.submit(world.store, person, text_q, item.item_id, {"text": f"{PAYLOAD} {text}"})
    first = record_ids(world.store, "evil")[0]
    with world.store.transaction() as session:
        disputed = session.scalar(
            select(QueueItem.id).where(QueueItem.queue_id == label_q, QueueItem.record_id == first)
        )
        text_item = session.scalar(
            select(QueueItem.id).where(QueueItem.queue_id == text_q, QueueItem.record_id == first)
        )
    review.adjudicate(
        world.store, world.people["rita"], label_q, disputed, {"label": "neg"}, PAYLOAD
    )

    alice, _ = world.signed_in("alice")
    work = alice.get(f"/queues/{label_q}/items/{disputed}").text
    _inert(work, "label item page")
    assert 'value="&#34;&gt;&lt;svg onload=alert(3)&gt;"' in work  # the label, in its attribute
    _inert(alice.get(f"/queues/{text_q}/items/{text_item}").text, "feedback item page")
    _inert(alice.get("/queues").text, "queue list")
    _inert(alice.get(f"/queues/{label_q}/progress").text, "progress")
    rita, _ = world.signed_in("rita")
    _inert(rita.get(f"/queues/{label_q}/disagreements").text, "disagreements", shown=False)
    listed = rita.get(f"/queues/{text_q}/disagreements").text
    _inert(listed, "feedback disagreements")
    _inert(rita.get(f"/queues/{label_q}/disagreements/{disputed}").text, "adjudication page")
    _inert(rita.get(f"/queues/{text_q}/disagreements/{text_item}").text, "feedback adjudication")
    _inert(rita.get(f"/queues/{label_q}/agreement").text, "agreement")
    ada, csrf = world.signed_in("ada")
    _inert(ada.get(f"/admin/queues/{label_q}").text, "admin queue page")
    taken = ada.post(
        "/admin/queues",
        data={"name": PAYLOAD, "question": "label", "dataset": "", "csrf_token": csrf},
        files={"items": ("items.jsonl", json.dumps({"record_id": first}).encode(), "text/plain")},
    )
    assert taken.status_code == 400 and "exists already" in taken.text
    _inert(taken.text, "new queue form with an error")
    # the API hands the same text back as JSON, never as a page
    api = alice.get(f"/api/queues/{label_q}/items/{disputed}")
    assert (
        api.headers["content-type"] == "application/json"
        and PAYLOAD in api.json()["inputs"]["text"]
    )
    assert api.headers["x-content-type-options"] == "nosniff"


def _wrong(client: TestClient, name: str) -> Any:
    return client.post("/api/login", json={"username": name, "password": "not the password"})


def test_wrong_passwords_are_rate_limited(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    here = world.client()
    for _ in range(users.MAX_FAILURES):
        unknown, known = _wrong(here, "nobody"), _wrong(here, "bob")
        # an unknown name gets the same answer as a wrong password: no way to list names
        assert unknown.status_code == known.status_code == 401
        assert unknown.json() == known.json() == {"error": "wrong username or password"}
    for name in ("nobody", "bob"):
        locked = here.post("/api/login", json={"username": name, "password": PASSWORD})
        assert locked.status_code == 429 and 0 < int(locked.headers["retry-after"]) <= 15 * 60
    # the page says so too, even with the right password
    page = here.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    form = {"username": "bob", "password": PASSWORD, "csrf_token": token.group(1)}
    blocked = here.post("/login", data=form)
    assert blocked.status_code == 429 and "too many failed sign-ins" in blocked.text
    # the same name from another address, and other names from this one, are not locked
    elsewhere = TestClient(world.app, client=("203.0.113.7", 40000))
    world.clients.append(elsewhere)
    elsewhere.__enter__()
    assert elsewhere.post("/api/login", json={"username": "bob", "password": PASSWORD}).is_success
    assert login(world.client(), "carol")
    # a lock-out ends with its window; the failures are then forgotten
    real = datetime

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return real.now(tz or UTC) + users.FAILURE_WINDOW + timedelta(seconds=1)

    monkeypatch.setattr(users, "datetime", Later)
    assert here.post("/api/login", json={"username": "bob", "password": PASSWORD}).is_success
    with world.store.transaction() as session:
        left = session.scalars(select(LoginAttempt.username).where(LoginAttempt.ok.is_(False)))
        assert list(left) == []
