"""Which label each training record gets, from which source, and how many each source gave.

Sources: ``gold`` is the record's own reference output (from the imported data, or an accepted
``import`` label); ``human`` an accepted label from a person; ``llm`` an accepted LLM label at
or above the minimum confidence (labels without a confidence, from generative tasks, count),
optionally only from one prompt version. ``mix`` takes, per record, a human label, else the
reference output, else an LLM label: people beat the data, and the data (usually written by
people) beats an LLM; the LLM fills in the records nobody labelled. The newest label wins
within a source.

The test split and the gold slice are never read, whatever the options say.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from tuneloop.chat import record_messages, target
from tuneloop.errors import UserError
from tuneloop.llm.types import Message
from tuneloop.store.models import Dataset, Label, Record
from tuneloop.tasks import task_spec
from tuneloop.training.config import HELD_OUT

MIX_ORDER = ("human", "gold", "llm")


@dataclass
class Example:
    """One training example: the prompt messages (the one chat format) and the answer."""

    record_id: int
    prompt: list[Message]
    completion: str
    source: str  # gold | human | llm
    prompt_version_id: int | None = None

    def as_row(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "prompt": self.prompt,
            "completion": self.completion,
            "source": self.source,
            "prompt_version_id": self.prompt_version_id,
        }


@dataclass
class Selection:
    examples: list[Example]
    counts: dict[str, int]  # examples per source
    unlabelled: int  # records looked at that had no usable label from the chosen source
    prompt_versions: dict[int, int] = field(default_factory=dict)  # id -> LLM examples


def prompt_messages(
    task: str, fields: dict[str, Any], labels: Sequence[str] | None
) -> list[Message]:
    """The prompt of a record, exactly as annotation and evaluation build it."""
    return record_messages(task, fields, labels or fields.get("choices"))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def select_examples(
    session: Session,
    dataset: Dataset,
    source: str,
    splits: Sequence[str],
    *,
    min_confidence: float = 0.0,
    prompt_version_id: int | None = None,
    limit: int | None = None,
    record_ids: Sequence[int] | None = None,
) -> Selection:
    """The training examples of ``dataset``'s ``splits`` labelled by ``source`` (only the records
    ``record_ids``, when given)."""
    held = [s for s in splits if s in HELD_OUT]
    if held:
        raise UserError(
            f"training on the {held[0]} split is not allowed: it is held out for evaluation"
        )
    chosen: ColumnElement[bool] = Record.split.in_([s for s in splits if s != "unsplit"])
    if "unsplit" in splits:
        chosen = chosen | Record.split.is_(None)
    records = session.scalars(
        select(Record)
        .where(Record.dataset_id == dataset.id, chosen)
        .where(Record.split.is_(None) | Record.split.not_in(HELD_OUT))
        .order_by(Record.position)
    ).all()
    if record_ids is not None:
        wanted = set(record_ids)
        records = [r for r in records if r.id in wanted]
    ids = [r.id for r in records]
    by_source: dict[str, dict[int, Label]] = {"human": {}, "llm": {}, "import": {}}
    query = (
        select(Label)
        .where(Label.status == "accepted", Label.source.in_(tuple(by_source)))
        .order_by(Label.id)
    )
    for start in range(0, len(ids), 5000):
        for label in session.scalars(query.where(Label.record_id.in_(ids[start : start + 5000]))):
            if label.source == "llm":
                if label.confidence is not None and label.confidence < min_confidence:
                    continue
                if prompt_version_id is not None and label.prompt_version_id != prompt_version_id:
                    continue
            if _text(label.value) is not None:
                by_source[label.source][label.record_id] = label  # ordered by id: newest wins
    task, labels = dataset.task_type, list(dataset.labels or [])
    order = MIX_ORDER if source == "mix" else (source,)
    examples: list[Example] = []
    unlabelled = 0
    inputs = task_spec(task).inputs
    for record in records:
        if limit is not None and len(examples) >= limit:
            break
        picked = _pick(record, order, by_source, task)
        if picked is None:
            unlabelled += 1
            continue
        name, answer, version = picked
        fields = {k: v for k, v in record.fields.items() if k in inputs}
        examples.append(
            Example(record.id, prompt_messages(task, fields, labels), answer, name, version)
        )
    counts = Counter(e.source for e in examples)
    versions = Counter(e.prompt_version_id for e in examples if e.prompt_version_id is not None)
    return Selection(
        examples, {name: counts.get(name, 0) for name in order}, unlabelled, dict(versions)
    )


def _pick(
    record: Record, order: Sequence[str], by_source: dict[str, dict[int, Label]], task: str
) -> tuple[str, str, int | None] | None:
    """(source, answer, prompt version of an LLM label) of the first source that has one."""
    for name in order:
        if name == "gold":
            reference = _text(target(task, record.fields))
            if reference is None and record.id in by_source["import"]:
                reference = _text(by_source["import"][record.id].value)
            if reference is not None:
                return "gold", reference, None
        elif record.id in by_source[name]:
            label = by_source[name][record.id]
            version = label.prompt_version_id if name == "llm" else None
            return name, str(_text(label.value)), version
    return None
