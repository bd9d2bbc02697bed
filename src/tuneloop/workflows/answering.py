"""Answering a queue: the next item for a person, submit, skip, undo of the last submit, and
progress. The same functions serve the web pages, the JSON API and tests.

Reads top to bottom: what a person may see of an item (``ItemView``: the record's input fields
only, never its reference output, other people's answers, or the model names behind responses;
the LLM suggestion only where the queue shows suggestions) -> ``next_item`` (their held item
first, else the first item that they have neither answered nor skipped and that has fewer
answers (the item's stored ``answer_count``) plus holds of others than the policy's people per
item; a hold lasts ``HOLD`` and makes sure no more people than that work on one item) ->
``submit`` (a person's second submit on an item replaces their answer) -> ``skip`` ->
``undo_last`` (their newest web answer goes back to being a held draft) -> ``progress``.

Every change to a queue's answers and holds locks the queue first (``lock_row``: a row lock on
PostgreSQL, the write lock on SQLite), so that people answering at the same moment are counted
one after the other: no answer is lost or doubled and no item gets more people than the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.orm import Session

from tuneloop.errors import Conflict, NotFound, UserError
from tuneloop.questions import AnswerError, check_value, label_keys
from tuneloop.store.db import Store, lock_row
from tuneloop.store.models import (
    Adjudication,
    Answer,
    Dataset,
    Queue,
    QueueClaim,
    QueueItem,
    Record,
    User,
)
from tuneloop.tasks import task_spec
from tuneloop.workflows.queues import load_queue
from tuneloop.workflows.users import Actor

HOLD = timedelta(minutes=30)
UNDOABLE = ("web", "api")
RESPONSE_NAMES = "ABCDEFGHI"


@dataclass
class ItemView:
    """What the person answering sees of one item."""

    queue_id: int
    queue_name: str
    item_id: int
    position: int  # 1-based
    total: int
    question: str
    options: dict[str, Any]
    guidelines: str | None
    task: str | None
    inputs: dict[str, Any]  # the record's input fields only
    responses: list[dict[str, str]]  # {"name": "A", "text": ...}; no model names
    suggestion: dict[str, Any] | None  # only where the queue shows suggestions
    answer: dict[str, Any] | None  # this person's answer (or undone draft), to edit
    keys: list[tuple[str, str]] = field(default_factory=list)  # (key, label) for labels

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue_id": self.queue_id,
            "item_id": self.item_id,
            "position": self.position,
            "total": self.total,
            "question": self.question,
            "options": self.options,
            "guidelines": self.guidelines,
            "task": self.task,
            "inputs": self.inputs,
            "responses": self.responses,
            "suggestion": self.suggestion,
            "answer": self.answer,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _view(session: Session, queue: Queue, item: QueueItem, actor: Actor | None) -> ItemView:
    task, inputs = None, {}
    if item.record_id is not None:
        row = session.execute(
            select(Record.fields, Dataset.task_type)
            .join(Dataset, Dataset.id == Record.dataset_id)
            .where(Record.id == item.record_id)
        ).one()
        task = row.task_type
        inputs = {k: row.fields[k] for k in task_spec(task).inputs if row.fields.get(k) is not None}
    answer = None
    if actor is not None:
        answer = session.scalar(
            select(Answer.value).where(Answer.queue_item_id == item.id, Answer.user_id == actor.id)
        )
        if answer is None:
            answer = session.scalar(
                select(QueueClaim.draft).where(
                    QueueClaim.queue_item_id == item.id, QueueClaim.user_id == actor.id
                )
            )
    total = session.scalar(select(func.count()).where(QueueItem.queue_id == queue.id)) or 0
    suggestion = None
    if queue.show_suggestions and item.suggestion:
        suggestion = item.suggestion.get("value")
    return ItemView(
        queue.id,
        queue.name,
        item.id,
        item.position + 1,
        total,
        queue.question,
        dict(queue.options),
        queue.guidelines,
        task,
        inputs,
        [
            {"name": RESPONSE_NAMES[i], "text": str(r.get("text", ""))}
            for i, r in enumerate(item.responses or [])
        ],
        suggestion,
        answer,
        label_keys(queue.options.get("labels", [])),
    )


def _item(session: Session, queue: Queue, item_id: int) -> QueueItem:
    item = session.get(QueueItem, item_id)
    if item is None or item.queue_id != queue.id:
        raise NotFound(f"no item {item_id} in queue {queue.name!r}")
    return item


def _hold(session: Session, item_id: int, user_id: int, draft: Any = None) -> None:
    claim = session.scalar(
        select(QueueClaim).where(QueueClaim.queue_item_id == item_id, QueueClaim.user_id == user_id)
    )
    if claim is None:
        claim = QueueClaim(queue_item_id=item_id, user_id=user_id)
        session.add(claim)
    claim.status, claim.draft = "working", draft
    claim.created_at, claim.expires_at = _now(), _now() + HOLD


def next_item(store: Store, actor: Actor, queue_id: int) -> ItemView | None:
    """The item this person should answer next (held for them), or None when none is left."""
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id, work=True)
        lock_row(session, Queue.id, queue.id)
        now = _now()
        answered_by_me = exists().where(
            Answer.queue_item_id == QueueItem.id, Answer.user_id == actor.id
        )
        held = session.scalar(
            select(QueueItem)
            .join(QueueClaim, QueueClaim.queue_item_id == QueueItem.id)
            .where(
                QueueItem.queue_id == queue.id,
                QueueClaim.user_id == actor.id,
                QueueClaim.status == "working",
                QueueClaim.expires_at > now,
                ~answered_by_me,
            )
            .order_by(QueueClaim.created_at.desc(), QueueItem.position)
            .limit(1)
        )
        if held is not None:
            return _view(session, queue, held, actor)
        holds = (
            select(func.count())
            .where(
                QueueClaim.queue_item_id == QueueItem.id,
                QueueClaim.status == "working",
                QueueClaim.expires_at > now,
                QueueClaim.user_id != actor.id,
            )
            .correlate(QueueItem)
            .scalar_subquery()
        )
        skipped = exists().where(
            QueueClaim.queue_item_id == QueueItem.id,
            QueueClaim.user_id == actor.id,
            QueueClaim.status == "skipped",
        )
        item = session.scalar(
            select(QueueItem)
            .where(  # the stored count first: full items are passed over without subqueries
                QueueItem.queue_id == queue.id,
                QueueItem.answer_count < queue.annotators_per_item,
                ~answered_by_me,
                ~skipped,
                QueueItem.answer_count + holds < queue.annotators_per_item,
            )
            .order_by(QueueItem.position)
            .limit(1)
        )
        if item is None:
            return None
        _hold(session, item.id, actor.id)
        return _view(session, queue, item, actor)


def open_item(store: Store, actor: Actor | None, queue_id: int, item_id: int) -> ItemView:
    """One item as the person sees it (to revisit their answer)."""
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id)
        return _view(session, queue, _item(session, queue, item_id), actor)


def submit(
    store: Store,
    actor: Actor,
    queue_id: int,
    item_id: int,
    value: Any,
    *,
    source: str = "web",
) -> int:
    """Store this person's answer (replacing their earlier one); the answer's id."""
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id, work=True)
        lock_row(session, Queue.id, queue.id)
        item = _item(session, queue, item_id)
        try:
            clean = check_value(queue.question, queue.options, value, len(item.responses or []))
        except AnswerError as exc:
            raise UserError(f"item {item_id}: {exc}") from None
        answer = session.scalar(
            select(Answer).where(Answer.queue_item_id == item.id, Answer.user_id == actor.id)
        )
        if answer is None:
            if item.answer_count >= queue.annotators_per_item:
                raise Conflict(
                    f"item {item_id} has its {queue.annotators_per_item} answer(s) already"
                )
            answer = Answer(queue_item_id=item.id, user_id=actor.id, created_at=_now())
            session.add(answer)
            item.answer_count += 1
        answer.value, answer.source, answer.updated_at = clean, source, _now()
        meta: dict[str, Any] = {}
        if queue.show_suggestions and item.suggestion:
            meta["suggestion"] = item.suggestion.get("value")  # shown: it may have anchored
        answer.meta = meta
        session.execute(
            delete(QueueClaim).where(
                QueueClaim.queue_item_id == item.id, QueueClaim.user_id == actor.id
            )
        )
        session.flush()
        return answer.id


def skip(store: Store, actor: Actor, queue_id: int, item_id: int) -> None:
    """Not this item now: it is not served to this person again until they reset skips."""
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id, work=True)
        lock_row(session, Queue.id, queue.id)
        item = _item(session, queue, item_id)
        _hold(session, item.id, actor.id)
        claim = session.scalar(
            select(QueueClaim).where(
                QueueClaim.queue_item_id == item.id, QueueClaim.user_id == actor.id
            )
        )
        assert claim is not None
        claim.status, claim.expires_at = "skipped", None


def reset_skips(store: Store, actor: Actor, queue_id: int) -> int:
    """Serve this person's skipped items again; how many there were."""
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id, work=True)
        lock_row(session, Queue.id, queue.id)
        ids = select(QueueItem.id).where(QueueItem.queue_id == queue.id)
        result = session.execute(
            delete(QueueClaim).where(
                QueueClaim.user_id == actor.id,
                QueueClaim.status == "skipped",
                QueueClaim.queue_item_id.in_(ids),
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)


def undo_last(store: Store, actor: Actor, queue_id: int) -> int | None:
    """Take back this person's newest answer given in the app: the item is held for them again
    with the answer as a draft. The item's id, or None when there is nothing to undo."""
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id, work=True)
        lock_row(session, Queue.id, queue.id)
        answer = session.scalar(
            select(Answer)
            .join(QueueItem, QueueItem.id == Answer.queue_item_id)
            .where(
                QueueItem.queue_id == queue.id,
                Answer.user_id == actor.id,
                Answer.source.in_(UNDOABLE),
            )
            .order_by(Answer.updated_at.desc(), Answer.id.desc())
            .limit(1)
        )
        if answer is None:
            return None
        if session.scalar(
            select(Adjudication.id).where(Adjudication.queue_item_id == answer.queue_item_id)
        ):
            raise Conflict("a reviewer has set the final answer of that item; it stays")
        item_id, draft = answer.queue_item_id, answer.value
        session.delete(answer)
        _item(session, queue, item_id).answer_count -= 1
        session.flush()
        _hold(session, item_id, actor.id, draft)
        return item_id


@dataclass
class Progress:
    items: int
    complete: int  # items with all the answers the policy asks for
    answers: int
    annotators_per_item: int
    mine: int  # answered by the asking person
    skipped: int  # skipped by the asking person
    left_for_me: int  # items the asking person could still answer
    per_annotator: dict[str, int]  # reviewers and admins only

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "complete": self.complete,
            "answers": self.answers,
            "annotators_per_item": self.annotators_per_item,
            "mine": self.mine,
            "skipped": self.skipped,
            "left_for_me": self.left_for_me,
            "per_annotator": self.per_annotator,
        }


def progress(store: Store, actor: Actor | None, queue_id: int) -> Progress:
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id)
        rows = session.execute(
            select(QueueItem.id, func.count(Answer.id))
            .outerjoin(Answer, Answer.queue_item_id == QueueItem.id)
            .where(QueueItem.queue_id == queue.id)
            .group_by(QueueItem.id)
        ).all()
        counts = {item_id: n for item_id, n in rows}
        need = queue.annotators_per_item
        mine: set[int] = set()
        skipped: set[int] = set()
        if actor is not None:
            mine = set(
                session.scalars(
                    select(Answer.queue_item_id)
                    .join(QueueItem, QueueItem.id == Answer.queue_item_id)
                    .where(QueueItem.queue_id == queue.id, Answer.user_id == actor.id)
                )
            )
            skipped = set(
                session.scalars(
                    select(QueueClaim.queue_item_id)
                    .join(QueueItem, QueueItem.id == QueueClaim.queue_item_id)
                    .where(
                        and_(
                            QueueItem.queue_id == queue.id,
                            QueueClaim.user_id == actor.id,
                            QueueClaim.status == "skipped",
                        )
                    )
                )
            )
        per: dict[str, int] = {}
        if actor is None or actor.can_review:
            per = {
                name: n
                for name, n in session.execute(
                    select(User.username, func.count(Answer.id))
                    .join(Answer, Answer.user_id == User.id)
                    .join(QueueItem, QueueItem.id == Answer.queue_item_id)
                    .where(QueueItem.queue_id == queue.id)
                    .group_by(User.username)
                    .order_by(User.username)
                )
            }
        left = sum(1 for i, n in counts.items() if i not in mine and i not in skipped and n < need)
        return Progress(
            items=len(counts),
            complete=sum(1 for n in counts.values() if n >= need),
            answers=sum(counts.values()),
            annotators_per_item=need,
            mine=len(mine),
            skipped=len(skipped - mine),
            left_for_me=left if actor is not None else 0,
            per_annotator=per,
        )
