"""Annotation queues: a set of items (records, optionally with model responses) with one
question type, its options and guidelines, and an assignment policy (how many distinct people
answer each item, and who may).

Reads top to bottom: who may see a queue (``load_queue``: annotators only their assigned
queues; reviewers and admins all) -> ``create_queue`` checks question, options,
responses and suggestions and writes queue, items and members in one transaction -> list,
show, assign and change the policy. Items come from ``queue_items.py``; answering is in
``answering.py``, agreement and adjudication in ``review.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneloop.errors import Conflict, Forbidden, NotFound, UserError
from tuneloop.questions import check_options, check_responses, check_value, question_spec
from tuneloop.store.datasets import resolve_dataset
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import (
    Dataset,
    Label,
    Project,
    Queue,
    QueueItem,
    QueueMember,
    Record,
    User,
)
from tuneloop.workflows.queue_items import NewItem
from tuneloop.workflows.users import Actor

MAX_ANNOTATORS = 20


@dataclass
class QueueSpec:
    """What a new queue asks and of whom."""

    name: str
    question: str  # label | multilabel | rating | pairwise | ranking | feedback | correction
    options: dict[str, Any] = field(default_factory=dict)  # labels, rubric, allow_tie, prompt
    guidelines: str | None = None
    annotators_per_item: int = 1  # distinct people who answer each item
    show_suggestions: bool = False  # show the items' LLM suggestions to the people
    dataset: str | None = None  # NAME[@VERSION] the items' records come from
    members: list[str] = field(default_factory=list)  # usernames who may work on it
    project: str = "default"


@dataclass
class QueueInfo:
    id: int
    name: str
    project: str
    question: str
    options: dict[str, Any]
    guidelines: str | None
    annotators_per_item: int
    show_suggestions: bool
    status: str
    dataset: str | None
    items: int
    members: list[str]
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "project": self.project,
            "question": self.question,
            "options": self.options,
            "guidelines": self.guidelines,
            "annotators_per_item": self.annotators_per_item,
            "show_suggestions": self.show_suggestions,
            "status": self.status,
            "dataset": self.dataset,
            "items": self.items,
            "members": self.members,
        }


def load_queue(
    session: Session, actor: Actor | None, queue_id: int, *, work: bool = False
) -> Queue:
    """The queue if ``actor`` may see it (``work``: and answer in it). ``None`` is the local
    operator (the CLI). An annotator learns nothing of queues not assigned to them."""
    queue = session.get(Queue, queue_id)
    member = (
        actor is not None
        and queue is not None
        and session.scalar(
            select(QueueMember.id).where(
                QueueMember.queue_id == queue_id, QueueMember.user_id == actor.id
            )
        )
        is not None
    )
    if queue is None or (actor is not None and not actor.can_review and not member):
        raise NotFound(f"no queue {queue_id}")
    if work:
        if actor is not None and not member:
            raise Forbidden(f"you are not assigned to queue {queue.name!r}")
        if queue.status != "open":
            raise Conflict(f"queue {queue.name!r} is closed")
    return queue


def resolve_queue(store: Store, ref: str, project: str = "default") -> int:
    """A queue's id from its name (in the project) or its id."""
    with store.transaction() as session:
        proj = get_project(session, project)
        query = select(Queue.id).where(Queue.project_id == proj.id, Queue.name == ref)
        found = session.scalar(query)
        if found is None and ref.isdigit():
            found = session.scalar(select(Queue.id).where(Queue.id == int(ref)))
        if found is None:
            names = session.scalars(select(Queue.name).where(Queue.project_id == proj.id)).all()
            known = ", ".join(sorted(names)) or "none yet (`tuneloop queue create`)"
            raise NotFound(f"no queue {ref!r} in project {proj.name!r}; queues: {known}")
        return found


def create_queue(store: Store, spec: QueueSpec, items: Sequence[NewItem]) -> QueueInfo:
    """A new queue with its items and members, all or nothing."""
    try:
        q = question_spec(spec.question)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not 1 <= spec.annotators_per_item <= MAX_ANNOTATORS:
        raise UserError(f"annotators per item must be 1..{MAX_ANNOTATORS}")
    if not spec.name.strip() or len(spec.name) > 200:
        raise UserError("a queue needs a name of 1..200 characters")
    if not items:
        raise UserError(f"queue {spec.name!r} would have no items")
    with store.transaction() as session:
        project = get_project(session, spec.project)
        if session.scalar(
            select(Queue.id).where(Queue.project_id == project.id, Queue.name == spec.name)
        ):
            raise UserError(f"queue {spec.name!r} exists already in project {project.name!r}")
        ds = resolve_dataset(session, project, spec.dataset) if spec.dataset else None
        try:
            options = check_options(q.type, spec.options, ds.labels if ds else None)
        except ValueError as exc:
            raise UserError(f"queue {spec.name!r}: {exc}") from None
        members = _users(session, spec.members)
        queue = Queue(
            project_id=project.id,
            name=spec.name,
            question=q.type.value,
            options=options,
            guidelines=spec.guidelines,
            annotators_per_item=spec.annotators_per_item,
            show_suggestions=spec.show_suggestions,
            status="open",
            dataset_id=ds.id if ds else None,
        )
        session.add(queue)
        session.flush()
        llm_labels = _llm_labels(session, [i.record_id for i in items if i.record_id])
        known = _known_records(session, [i.record_id for i in items if i.record_id], ds)
        for position, item in enumerate(items):
            where = item.location or f"item {position + 1}"
            if item.record_id is None and not item.responses:
                raise UserError(f"{where}: an item needs a record or responses")
            if item.record_id is not None and item.record_id not in known:
                in_ds = f" in dataset {ds.ref}" if ds else ""
                raise UserError(f"{where}: field 'record_id': no record {item.record_id}{in_ds}")
            try:
                check_responses(q.type, item.responses)
                suggestion = item.suggestion
                if suggestion is None and item.record_id in llm_labels:
                    suggestion = _as_answer(q.type.value, llm_labels[item.record_id])
                if suggestion is not None:
                    suggestion = check_value(q.type, options, suggestion, len(item.responses or []))
            except ValueError as exc:
                raise UserError(f"{where}: {exc}") from None
            session.add(
                QueueItem(
                    queue_id=queue.id,
                    position=position,
                    record_id=item.record_id,
                    responses=[dict(r) for r in item.responses] if item.responses else None,
                    suggestion=None if suggestion is None else {"value": suggestion},
                )
            )
        for user in members:
            session.add(QueueMember(queue_id=queue.id, user_id=user.id))
        session.flush()
        return _info(session, queue)


def _users(session: Session, usernames: Iterable[str]) -> list[User]:
    users = []
    for name in dict.fromkeys(u.strip().lower() for u in usernames if u.strip()):
        user = session.scalar(select(User).where(User.username == name))
        if user is None:
            raise NotFound(f"no user {name!r} (add one with `tuneloop users add`)")
        users.append(user)
    return users


def _known_records(session: Session, record_ids: list[int], ds: Dataset | None) -> set[int]:
    known: set[int] = set()
    for start in range(0, len(record_ids), 1000):
        query = select(Record.id).where(Record.id.in_(record_ids[start : start + 1000]))
        if ds is not None:
            query = query.where(Record.dataset_id == ds.id)
        known.update(session.scalars(query))
    return known


def _llm_labels(session: Session, record_ids: list[int]) -> dict[int, Any]:
    """The newest accepted LLM label of each record (a suggestion for label queues)."""
    out: dict[int, Any] = {}
    for start in range(0, len(record_ids), 1000):
        rows = session.execute(
            select(Label.record_id, Label.value)
            .where(
                Label.record_id.in_(record_ids[start : start + 1000]),
                Label.source == "llm",
                Label.status == "accepted",
            )
            .order_by(Label.id)
        )
        out.update({rid: value for rid, value in rows})
    return out


def _as_answer(question: str, label: Any) -> dict[str, Any] | None:
    if question == "label" and isinstance(label, str):
        return {"label": label}
    if question == "multilabel":
        return {"labels": label if isinstance(label, list) else [label]}
    return None  # other questions take suggestions only from the items themselves


def _info(session: Session, queue: Queue) -> QueueInfo:
    items = session.scalar(select(func.count()).where(QueueItem.queue_id == queue.id)) or 0
    members = session.scalars(
        select(User.username)
        .join(QueueMember, QueueMember.user_id == User.id)
        .where(QueueMember.queue_id == queue.id)
        .order_by(User.username)
    ).all()
    ds = session.get(Dataset, queue.dataset_id) if queue.dataset_id else None
    project = session.get(Project, queue.project_id)
    assert project is not None
    return QueueInfo(
        queue.id,
        queue.name,
        project.name,
        queue.question,
        dict(queue.options),
        queue.guidelines,
        queue.annotators_per_item,
        queue.show_suggestions,
        queue.status,
        ds.ref if ds else None,
        items,
        list(members),
        queue.created_at,
    )


def list_queues(store: Store, actor: Actor | None, project: str | None = None) -> list[QueueInfo]:
    """The queues ``actor`` may see (annotators: their assigned ones), newest first."""
    with store.transaction() as session:
        query = select(Queue).order_by(Queue.id.desc())
        if project is not None:
            query = query.where(Queue.project_id == get_project(session, project).id)
        if actor is not None and not actor.can_review:
            query = query.join(QueueMember, QueueMember.queue_id == Queue.id).where(
                QueueMember.user_id == actor.id
            )
        return [_info(session, q) for q in session.scalars(query)]


def show_queue(store: Store, actor: Actor | None, queue_id: int) -> QueueInfo:
    with store.transaction() as session:
        return _info(session, load_queue(session, actor, queue_id))


def _require_admin(actor: Actor | None) -> None:
    if actor is not None and not actor.is_admin:
        raise Forbidden("only an admin may change queues and their members")


def assign(
    store: Store,
    actor: Actor | None,
    queue_id: int,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
) -> QueueInfo:
    """Add and remove members; their answers stay when they leave."""
    _require_admin(actor)
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id)
        current = set(
            session.scalars(select(QueueMember.user_id).where(QueueMember.queue_id == queue.id))
        )
        for user in _users(session, add):
            if user.id not in current:
                session.add(QueueMember(queue_id=queue.id, user_id=user.id))
                current.add(user.id)
        for user in _users(session, remove):
            member = session.scalar(
                select(QueueMember).where(
                    QueueMember.queue_id == queue.id, QueueMember.user_id == user.id
                )
            )
            if member is not None:
                session.delete(member)
        session.flush()
        return _info(session, queue)


def update_queue(
    store: Store,
    actor: Actor | None,
    queue_id: int,
    *,
    annotators_per_item: int | None = None,
    show_suggestions: bool | None = None,
    status: str | None = None,
    guidelines: str | None = None,
) -> QueueInfo:
    """Change the policy: people per item, suggestions shown, open/closed, guidelines."""
    _require_admin(actor)
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id)
        if annotators_per_item is not None:
            if not 1 <= annotators_per_item <= MAX_ANNOTATORS:
                raise UserError(f"annotators per item must be 1..{MAX_ANNOTATORS}")
            queue.annotators_per_item = annotators_per_item
        if show_suggestions is not None:
            queue.show_suggestions = show_suggestions
        if status is not None:
            if status not in ("open", "closed"):
                raise UserError(f"queue status is open or closed, got {status!r}")
            queue.status = status
        if guidelines is not None:
            queue.guidelines = guidelines or None
        return _info(session, queue)
