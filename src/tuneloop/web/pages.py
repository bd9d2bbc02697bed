"""The server-rendered pages: sign in, my queues, the answering page (every question type,
keyboard first), progress; for reviewers agreement and adjudication (admin pages are in
``admin.py``). Each route is a thin shell over a workflow function."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from tuneloop.errors import UserError
from tuneloop.questions import AnswerError, label_keys
from tuneloop.web import admin
from tuneloop.web.deps import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    AnyUser,
    CsrfFailed,
    FormDep,
    Reviewer,
    SessionDep,
    StoreDep,
    check_csrf,
    form_lists,
    optional_session,
    set_cookie,
    status_of,
    web_state,
)
from tuneloop.web.forms import form_value
from tuneloop.web.render import field, redirect, render, safe_next
from tuneloop.workflows import answering, queues, review, users
from tuneloop.workflows.users import SessionInfo

public = APIRouter()
private = APIRouter(dependencies=[Depends(check_csrf)])

# --- signing in and out --------------------------------------------------------------------


@public.get("/login")
def login_page(request: Request, next: str = "/queues") -> Response:
    if optional_session(request) is not None:
        return redirect(safe_next(next))
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, "login.html", None, next=safe_next(next), login_csrf=token)
    set_cookie(request, response, LOGIN_COOKIE, token, max_age=3600)
    return response


@public.post("/login")
def login(request: Request, store: StoreDep, form: FormDep) -> Response:
    sent, expected = field(form, "csrf_token"), request.cookies.get(LOGIN_COOKIE, "")
    if not sent or not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
        raise CsrfFailed()
    target = safe_next(field(form, "next"))
    ip = request.client.host if request.client else "unknown"
    try:
        actor = users.authenticate(store, field(form, "username"), field(form, "password"), ip)
    except UserError as exc:
        status = 429 if status_of(exc) == 429 else 401
        return render(
            request,
            "login.html",
            None,
            status,
            next=target,
            login_csrf=expected,
            error=str(exc),
            username=field(form, "username"),
        )
    old = request.cookies.get(SESSION_COOKIE)
    if old:
        users.end_session(store, old)
    lifetime = web_state(request).session_lifetime
    token, _ = users.create_session(store, actor, lifetime)
    response = redirect(target)
    set_cookie(request, response, SESSION_COOKIE, token, int(lifetime.total_seconds()))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@private.post("/logout")
def logout(request: Request, store: StoreDep, _info: SessionDep) -> Response:
    users.end_session(store, request.cookies.get(SESSION_COOKIE, ""))
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- answering -----------------------------------------------------------------------------


@private.get("/")
def home(_actor: AnyUser) -> Response:
    return redirect("/queues")


@private.get("/queues")
def queue_list(request: Request, store: StoreDep, info: SessionDep, actor: AnyUser) -> Response:
    rows = [
        (q, answering.progress(store, actor, q.id), actor.username in q.members)
        for q in queues.list_queues(store, actor)
    ]
    return render(request, "queues.html", info, rows=rows)


def _item_page(
    request: Request,
    store: Any,
    info: SessionInfo,
    queue_id: int,
    item: answering.ItemView | None,
    status: int = 200,
    error: str = "",
) -> Response:
    actor = info.actor
    queue = queues.show_queue(store, actor, queue_id)
    return render(
        request,
        "item.html",
        info,
        status,
        queue=queue,
        item=item,
        progress=answering.progress(store, actor, queue_id),
        error=error,
    )


@private.get("/queues/{queue_id}")
def work(
    request: Request, queue_id: int, store: StoreDep, info: SessionDep, actor: AnyUser
) -> Response:
    queue = queues.show_queue(store, actor, queue_id)
    item = None
    if actor.username in queue.members and queue.status == "open":
        item = answering.next_item(store, actor, queue_id)
    return _item_page(request, store, info, queue_id, item)


@private.get("/queues/{queue_id}/items/{item_id}")
def item_page(
    request: Request,
    queue_id: int,
    item_id: int,
    store: StoreDep,
    info: SessionDep,
    actor: AnyUser,
) -> Response:
    item = answering.open_item(store, actor, queue_id, item_id)
    return _item_page(request, store, info, queue_id, item)


@private.post("/queues/{queue_id}/items/{item_id}/answer")
def answer(
    request: Request,
    queue_id: int,
    item_id: int,
    store: StoreDep,
    info: SessionDep,
    actor: AnyUser,
    form: FormDep,
) -> Response:
    item = answering.open_item(store, actor, queue_id, item_id)
    try:
        value = form_value(item.question, form_lists(form), len(item.responses))
        answering.submit(store, actor, queue_id, item_id, value, source="web")
    except (AnswerError, UserError) as exc:
        if isinstance(exc, UserError) and status_of(exc) != 400:
            raise
        return _item_page(request, store, info, queue_id, item, 400, str(exc))
    return redirect(f"/queues/{queue_id}")


@private.post("/queues/{queue_id}/items/{item_id}/skip")
def skip(queue_id: int, item_id: int, store: StoreDep, actor: AnyUser) -> Response:
    answering.skip(store, actor, queue_id, item_id)
    return redirect(f"/queues/{queue_id}?notice=skipped")


@private.post("/queues/{queue_id}/undo")
def undo(queue_id: int, store: StoreDep, actor: AnyUser) -> Response:
    item_id = answering.undo_last(store, actor, queue_id)
    return redirect(f"/queues/{queue_id}?notice={'undone' if item_id else 'nothing-to-undo'}")


@private.post("/queues/{queue_id}/skips/reset")
def reset_skips(queue_id: int, store: StoreDep, actor: AnyUser) -> Response:
    answering.reset_skips(store, actor, queue_id)
    return redirect(f"/queues/{queue_id}?notice=skips-reset")


@private.get("/queues/{queue_id}/progress")
def progress_page(
    request: Request, queue_id: int, store: StoreDep, info: SessionDep, actor: AnyUser
) -> Response:
    return render(
        request,
        "progress.html",
        info,
        queue=queues.show_queue(store, actor, queue_id),
        progress=answering.progress(store, actor, queue_id),
    )


# --- reviewing -----------------------------------------------------------------------------


@private.get("/queues/{queue_id}/agreement")
def agreement_page(
    request: Request, queue_id: int, store: StoreDep, info: SessionDep, actor: Reviewer
) -> Response:
    result = review.queue_agreement(store, actor, queue_id)
    return render(
        request,
        "agreement.html",
        info,
        queue=queues.show_queue(store, actor, queue_id),
        result=result,
    )


@private.get("/queues/{queue_id}/disagreements")
def disagreements_page(
    request: Request,
    queue_id: int,
    store: StoreDep,
    info: SessionDep,
    actor: Reviewer,
    resolved: bool = True,
) -> Response:
    return render(
        request,
        "disagreements.html",
        info,
        queue=queues.show_queue(store, actor, queue_id),
        items=review.disagreements(store, actor, queue_id, include_resolved=resolved),
        show_resolved=resolved,
    )


def _adjudicate_page(
    request: Request,
    queue_id: int,
    item_id: int,
    store: Any,
    info: SessionInfo,
    status: int = 200,
    error: str = "",
) -> Response:
    actor = info.actor
    queue = queues.show_queue(store, actor, queue_id)
    return render(
        request,
        "adjudicate.html",
        info,
        status,
        queue=queue,
        item=review.review_item(store, actor, queue_id, item_id),
        keys=label_keys(queue.options.get("labels", [])),
        error=error,
    )


@private.get("/queues/{queue_id}/disagreements/{item_id}")
def adjudicate_page(
    request: Request,
    queue_id: int,
    item_id: int,
    store: StoreDep,
    info: SessionDep,
    _actor: Reviewer,
) -> Response:
    return _adjudicate_page(request, queue_id, item_id, store, info)


@private.post("/queues/{queue_id}/disagreements/{item_id}")
def adjudicate(
    request: Request,
    queue_id: int,
    item_id: int,
    store: StoreDep,
    info: SessionDep,
    actor: Reviewer,
    form: FormDep,
) -> Response:
    item = review.review_item(store, actor, queue_id, item_id)
    queue = queues.show_queue(store, actor, queue_id)
    try:
        value = form_value(queue.question, form_lists(form), len(item.responses))
        review.adjudicate(store, actor, queue_id, item_id, value, field(form, "note"))
    except (AnswerError, UserError) as exc:
        if isinstance(exc, UserError) and status_of(exc) != 400:
            raise
        return _adjudicate_page(request, queue_id, item_id, store, info, 400, str(exc))
    left = review.disagreements(store, actor, queue_id, include_resolved=False)
    later = [d for d in left if d.position > item.position] or left
    if later:
        return redirect(f"/queues/{queue_id}/disagreements/{later[0].item_id}?notice=saved")
    return redirect(f"/queues/{queue_id}/disagreements?notice=saved")


router = APIRouter()
router.include_router(public)
router.include_router(private)
router.include_router(admin.router)
