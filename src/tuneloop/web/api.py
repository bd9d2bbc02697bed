"""The JSON API under /api: the same actions as the pages, the same permission checks (the
role dependency here, and the workflows' own checks). State-changing calls carry the session's
CSRF token in the X-CSRF-Token header (``GET /api/me`` returns it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tuneloop.errors import UserError
from tuneloop.web.deps import (
    SESSION_COOKIE,
    Admin,
    AnyUser,
    Reviewer,
    SessionDep,
    StoreDep,
    check_csrf,
    set_cookie,
    web_state,
)
from tuneloop.workflows import answering, queue_items, queues, review, users

public = APIRouter(prefix="/api")
private = APIRouter(prefix="/api", dependencies=[Depends(check_csrf)])


class LoginIn(BaseModel):
    username: str = Field(max_length=200)
    password: str = Field(max_length=1024)


class AnswerIn(BaseModel):
    value: dict[str, Any]


class AdjudicateIn(BaseModel):
    value: dict[str, Any]
    note: str | None = Field(default=None, max_length=20_000)


class UserIn(BaseModel):
    username: str
    role: str = "annotator"
    password: str = Field(max_length=1024)


class UserChange(BaseModel):
    active: bool | None = None
    role: str | None = None


class MembersIn(BaseModel):
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class QueueIn(BaseModel):
    """A new queue, as ``tuneloop queue create`` takes it: items from ``items`` (rows of an
    items file) or from the dataset's records (``ids``, a sample of ``n``, or ``splits``)."""

    name: str = Field(max_length=200)
    question: str
    dataset: str | None = None  # NAME[@VERSION]
    project: str = Field(default="default", max_length=200)
    splits: list[str] = Field(default_factory=list)
    n: int | None = None
    seed: int = 0
    ids: list[str] = Field(default_factory=list)
    items: list[dict[str, Any]] | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # labels, rubric, allow_tie, prompt
    guidelines: str | None = Field(default=None, max_length=200_000)
    annotators_per_item: int = 1
    show_suggestions: bool = False
    members: list[str] = Field(default_factory=list)


class PolicyIn(BaseModel):
    annotators_per_item: int | None = None
    show_suggestions: bool | None = None
    status: str | None = None
    guidelines: str | None = None


@public.post("/login")
def login(request: Request, body: LoginIn, store: StoreDep) -> Response:
    """Sign in with JSON (a cross-site form cannot send JSON, so this needs no CSRF token)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise UserError("sign in with a JSON body (Content-Type: application/json)")
    ip = request.client.host if request.client else "unknown"
    try:
        actor = users.authenticate(store, body.username, body.password, ip)
    except users.TooManyAttempts:
        raise
    except UserError as exc:
        return JSONResponse({"error": str(exc)}, status_code=401)
    lifetime = web_state(request).session_lifetime
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        users.end_session(store, old)
    token, info = users.create_session(store, actor, lifetime)
    response = JSONResponse(_me(info))
    set_cookie(request, response, SESSION_COOKIE, token, int(lifetime.total_seconds()))
    return response


def _me(info: users.SessionInfo) -> dict[str, Any]:
    return {
        "id": info.actor.id,
        "username": info.actor.username,
        "role": info.actor.role,
        "csrf_token": info.csrf_token,
    }


@private.post("/logout")
def logout(request: Request, store: StoreDep, _info: SessionDep) -> Response:
    users.end_session(store, request.cookies.get(SESSION_COOKIE, ""))
    response = JSONResponse({"ok": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@private.get("/me")
def me(info: SessionDep) -> dict[str, Any]:
    return _me(info)


@private.get("/queues")
def list_queues(store: StoreDep, actor: AnyUser) -> list[dict[str, Any]]:
    return [
        {**q.to_dict(), "progress": answering.progress(store, actor, q.id).to_dict()}
        for q in queues.list_queues(store, actor)
    ]


@private.post("/queues", status_code=201)
def create_queue(body: QueueIn, store: StoreDep, _actor: Admin) -> dict[str, Any]:
    rows = None
    if body.items is not None:
        rows = [(f"items[{i}]", row) for i, row in enumerate(body.items)]
    items = queue_items.select_items(
        store,
        dataset=body.dataset,
        rows=rows,
        splits=body.splits,
        n=body.n,
        seed=body.seed,
        ids=body.ids,
        project=body.project,
    )
    spec = queues.QueueSpec(
        name=body.name,
        question=body.question,
        options=body.options,
        guidelines=body.guidelines or None,
        annotators_per_item=body.annotators_per_item,
        show_suggestions=body.show_suggestions,
        dataset=body.dataset,
        members=body.members,
        project=body.project,
    )
    return queues.create_queue(store, spec, items).to_dict()


@private.get("/queues/{queue_id}")
def show_queue(queue_id: int, store: StoreDep, actor: AnyUser) -> dict[str, Any]:
    return queues.show_queue(store, actor, queue_id).to_dict()


@private.get("/queues/{queue_id}/next")
def next_item(queue_id: int, store: StoreDep, actor: AnyUser) -> dict[str, Any]:
    """The item to answer next (held for this person a while), or null when none is left."""
    item = answering.next_item(store, actor, queue_id)
    return {"item": item.to_dict() if item else None}


@private.get("/queues/{queue_id}/items/{item_id}")
def open_item(queue_id: int, item_id: int, store: StoreDep, actor: AnyUser) -> dict[str, Any]:
    return answering.open_item(store, actor, queue_id, item_id).to_dict()


@private.post("/queues/{queue_id}/items/{item_id}/answer")
def answer(
    queue_id: int, item_id: int, body: AnswerIn, store: StoreDep, actor: AnyUser
) -> dict[str, Any]:
    answer_id = answering.submit(store, actor, queue_id, item_id, body.value, source="api")
    return {"answer_id": answer_id}


@private.post("/queues/{queue_id}/items/{item_id}/skip")
def skip(queue_id: int, item_id: int, store: StoreDep, actor: AnyUser) -> dict[str, Any]:
    answering.skip(store, actor, queue_id, item_id)
    return {"ok": True}


@private.post("/queues/{queue_id}/undo")
def undo(queue_id: int, store: StoreDep, actor: AnyUser) -> dict[str, Any]:
    return {"item_id": answering.undo_last(store, actor, queue_id)}


@private.post("/queues/{queue_id}/skips/reset")
def reset_skips(queue_id: int, store: StoreDep, actor: AnyUser) -> dict[str, Any]:
    return {"reset": answering.reset_skips(store, actor, queue_id)}


@private.get("/queues/{queue_id}/progress")
def progress(queue_id: int, store: StoreDep, actor: AnyUser) -> dict[str, Any]:
    return answering.progress(store, actor, queue_id).to_dict()


@private.get("/queues/{queue_id}/agreement")
def agreement(
    queue_id: int, store: StoreDep, actor: Reviewer, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    if not 1 <= resamples <= 10_000:
        raise UserError("resamples must be 1..10000")
    return review.queue_agreement(store, actor, queue_id, resamples=resamples, seed=seed).to_dict()


@private.get("/queues/{queue_id}/disagreements")
def disagreements(
    queue_id: int, store: StoreDep, actor: Reviewer, resolved: bool = True
) -> list[dict[str, Any]]:
    items = review.disagreements(store, actor, queue_id, include_resolved=resolved)
    return [d.to_dict() for d in items]


@private.get("/queues/{queue_id}/items/{item_id}/review")
def review_item(queue_id: int, item_id: int, store: StoreDep, actor: Reviewer) -> dict[str, Any]:
    return review.review_item(store, actor, queue_id, item_id).to_dict()


@private.post("/queues/{queue_id}/items/{item_id}/adjudicate")
def adjudicate(
    queue_id: int, item_id: int, body: AdjudicateIn, store: StoreDep, actor: Reviewer
) -> dict[str, Any]:
    review.adjudicate(store, actor, queue_id, item_id, body.value, body.note)
    return review.review_item(store, actor, queue_id, item_id).to_dict()


@private.get("/queues/{queue_id}/resolved")
def resolved(queue_id: int, store: StoreDep, actor: Reviewer) -> list[dict[str, Any]]:
    return [
        {
            "item_id": r.item_id,
            "record_id": r.record_id,
            "value": r.value,
            "how": r.how,
            "answers": r.answers,
        }
        for r in review.resolved(store, actor, queue_id)
    ]


@private.post("/queues/{queue_id}/members")
def members(queue_id: int, body: MembersIn, store: StoreDep, actor: Admin) -> dict[str, Any]:
    return queues.assign(store, actor, queue_id, body.add, body.remove).to_dict()


@private.post("/queues/{queue_id}/policy")
def policy(queue_id: int, body: PolicyIn, store: StoreDep, actor: Admin) -> dict[str, Any]:
    return queues.update_queue(
        store,
        actor,
        queue_id,
        annotators_per_item=body.annotators_per_item,
        show_suggestions=body.show_suggestions,
        status=body.status,
        guidelines=body.guidelines,
    ).to_dict()


@private.get("/users")
def list_users(store: StoreDep, _actor: Admin) -> list[dict[str, Any]]:
    return [u.to_dict() for u in users.list_users(store)]


@private.post("/users")
def add_user(body: UserIn, store: StoreDep, _actor: Admin) -> dict[str, Any]:
    return users.add_user(store, body.username, body.role, body.password).to_dict()


@private.post("/users/{username}")
def change_user(username: str, body: UserChange, store: StoreDep, actor: Admin) -> dict[str, Any]:
    if body.active is False and username == actor.username:
        raise UserError("you cannot disable yourself")
    info = None
    if body.active is not None:
        info = users.set_active(store, username, body.active)
    if body.role is not None:
        info = users.set_role(store, username, body.role)
    if info is None:
        raise UserError("give active and/or role")
    return info.to_dict()


router = APIRouter()
router.include_router(public)
router.include_router(private)
