"""Simulated annotators: a label queue answered from its records' own labels, each answer
flipped to another label with a chosen probability, so that selection strategies can be
compared without people.

Reads top to bottom: check the options -> the queue (a label queue, open) and each item's true
label (the record's reference output, or a metadata field with ``reference="meta.NAME"``: how an
experiment keeps the truth away from training), every one a label of the queue; all of it
checked before anything is written -> the simulated people ``sim-1`` ... ``sim-A``: annotators
without a password and inactive, so nobody can sign in as them, made once and assigned to the
queue -> each takes items exactly as a person in the web app does (``next_item``, then
``submit`` with source ``simulated``), so the queue's policy holds (people per item, holds of
people working on it now) -> counts.

Idempotent: nobody is served an item they have answered, so a second run adds nothing, and a
run cut short is finished by the next. Whether an answer is flipped, and to which label, is
drawn from a generator seeded by (seed, annotator, item position): the same options give the
same answers in any order. ``feedback apply`` then makes the final answers human labels, as it
does for people's (their ``user`` is the simulated annotator).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.chat import target
from tuneloop.errors import UserError
from tuneloop.store.db import Store
from tuneloop.store.models import Dataset, Queue, QueueItem, QueueMember, Record, User
from tuneloop.workflows.answering import next_item, progress, submit
from tuneloop.workflows.queues import MAX_ANNOTATORS, resolve_queue
from tuneloop.workflows.users import Actor

SOURCE = "simulated"  # the answers' source
PREFIX = "sim-"  # simulated annotators are sim-1, sim-2, ...


@dataclass
class SimulateOptions:
    queue: str  # name or id
    noise: float = 0.1  # chance that an answer is another label than the true one
    annotators: int | None = None  # simulated people; default: the queue's people per item
    seed: int = 0
    reference: str | None = None  # None: the record's reference output; meta.NAME: metadata
    project: str = "default"


@dataclass
class SimulateResult:
    queue: str
    queue_id: int
    annotators: list[str]
    answers: int  # given in this run
    flipped: int  # of those, answers other than the true label
    per_annotator: dict[str, int]  # answers given in this run
    items: int
    complete: int  # items with every answer the policy asks for, after this run
    new_users: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def simulate_answers(store: Store, opts: SimulateOptions) -> SimulateResult:
    """Answer every open item of a label queue with simulated annotators."""
    if not 0.0 <= opts.noise <= 1.0:
        raise UserError(f"--noise is a probability from 0 to 1, got {opts.noise}")
    if opts.annotators is not None and not 1 <= opts.annotators <= MAX_ANNOTATORS:
        raise UserError(f"--annotators must be 1..{MAX_ANNOTATORS}, got {opts.annotators}")
    meta_key = _meta_key(opts.reference)
    queue_id = resolve_queue(store, opts.queue, opts.project)
    with store.transaction() as session:
        queue = session.get(Queue, queue_id)
        assert queue is not None
        name, per_item = queue.name, queue.annotators_per_item
        if queue.question != "label":
            raise UserError(
                f"queue {name!r} asks {queue.question}: simulated annotators answer label "
                "queues (from each record's reference label)"
            )
        if queue.status != "open":
            raise UserError(
                f"queue {name!r} is closed (`tuneloop queue assign {name} --status open`)"
            )
        labels = list(queue.options.get("labels") or [])
        truth = _true_labels(session, queue, labels, meta_key)
        count = opts.annotators or per_item
        people = [f"{PREFIX}{i}" for i in range(1, count + 1)]
        made = _simulated_people(session, queue_id, people)
        actors = {
            u.username: Actor(u.id, u.username, u.role)
            for u in session.scalars(select(User).where(User.username.in_(people)))
        }

    given: dict[str, int] = dict.fromkeys(people, 0)
    flipped = 0
    for person in people:
        actor = actors[person]
        while (view := next_item(store, actor, queue_id)) is not None:
            true = truth[view.item_id]
            rng = random.Random(f"{opts.seed}:{person}:{view.position}")
            others = [label for label in labels if label != true]
            answer = true
            if rng.random() < opts.noise and others:
                answer = rng.choice(others)
            submit(store, actor, queue_id, view.item_id, {"label": answer}, source=SOURCE)
            given[person] += 1
            flipped += answer != true
    done = progress(store, None, queue_id)
    notes = []
    if count < per_item:
        notes.append(
            f"the queue asks {per_item} people per item and {count} simulated annotators "
            f"answered: its items stay incomplete until {per_item - count} more answer"
        )
    if done.complete < done.items and count >= per_item:
        notes.append(
            f"{done.items - done.complete} items still need answers: people are working on "
            "them now (run again when they are done)"
        )
    return SimulateResult(
        name,
        queue_id,
        people,
        sum(given.values()),
        flipped,
        given,
        done.items,
        done.complete,
        made,
        notes,
    )


def _meta_key(reference: str | None) -> str | None:
    if reference is None:
        return None
    key = reference.removeprefix("meta.")
    if key == reference or not key:
        raise UserError(
            f"--reference {reference!r}: give meta.NAME (the record's metadata field NAME), or "
            "leave it out for the record's reference output"
        )
    return key


def _true_labels(
    session: Session, queue: Queue, labels: list[str], meta_key: str | None
) -> dict[int, str]:
    """Each item's true label; one error for items without a record or a true label (how many,
    and the first), or with a true label that is none of the queue's labels."""
    rows = session.execute(
        select(QueueItem.id, QueueItem.position, Record.external_id, Record.fields, Record.meta)
        .outerjoin(Record, Record.id == QueueItem.record_id)
        .where(QueueItem.queue_id == queue.id)
        .order_by(QueueItem.position)
    ).all()
    task = _task(session, queue)
    where = f"metadata field {meta_key!r}" if meta_key else "reference label"
    out: dict[int, str] = {}
    missing: list[str] = []
    for item_id, position, external_id, fields, meta in rows:
        at = f"item {position + 1} (record {external_id!r})"
        if fields is None:
            raise UserError(
                f"queue {queue.name!r} item {position + 1} has no record: simulated annotators "
                "answer from records"
            )
        value = (meta or {}).get(meta_key) if meta_key else (target(task, fields) if task else None)
        if value is None or value == "":
            missing.append(at)
        elif str(value) not in labels:
            raise UserError(
                f"queue {queue.name!r} {at}: its {where} {value!r} is not one of the queue's "
                f"labels ({', '.join(labels)})"
            )
        else:
            out[item_id] = str(value)
    if missing:
        hint = (
            "every record needs it"
            if meta_key
            else "import the records with their labels, or keep the true label in a metadata "
            "field and pass --reference meta.NAME"
        )
        raise UserError(
            f"queue {queue.name!r}: {len(missing)} of {len(rows)} items have no {where} to "
            f"answer from ({missing[0]} first); {hint}"
        )
    if not out:
        raise UserError(f"queue {queue.name!r} has no items")
    return out


def _task(session: Session, queue: Queue) -> str | None:
    """The task of the queue's records (a label queue holds records of one dataset)."""
    if queue.dataset_id is not None:
        dataset = session.get(Dataset, queue.dataset_id)
        return dataset.task_type if dataset else None
    return session.scalar(
        select(Dataset.task_type)
        .join(Record, Record.dataset_id == Dataset.id)
        .join(QueueItem, QueueItem.record_id == Record.id)
        .where(QueueItem.queue_id == queue.id)
        .limit(1)
    )


def _simulated_people(session: Session, queue_id: int, names: list[str]) -> list[str]:
    """Make the simulated annotators that are not there yet (no password, inactive) and assign
    them all to the queue; the names made. A person of that name is never taken over."""
    found = {u.username: u for u in session.scalars(select(User).where(User.username.in_(names)))}
    for name, user in found.items():
        if user.password_hash is not None or user.active:
            raise UserError(
                f"user {name!r} is a person who can sign in: simulated annotators are named "
                f"{PREFIX}1, {PREFIX}2, ... and must not be real accounts (rename that user)"
            )
    made = [n for n in names if n not in found]
    for name in made:
        user = User(username=name, role="annotator", password_hash=None, active=False)
        session.add(user)
        found[name] = user
    session.flush()
    members = set(
        session.scalars(select(QueueMember.user_id).where(QueueMember.queue_id == queue_id))
    )
    for name in names:
        if found[name].id not in members:
            session.add(QueueMember(queue_id=queue_id, user_id=found[name].id))
    session.flush()
    return made
