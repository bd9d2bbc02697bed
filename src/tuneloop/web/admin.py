"""Admin pages: people (add, roles, enable/disable), new queues, and queue assignment and
policy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import FormData, UploadFile

from tuneloop.errors import UserError
from tuneloop.questions import DEFAULT_RUBRIC, QUESTIONS, RATINGS
from tuneloop.web.deps import Admin, FormDep, SessionDep, StoreDep, check_csrf, form_lists
from tuneloop.web.render import field, redirect, render
from tuneloop.workflows import queue_items, queues, users
from tuneloop.workflows.queue_items import DatasetChoice
from tuneloop.workflows.users import SessionInfo

router = APIRouter(dependencies=[Depends(check_csrf)])

MAX_ITEMS_FILE = 20 * 1024 * 1024  # bytes of an uploaded items file
SPLITS = ("train", "validation", "test", "unsplit", "gold")
NEW_QUEUE = {
    "question": ["label"],
    "annotators_per_item": ["1"],
    "seed": ["0"],
    "allow_tie": ["1"],
    **{f"rubric_{r}": [text] for r, text in DEFAULT_RUBRIC.items()},
}


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


# --- a new queue (declared before /admin/queues/{queue_id}) ----------------------------------


def _new_queue_page(
    request: Request,
    store: Any,
    info: SessionInfo,
    values: dict[str, list[str]],
    error: str = "",
) -> Response:
    return render(
        request,
        "admin_queue_new.html",
        info,
        400 if error else 200,
        values={key: (v[0] if v else "") for key, v in values.items()},
        chosen_splits=values.get("split", []),
        chosen_members=values.get("member", []),
        questions=list(QUESTIONS.values()),
        datasets=queue_items.dataset_choices(store),
        people=[u for u in users.list_users(store) if u.active],
        splits=SPLITS,
        ratings=RATINGS,
        error=error,
    )


@router.get("/admin/queues/new")
def new_queue_page(request: Request, store: StoreDep, info: SessionDep, _actor: Admin) -> Response:
    return _new_queue_page(request, store, info, NEW_QUEUE)


@router.post("/admin/queues")
def add_queue(
    request: Request, store: StoreDep, info: SessionDep, _actor: Admin, form: FormDep
) -> Response:
    values = form_lists(form)
    try:
        created = _create_from_form(store, values, _upload(form))
    except UserError as exc:
        return _new_queue_page(request, store, info, values, str(exc))
    return redirect(f"/admin/queues/{created.id}?notice=created")


def _upload(form: FormData) -> tuple[str, str] | None:
    """The uploaded items file as (name, text), or None when none was chosen."""
    upload = form.get("items")
    if not isinstance(upload, UploadFile) or not upload.filename:
        return None
    data = upload.file.read(MAX_ITEMS_FILE + 1)
    if len(data) > MAX_ITEMS_FILE:
        raise UserError(f"items file {upload.filename}: larger than {MAX_ITEMS_FILE >> 20} MB")
    try:
        return upload.filename, data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"items file {upload.filename}: not UTF-8 text") from None


def _one(values: dict[str, list[str]], key: str) -> str:
    return (values.get(key) or [""])[0].strip()


def _whole(values: dict[str, list[str]], key: str, what: str) -> int | None:
    raw = _one(values, key)
    if not raw:
        return None
    if not raw.isdigit():
        raise UserError(f"{what} must be a whole number, got {raw!r}")
    return int(raw)


def _csv(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _create_from_form(
    store: Any, values: dict[str, list[str]], upload: tuple[str, str] | None
) -> queues.QueueInfo:
    """The queue the new-queue form asks for, through the same workflows as the CLI."""
    question = _one(values, "question")
    options: dict[str, Any] = {}
    if question in ("label", "multilabel") and _csv(_one(values, "labels")):
        options["labels"] = _csv(_one(values, "labels"))
    if question == "rating":
        options["rubric"] = {str(r): _one(values, f"rubric_{r}") for r in RATINGS}
        if not all(options["rubric"].values()):
            raise UserError("the rubric describes each rating 1 to 5")
    if question == "pairwise":
        options["allow_tie"] = _one(values, "allow_tie") == "1"
    if _one(values, "prompt"):
        options["prompt"] = _one(values, "prompt")
    dataset: DatasetChoice | None = None
    if _one(values, "dataset"):
        wanted = _one(values, "dataset")
        found = [d for d in queue_items.dataset_choices(store) if str(d.id) == wanted]
        if not found:
            raise UserError(f"no dataset with id {wanted!r}")
        dataset = found[0]
    project = dataset.project if dataset else "default"
    seed = _whole(values, "seed", "the seed")
    per_item = _whole(values, "annotators_per_item", "people per item")
    items = queue_items.select_items(
        store,
        dataset=dataset.ref if dataset else None,
        rows=queue_items.jsonl_rows(upload[1], upload[0]) if upload else None,
        splits=values.get("split", []),
        n=_whole(values, "n", "the sample size"),
        seed=0 if seed is None else seed,
        ids=_csv(_one(values, "ids")),
        project=project,
    )
    guidelines = (values.get("guidelines") or [""])[0].replace("\r\n", "\n").strip()
    spec = queues.QueueSpec(
        name=_one(values, "name"),
        question=question,
        options=options,
        guidelines=guidelines or None,
        annotators_per_item=1 if per_item is None else per_item,
        show_suggestions=_one(values, "show_suggestions") == "1",
        dataset=dataset.ref if dataset else None,
        members=values.get("member", []),
        project=project,
    )
    return queues.create_queue(store, spec, items)


# --- an existing queue -----------------------------------------------------------------------


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
