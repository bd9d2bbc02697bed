"""Feedback becomes data: people's final answers in a queue become human labels and training
records.

Reads top to bottom: each item's final answer (``resolved``: the reviewer's, else the one answer
every annotator gave) -> ``apply_feedback``: answers of label and correction queues become
accepted human labels on their records (``tuneloop train sft --labels human|mix`` trains on
them; in a mix they win), in one transaction and idempotent (the queue's one apply run marks
its labels: applying again adds nothing; a final answer changed since replaces its label) ->
``export_feedback``: JSONL in TRL's conversational formats, each row with the one chat format's
prompt: ``sft`` (label and correction queues: prompt, completion), ``preferences`` (pairwise
and ranking queues, and corrections against the response they correct: prompt, chosen,
rejected; a ranking of K gives its K*(K-1)/2 pairs, ties dropped and counted) and ``ratings``
(every rater's rating of each response: prompt, response, model, rating, rater).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.errors import UserError
from tuneloop.io.writers import write_jsonl
from tuneloop.llm.types import Message
from tuneloop.preferences import preference_pairs, preference_record, sft_record
from tuneloop.store.db import Store
from tuneloop.store.models import (
    Adjudication,
    Answer,
    Dataset,
    Label,
    Queue,
    QueueItem,
    Record,
    User,
)
from tuneloop.store.runs import finish_run, keyed_run
from tuneloop.tasks import task_spec
from tuneloop.training.labels import prompt_messages
from tuneloop.workflows.queues import resolve_queue
from tuneloop.workflows.review import Resolved, resolved

APPLY_QUESTIONS = ("label", "correction")
KINDS: dict[str, tuple[str, ...]] = {
    "sft": ("label", "correction"),
    "preferences": ("pairwise", "ranking", "correction"),
    "ratings": ("rating",),
}


@dataclass
class ApplyResult:
    queue: str
    run_id: int
    added: int
    replaced: int  # labels of an earlier apply whose final answer has changed since
    unchanged: int  # applied before, the same answer
    skipped: dict[str, int]  # disagreement | unanswered | no_record
    splits: dict[str, int]  # labels added or replaced, by their records' split
    notes: list[str] = field(default_factory=list)


@dataclass
class ExportResult:
    queue: str
    kind: str
    path: Path
    rows: int
    items: int  # items that gave rows
    skipped: dict[str, int]  # disagreement | unanswered | no_record | tie


@dataclass
class _Record:
    dataset: Dataset
    fields: dict[str, Any]
    split: str | None

    def prompt(self) -> list[Message]:
        """The record's prompt in the one chat format (its inputs only, never its output)."""
        inputs = task_spec(self.dataset.task_type).inputs
        shown = {k: v for k, v in self.fields.items() if k in inputs}
        return prompt_messages(self.dataset.task_type, shown, self.dataset.labels)


def _records(session: Session, ids: list[int]) -> dict[int, _Record]:
    out: dict[int, _Record] = {}
    for start in range(0, len(ids), 1000):
        rows = session.execute(
            select(Record.id, Record.fields, Record.split, Dataset)
            .join(Dataset, Dataset.id == Record.dataset_id)
            .where(Record.id.in_(ids[start : start + 1000]))
        )
        out.update({rid: _Record(ds, fields, split) for rid, fields, split, ds in rows})
    return out


def _finals(
    store: Store, queue_ref: str, project: str, wanted: tuple[str, ...], what: str
) -> tuple[int, list[Resolved]]:
    queue_id = resolve_queue(store, queue_ref, project)
    with store.transaction() as session:
        queue = session.get(Queue, queue_id)
        assert queue is not None
        if queue.question not in wanted:
            raise UserError(
                f"queue {queue.name!r} asks {queue.question}: {what} takes "
                f"{' and '.join(wanted)} queues"
            )
    return queue_id, resolved(store, None, queue_id)


def _skip(final: Resolved, skipped: Counter[str], records: dict[int, _Record]) -> bool:
    """Count and skip an item without a final answer or without a record."""
    if final.value is None:
        skipped[final.how] += 1  # disagreement | unanswered
        return True
    if final.record_id is None or final.record_id not in records:
        skipped["no_record"] += 1
        return True
    return False


def apply_feedback(store: Store, queue_ref: str, project: str = "default") -> ApplyResult:
    """Make the final answers of a label or correction queue accepted human labels."""
    queue_id, finals = _finals(store, queue_ref, project, APPLY_QUESTIONS, "feedback apply")
    skipped: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    added = replaced = unchanged = 0
    with store.transaction() as session:
        queue = session.get(Queue, queue_id)
        assert queue is not None
        records = _records(session, [f.record_id for f in finals if f.record_id is not None])
        items = {
            i.id: i
            for i in session.scalars(select(QueueItem).where(QueueItem.queue_id == queue_id))
        }
        deciders = _deciders(session, queue_id)
        run = keyed_run(
            session, queue.project_id, "feedback-apply", queue.dataset_id, {"queue_id": queue_id}
        )
        applied = {
            label.record_id: label
            for label in session.scalars(
                select(Label)
                .where(Label.run_id == run.id, Label.status == "accepted")
                .order_by(Label.id)
            )
        }
        for final in finals:
            if _skip(final, skipped, records):
                continue
            assert final.value is not None and final.record_id is not None
            record = records[final.record_id]
            position = items[final.item_id].position + 1
            value = final.value.get("label", final.value.get("text"))
            _check_label(queue.name, queue.question, position, value, record)
            old = applied.get(final.record_id)
            if old is not None and old.value == value:
                unchanged += 1
                continue
            if old is not None:
                old.status = "rejected"
                old.note = f"{old.note}; replaced by a later final answer"
                replaced += 1
            else:
                added += 1
            label = Label(
                record_id=final.record_id,
                value=value,
                source="human",
                user_id=deciders.get(final.item_id),
                run_id=run.id,
                status="accepted",
                note=f"queue {queue.name} item {position} ({final.how}, {final.answers} answers)",
            )
            session.add(label)
            applied[final.record_id] = label
            splits[record.split or "unsplit"] += 1
        stats = {
            "queue": queue.name,
            "added": added,
            "replaced": replaced,
            "unchanged": unchanged,
            "skipped": dict(skipped),
            "splits": dict(splits),
        }
        finish_run(session, run.id, stats)
        result = ApplyResult(
            queue.name, run.id, added, replaced, unchanged, dict(skipped), dict(splits)
        )
    held = sorted(s for s in splits if s not in ("train", "unsplit"))
    if held:
        result.notes.append(
            f"labels on {', '.join(held)} records: `train sft` reads the train split unless "
            "--splits names others, and never test or gold; compare models on a split that "
            "got no labels"
        )
    return result


def _deciders(session: Session, queue_id: int) -> dict[int, int]:
    """Who decided each item: the reviewer who adjudicated it, else its one annotator."""
    out: dict[int, int] = {}
    answers = session.execute(
        select(Answer.queue_item_id, Answer.user_id)
        .join(QueueItem, QueueItem.id == Answer.queue_item_id)
        .where(QueueItem.queue_id == queue_id)
    ).all()
    per_item = Counter(item for item, _ in answers)
    out.update({item: user for item, user in answers if per_item[item] == 1})
    adjudicated = session.execute(
        select(Adjudication.queue_item_id, Adjudication.user_id)
        .join(QueueItem, QueueItem.id == Adjudication.queue_item_id)
        .where(QueueItem.queue_id == queue_id, Adjudication.user_id.is_not(None))
    )
    out.update({item: user for item, user in adjudicated if user is not None})
    return out


def _check_label(queue: str, question: str, position: int, value: Any, record: _Record) -> None:
    """A closed task's label must be one of its labels (or the record's choices); a generative
    task's answer comes from a correction, not from a label."""
    task = record.dataset.task_type
    if question == "label" and task not in ("classification", "multiple_choice"):
        raise UserError(
            f"queue {queue!r} item {position}: a label is no answer to {task} records "
            f"({record.dataset.ref}); correct their answers in a correction queue"
        )
    allowed = None
    if task == "classification":
        allowed = list(record.dataset.labels or [])
    elif task == "multiple_choice":
        allowed = list(record.fields.get("choices") or [])
    if allowed and value not in allowed:
        raise UserError(
            f"queue {queue!r} item {position}: the answer {value!r} is not a label of "
            f"{record.dataset.ref} ({', '.join(map(str, allowed))}); a reviewer can adjudicate "
            "it with one of them"
        )


def export_feedback(
    store: Store, queue_ref: str, kind: str, out: Path, project: str = "default"
) -> ExportResult:
    """Write a queue's feedback as JSONL training records of ``kind``."""
    if kind not in KINDS:
        raise UserError(f"unknown export kind {kind!r}; kinds: {', '.join(KINDS)}")
    queue_id, finals = _finals(store, queue_ref, project, KINDS[kind], f"--kind {kind}")
    skipped: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    items_used = 0
    with store.transaction() as session:
        queue = session.get(Queue, queue_id)
        assert queue is not None
        name = queue.name
        items = {
            i.id: i
            for i in session.scalars(select(QueueItem).where(QueueItem.queue_id == queue_id))
        }
        records = _records(session, [i.record_id for i in items.values() if i.record_id])
        if kind == "ratings":
            for item, rater, value in session.execute(
                select(QueueItem, User.username, Answer.value)
                .join(Answer, Answer.queue_item_id == QueueItem.id)
                .join(User, User.id == Answer.user_id)
                .where(QueueItem.queue_id == queue_id)
                .order_by(QueueItem.position, User.username)
            ):
                if item.record_id not in records:
                    skipped["no_record"] += 1
                    continue
                response = (item.responses or [{}])[0]
                rows.append(
                    {
                        "prompt": records[item.record_id].prompt(),
                        "response": response.get("text"),
                        "model": response.get("model"),
                        "rating": value["rating"],
                        "rater": rater,
                        **_meta(name, item),
                    }
                )
            items_used = len({(r["queue"], r["item"]) for r in rows})
    for final in [] if kind == "ratings" else finals:
        if _skip(final, skipped, records):
            continue
        assert final.value is not None and final.record_id is not None
        item = items[final.item_id]
        prompt = records[final.record_id].prompt()
        before = len(rows)
        if kind == "sft":
            answer = final.value.get("label", final.value.get("text"))
            rows.append(sft_record(prompt, str(answer), **_meta(name, item)))
        else:
            responses = [dict(r) for r in item.responses or []]
            if "text" in final.value:  # a correction: preferred to the response it corrects
                responses = [{"model": "human", "text": final.value["text"]}, *responses]
                answer_value: dict[str, Any] = {"choice": "A"}
            else:
                answer_value = final.value
            texts = [str(r.get("text", "")) for r in responses]
            pairs = preference_pairs(answer_value, texts)
            if pairs.ties:
                skipped["tie"] += pairs.ties
            for chosen, rejected in pairs.pairs:
                models = {
                    "chosen_model": str(responses[chosen].get("model") or ""),
                    "rejected_model": str(responses[rejected].get("model") or ""),
                }
                rows.append(
                    preference_record(
                        prompt, texts[chosen], texts[rejected], **models, **_meta(name, item)
                    )
                )
        items_used += len(rows) > before
    if not rows:
        counts = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())) or "no items"
        raise UserError(f"queue {name!r} has nothing to export as {kind} yet ({counts})")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(rows, out)
    return ExportResult(name, kind, out, len(rows), items_used, dict(skipped))


def _meta(queue: str, item: QueueItem) -> dict[str, Any]:
    return {"record_id": item.record_id, "queue": queue, "item": item.position + 1}
