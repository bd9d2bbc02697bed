"""Admin pages: people (add, roles, enable/disable) and queue assignment and policy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from tuneloop.errors import UserError
from tuneloop.web.deps import Admin, FormDep, SessionDep, StoreDep, check_csrf, form_lists
from tuneloop.web.render import field, redirect, render
from tuneloop.workflows import queues, users
from tuneloop.workflows.users import SessionInfo

router = APIRouter(dependencies=[Depends(check_csrf)])


@router.get("/admin")
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


@router.get("/admin/users")
def users_page(request: Request, store: StoreDep, info: SessionDep, _actor: Admin) -> Response:
    return _users_page(request, store, info)


@router.post("/admin/users")
def add_user(
    request: Request, store: StoreDep, info: SessionDep, _actor: Admin, form: FormDep
) -> Response:
    try:
        users.add_user(store, field(form, "username"), field(form, "role"), field(form, "password"))
    except UserError as exc:
        return _users_page(request, store, info, str(exc))
    return redirect("/admin/users?notice=added")


@router.post("/admin/users/{username}")
def change_user(username: str, store: StoreDep, actor: Admin, form: FormDep) -> Response:
    if field(form, "active") in ("0", "1"):
        if username == actor.username and field(form, "active") == "0":
            raise UserError("you cannot disable yourself")
        users.set_active(store, username, field(form, "active") == "1")
    if field(form, "role"):
        users.set_role(store, username, field(form, "role"))
    return redirect("/admin/users?notice=saved")


@router.get("/admin/queues/{queue_id}")
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


@router.post("/admin/queues/{queue_id}/members")
def set_members(queue_id: int, store: StoreDep, actor: Admin, form: FormDep) -> Response:
    current = set(queues.show_queue(store, actor, queue_id).members)
    wanted = set(form_lists(form).get("member", []))
    queues.assign(store, actor, queue_id, sorted(wanted - current), sorted(current - wanted))
    return redirect(f"/admin/queues/{queue_id}?notice=saved")


@router.post("/admin/queues/{queue_id}/policy")
def set_policy(queue_id: int, store: StoreDep, actor: Admin, form: FormDep) -> Response:
    per_item = field(form, "annotators_per_item")
    if per_item and not per_item.isdigit():
        raise UserError(f"annotators per item must be a number, got {per_item!r}")
    queues.update_queue(
        store,
        actor,
        queue_id,
        annotators_per_item=int(per_item) if per_item else None,
        show_suggestions=field(form, "show_suggestions") == "1",
        status=field(form, "status") or None,
        guidelines=field(form, "guidelines").replace("\r\n", "\n"),
    )
    return redirect(f"/admin/queues/{queue_id}?notice=saved")
