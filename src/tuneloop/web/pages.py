"""The server-rendered pages: sign in, my queues, the answering page (every question type,
keyboard first), progress; for reviewers agreement and adjudication; for admins people and
queue assignment. Each route is a thin shell over a workflow function."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from tuneloop.errors import UserError
from tuneloop.questions import RATINGS, AnswerError, label_keys
from tuneloop.web.deps import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Admin,
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
from tuneloop.workflows import answering, queues, review, users
from tuneloop.workflows.users import SessionInfo

public = APIRouter()
private = APIRouter(dependencies=[Depends(check_csrf)])

NOTICES = {
    "undone": "Your last answer was taken back: change it and submit again.",
    "nothing-to-undo": "Nothing to undo.",
    "skipped": "Skipped.",
    "skips-reset": "Your skipped items are back in the queue.",
    "saved": "Saved.",
    "added": "Added.",
}


def render(
    request: Request,
    name: str,
    info: SessionInfo | None,
    status: int = 200,
    **context: Any,
) -> Response:
    context.setdefault("notice", NOTICES.get(request.query_params.get("notice", ""), ""))
    queue = context.get("queue")
    if queue is not None and info is not None:
        context.setdefault("member", info.actor.username in queue.members)
    return web_state(request).templates.TemplateResponse(
        request,
        name,
        {
            "user": info.actor if info else None,
            "csrf": info.csrf_token if info else "",
            "ratings": RATINGS,
            **context,
        },
        status_code=status,
    )


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)


def safe_next(target: str | None) -> str:
    """Only a path on this site (no //host, no scheme) may follow the sign-in."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/queues"
    return target


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


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
    sent, expected = _field(form, "csrf_token"), request.cookies.get(LOGIN_COOKIE, "")
    if not sent or not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
        raise CsrfFailed()
    target = safe_next(_field(form, "next"))
    ip = request.client.host if request.client else "unknown"
    try:
        actor = users.authenticate(store, _field(form, "username"), _field(form, "password"), ip)
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
            username=_field(form, "username"),
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
        review.adjudicate(store, actor, queue_id, item_id, value, _field(form, "note"))
    except (AnswerError, UserError) as exc:
        if isinstance(exc, UserError) and status_of(exc) != 400:
            raise
        return _adjudicate_page(request, queue_id, item_id, store, info, 400, str(exc))
    left = review.disagreements(store, actor, queue_id, include_resolved=False)
    later = [d for d in left if d.position > item.position] or left
    if later:
        return redirect(f"/queues/{queue_id}/disagreements/{later[0].item_id}?notice=saved")
    return redirect(f"/queues/{queue_id}/disagreements?notice=saved")


# --- administration ------------------------------------------------------------------------


@private.get("/admin")
def admin_home(_actor: Admin) -> Response:
    return redirect("/admin/users")


def _users_page(request: Request, store: Any, info: SessionInfo, error: str = "") -> Response:
    return render(
        request,
        "admin_users.html",
        info,
        400 if error else 200,
        people=users.list_users(store),
        roles=users.ROLES,
        error=error,
    )


@private.get("/admin/users")
def users_page(request: Request, store: StoreDep, info: SessionDep, _actor: Admin) -> Response:
    return _users_page(request, store, info)


@private.post("/admin/users")
def add_user(
    request: Request, store: StoreDep, info: SessionDep, _actor: Admin, form: FormDep
) -> Response:
    try:
        users.add_user(
            store, _field(form, "username"), _field(form, "role"), _field(form, "password")
        )
    except UserError as exc:
        return _users_page(request, store, info, str(exc))
    return redirect("/admin/users?notice=added")


@private.post("/admin/users/{username}")
def change_user(username: str, store: StoreDep, actor: Admin, form: FormDep) -> Response:
    if _field(form, "active") in ("0", "1"):
        if username == actor.username and _field(form, "active") == "0":
            raise UserError("you cannot disable yourself")
        users.set_active(store, username, _field(form, "active") == "1")
    if _field(form, "role"):
        users.set_role(store, username, _field(form, "role"))
    return redirect("/admin/users?notice=saved")


@private.get("/admin/queues/{queue_id}")
def queue_admin_page(
    request: Request, queue_id: int, store: StoreDep, info: SessionDep, actor: Admin
) -> Response:
    return render(
        request,
        "admin_queue.html",
        info,
        queue=queues.show_queue(store, actor, queue_id),
        people=[u for u in users.list_users(store) if u.active],
    )


@private.post("/admin/queues/{queue_id}/members")
def set_members(queue_id: int, store: StoreDep, actor: Admin, form: FormDep) -> Response:
    current = set(queues.show_queue(store, actor, queue_id).members)
    wanted = set(form_lists(form).get("member", []))
    queues.assign(store, actor, queue_id, sorted(wanted - current), sorted(current - wanted))
    return redirect(f"/admin/queues/{queue_id}?notice=saved")


@private.post("/admin/queues/{queue_id}/policy")
def set_policy(queue_id: int, store: StoreDep, actor: Admin, form: FormDep) -> Response:
    per_item = _field(form, "annotators_per_item")
    if per_item and not per_item.isdigit():
        raise UserError(f"annotators per item must be a number, got {per_item!r}")
    queues.update_queue(
        store,
        actor,
        queue_id,
        annotators_per_item=int(per_item) if per_item else None,
        show_suggestions=_field(form, "show_suggestions") == "1",
        status=_field(form, "status") or None,
        guidelines=_field(form, "guidelines").replace("\r\n", "\n"),
    )
    return redirect(f"/admin/queues/{queue_id}?notice=saved")


router = APIRouter()
router.include_router(public)
router.include_router(private)
