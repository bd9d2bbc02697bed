"""Reviewing a queue: agreement among its annotators, the items where they disagree, and the
reviewer's final answer (adjudication).

Reads top to bottom: the answers as a table (one row per item, or per item and response for
rankings; one column per annotator, whatever the answer's source) -> Krippendorff's alpha of
all annotators and, per pair, Cohen's kappa and the pair's own alpha, all from
``tuneloop.metrics.agreement.agreement`` (the function ``tuneloop judge calibrate`` uses) ->
disagreements (items whose answers differ) with everything a reviewer needs -> ``adjudicate``
sets the final answer -> ``resolved`` gives each item's final answer (adjudicated, or the
answer every annotator gave).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.errors import Forbidden, NotFound, UserError
from tuneloop.metrics.agreement import Agreement, agreement
from tuneloop.metrics.intervals import Interval
from tuneloop.questions import (
    AnswerError,
    agreement_scale,
    agreement_units,
    check_value,
    same_answer,
)
from tuneloop.store.db import Store, lock_row
from tuneloop.store.models import Adjudication, Answer, Dataset, Queue, QueueItem, Record, User
from tuneloop.tasks import task_spec
from tuneloop.workflows.queues import load_queue
from tuneloop.workflows.users import Actor


def _require_reviewer(actor: Actor | None) -> None:
    if actor is not None and not actor.can_review:
        raise Forbidden("only reviewers and admins may see agreement and adjudicate")


def _answers(session: Session, queue: Queue) -> list[tuple[QueueItem, str, dict[str, Any], str]]:
    """(item, username, value, source) of every answer in the queue, in item order."""
    rows = session.execute(
        select(QueueItem, User.username, Answer.value, Answer.source)
        .join(Answer, Answer.queue_item_id == QueueItem.id)
        .join(User, User.id == Answer.user_id)
        .where(QueueItem.queue_id == queue.id)
        .order_by(QueueItem.position, User.username)
    ).all()
    return [(item, name, value, source) for item, name, value, source in rows]


@dataclass
class QueueAgreement:
    queue: str
    question: str
    level: str | None  # None: free-text answers have no agreement here
    overall: Agreement | None
    pair_alpha: dict[tuple[str, str], Interval]
    table: list[list[Any]]  # units x annotators, as given to ``agreement``
    raters: list[str]
    value_order: list[Any] | None
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        overall = self.overall.to_dict() if self.overall is not None else None
        if overall is not None:
            for pair in overall["pairs"]:
                pair["alpha"] = self.pair_alpha[(pair["a"], pair["b"])].to_dict()
        return {
            "queue": self.queue,
            "question": self.question,
            "level": self.level,
            "agreement": overall,
            "notes": self.notes,
        }


def queue_agreement(
    store: Store, actor: Actor | None, queue_id: int, *, resamples: int = 1000, seed: int = 0
) -> QueueAgreement:
    """Agreement among the queue's annotators (every answer counts, imported ones too)."""
    _require_reviewer(actor)
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id)
        answers = _answers(session, queue)
        widest = max((len(item.responses or []) for item, *_ in answers), default=0)
    scale = agreement_scale(queue.question, widest)
    if scale is None:
        note = f"{queue.question} answers are free text: no agreement statistic"
        return QueueAgreement(queue.name, queue.question, None, None, {}, [], [], None, [note])
    level, order = scale
    raters = sorted({name for _, name, _, _ in answers})
    column = {name: i for i, name in enumerate(raters)}
    units: dict[tuple[int, int], list[Any]] = {}
    for item, name, value, _ in answers:
        for unit, coded in agreement_units(queue.question, value):
            units.setdefault((item.position, unit), [None] * len(raters))[column[name]] = coded
    table = [units[key] for key in sorted(units)]
    overall = agreement(
        table, level, rater_names=raters, value_order=order, resamples=resamples, seed=seed
    )
    pair_alpha = {}
    for pair in overall.pairs:
        i, j = column[pair.a], column[pair.b]
        two = agreement(
            [[row[i], row[j]] for row in table],
            level,
            rater_names=[pair.a, pair.b],
            value_order=order,
            resamples=resamples,
            seed=seed,
        )
        pair_alpha[(pair.a, pair.b)] = two.alpha
    notes = list(overall.notes)
    if queue.question == "ranking":
        notes.append("rankings: each response's rank (1 = best) is one ordinal unit")
    if queue.question == "multilabel":
        notes.append("multilabel: each set of labels is one nominal value")
    return QueueAgreement(
        queue.name, queue.question, level, overall, pair_alpha, table, raters, order, notes
    )


@dataclass
class ReviewItem:
    """An item as a reviewer sees it: everything, with who answered what."""

    item_id: int
    position: int
    inputs: dict[str, Any]
    reference: Any  # the record's reference output (reviewers may see it)
    responses: list[dict[str, Any]]  # with the model names
    suggestion: dict[str, Any] | None
    answers: list[tuple[str, dict[str, Any], str]]  # (username, value, source)
    final: dict[str, Any] | None  # the adjudicated answer
    final_by: str | None
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "position": self.position,
            "inputs": self.inputs,
            "reference": self.reference,
            "responses": self.responses,
            "suggestion": self.suggestion,
            "answers": [{"user": u, "value": v, "source": s} for u, v, s in self.answers],
            "final": self.final,
            "final_by": self.final_by,
            "note": self.note,
        }


def _disagree(values: list[dict[str, Any]]) -> bool:
    return any(not same_answer(values[0], v) for v in values[1:])


def _review_item(
    session: Session, item: QueueItem, answers: list[tuple[str, dict[str, Any], str]]
) -> ReviewItem:
    inputs: dict[str, Any] = {}
    reference = None
    if item.record_id is not None:
        fields, task = session.execute(
            select(Record.fields, Dataset.task_type)
            .join(Dataset, Dataset.id == Record.dataset_id)
            .where(Record.id == item.record_id)
        ).one()
        spec = task_spec(task)
        inputs = {k: fields[k] for k in spec.inputs if fields.get(k) is not None}
        reference = fields.get(spec.target)
    adj = session.scalar(select(Adjudication).where(Adjudication.queue_item_id == item.id))
    by = session.get(User, adj.user_id) if adj is not None and adj.user_id else None
    return ReviewItem(
        item.id,
        item.position + 1,
        inputs,
        reference,
        [dict(r) for r in item.responses or []],
        item.suggestion.get("value") if item.suggestion else None,
        answers,
        adj.value if adj is not None else None,
        by.username if by is not None else None,
        adj.note if adj is not None else None,
    )


def disagreements(
    store: Store, actor: Actor | None, queue_id: int, *, include_resolved: bool = True
) -> list[ReviewItem]:
    """Items with two or more answers that differ, in queue order."""
    _require_reviewer(actor)
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id)
        grouped: dict[int, tuple[QueueItem, list[tuple[str, dict[str, Any], str]]]] = {}
        for item, name, value, source in _answers(session, queue):
            grouped.setdefault(item.id, (item, []))[1].append((name, value, source))
        out = []
        for item, answers in grouped.values():
            if len(answers) < 2 or not _disagree([v for _, v, _ in answers]):
                continue
            view = _review_item(session, item, answers)
            if include_resolved or view.final is None:
                out.append(view)
        return out


def review_item(store: Store, actor: Actor | None, queue_id: int, item_id: int) -> ReviewItem:
    _require_reviewer(actor)
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id)
        item = session.get(QueueItem, item_id)
        if item is None or item.queue_id != queue.id:
            raise NotFound(f"no item {item_id} in queue {queue.name!r}")
        answers = [(n, v, s) for it, n, v, s in _answers(session, queue) if it.id == item.id]
        return _review_item(session, item, answers)


def adjudicate(
    store: Store,
    actor: Actor | None,
    queue_id: int,
    item_id: int,
    value: Any,
    note: str | None = None,
) -> None:
    """Set (or replace) the item's final answer."""
    _require_reviewer(actor)
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id)
        lock_row(session, Queue.id, queue.id)
        item = session.get(QueueItem, item_id)
        if item is None or item.queue_id != queue.id:
            raise NotFound(f"no item {item_id} in queue {queue.name!r}")
        try:
            clean = check_value(queue.question, queue.options, value, len(item.responses or []))
        except AnswerError as exc:
            raise UserError(f"item {item_id}: {exc}") from None
        adj = session.scalar(select(Adjudication).where(Adjudication.queue_item_id == item.id))
        if adj is None:
            adj = Adjudication(queue_item_id=item.id)
            session.add(adj)
        adj.value, adj.note = clean, note or None
        adj.user_id = actor.id if actor is not None else None
        adj.updated_at = datetime.now(UTC)


@dataclass(frozen=True)
class Resolved:
    item_id: int
    record_id: int | None
    value: dict[str, Any] | None  # None: unresolved (no answers, or a disagreement)
    how: str  # adjudicated | unanimous | disagreement | unanswered
    answers: int


def resolved(store: Store, actor: Actor | None, queue_id: int) -> list[Resolved]:
    """Each item's final answer: the reviewer's, else the one answer every annotator gave."""
    _require_reviewer(actor)
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id)
        items = session.scalars(
            select(QueueItem).where(QueueItem.queue_id == queue.id).order_by(QueueItem.position)
        ).all()
        finals: dict[int, dict[str, Any]] = dict(
            session.execute(
                select(Adjudication.queue_item_id, Adjudication.value)
                .join(QueueItem, QueueItem.id == Adjudication.queue_item_id)
                .where(QueueItem.queue_id == queue.id)
            ).all()
        )
        by_item: dict[int, list[dict[str, Any]]] = {}
        for item, _, given, _ in _answers(session, queue):
            by_item.setdefault(item.id, []).append(given)
    out = []
    for item in items:
        values = by_item.get(item.id, [])
        value: dict[str, Any] | None = None
        how = "disagreement"
        if item.id in finals:
            value, how = finals[item.id], "adjudicated"
        elif not values:
            how = "unanswered"
        elif not _disagree(values):
            value, how = values[0], "unanimous"
        out.append(Resolved(item.id, item.record_id, value, how, len(values)))
    return out
