"""Annotation workforces and tools: a queue out to a vendor task sheet (CSV, XLSX), Label Studio
or Argilla, and the answers people gave there back in, as answers of the queue like those from
the web app (so agreement and adjudication treat them alike).

Reads top to bottom: the queue as an annotator may see it (``_form``: input fields, responses
without model names, suggestions only where shown) -> ``export_queue`` writes one format ->
``import_answers`` reads a filled file (``tuneloop.workforce.*``), checks everything before it
writes anything (item ids, values against the question, one answer per item and annotator,
annotator names, rows missing from a sheet), then writes every answer in one transaction:
annotators are people of tuneloop (found by name, or added as annotators who cannot sign in),
each answer keeps its source (``import:vendor``, ``import:labelstudio``, ``import:argilla``),
and importing the same file again changes nothing. A labeling job goes out the same way once
it is a queue (``job_items.py``).

Missing rows: a vendor sheet goes out with one row per item, so a sheet that comes back without
some of them is refused (``partial=True`` imports a part); Label Studio and Argilla leave tasks
nobody finished out of their exports, so there items the file lacks are only counted.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.errors import Forbidden, InputError, UserError
from tuneloop.store.db import Store, lock_row
from tuneloop.store.models import Answer, Dataset, Queue, QueueItem, Record, User
from tuneloop.tasks import task_spec
from tuneloop.workflows.queues import load_queue
from tuneloop.workflows.users import Actor, check_username
from tuneloop.workforce import Form, FormItem, Reading, allowed_answers, question_text, sheets
from tuneloop.workforce import argilla as argilla_format
from tuneloop.workforce import labelstudio as labelstudio_format

FORMATS = ("csv", "xlsx", "labelstudio", "argilla")
SOURCE = {
    "csv": "import:vendor",
    "xlsx": "import:vendor",
    "labelstudio": "import:labelstudio",
    "argilla": "import:argilla",
}
MAX_PROBLEMS = 20  # listed in one error; the rest are counted


class ImportProblems(UserError):
    """A file with bad rows: every problem found (up to ``MAX_PROBLEMS``), nothing imported."""

    def __init__(self, path: Path, problems: list[InputError]) -> None:
        self.problems = problems
        lines = [f"  {p}" for p in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            lines.append(f"  ... and {len(problems) - MAX_PROBLEMS} more")
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{path}: {count}, nothing imported:\n" + "\n".join(lines))


def _require_reviewer(actor: Actor | None) -> None:
    if actor is not None and not actor.can_review:
        raise Forbidden("only reviewers and admins may export queues")


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(f"- {v}" for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _form(session: Session, queue: Queue) -> tuple[Form, list[FormItem]]:
    """The queue and its items as an annotator may see them: the records' input fields only,
    responses without model names, the suggestion only where the queue shows suggestions."""
    items = session.scalars(
        select(QueueItem).where(QueueItem.queue_id == queue.id).order_by(QueueItem.position)
    ).all()
    record_ids = [i.record_id for i in items if i.record_id is not None]
    records: dict[int, tuple[dict[str, Any], str]] = {}
    for start in range(0, len(record_ids), 1000):
        rows = session.execute(
            select(Record.id, Record.fields, Dataset.task_type)
            .join(Dataset, Dataset.id == Record.dataset_id)
            .where(Record.id.in_(record_ids[start : start + 1000]))
        )
        records.update({rid: (fields, task) for rid, fields, task in rows})
    fields: dict[str, None] = {}
    out = []
    for item in items:
        inputs: dict[str, str] = {}
        if item.record_id is not None:
            values, task = records[item.record_id]
            for name in task_spec(task).inputs:
                if values.get(name) is not None:
                    inputs[name] = _text(values[name])
                    fields[name] = None
        suggestion = None
        if queue.show_suggestions and item.suggestion:
            suggestion = item.suggestion.get("value")
        responses = [str(r.get("text", "")) for r in item.responses or []]
        out.append(FormItem(item.id, inputs, responses, suggestion))
    form = Form(
        queue=queue.name,
        question=queue.question,
        options=dict(queue.options),
        guidelines=queue.guidelines,
        input_fields=list(fields),
        n_responses=max((len(i.responses) for i in out), default=0),
        show_suggestions=queue.show_suggestions,
        annotators_per_item=queue.annotators_per_item,
    )
    return form, out


@dataclass
class ExportResult:
    queue: str
    format: str
    items: int
    paths: list[Path]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "queue"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def export_queue(
    store: Store, actor: Actor | None, queue_id: int, fmt: str, out: Path
) -> ExportResult:
    """Write the queue for people outside tuneloop: ``csv`` or ``xlsx`` (a file; a folder gets
    ``QUEUE.csv``), ``labelstudio`` or ``argilla`` (a folder of files)."""
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r}: one of {', '.join(FORMATS)}")
    _require_reviewer(actor)
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id)
        form, items = _form(session, queue)
    if fmt in ("csv", "xlsx"):
        path = out / f"{_slug(form.queue)}.{fmt}" if out.is_dir() else out
        path.parent.mkdir(parents=True, exist_ok=True)
        write = sheets.write_csv if fmt == "csv" else sheets.write_xlsx
        return ExportResult(form.queue, fmt, len(items), write(form, items, path))
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: the {fmt} export is a folder of files; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if fmt == "labelstudio":
        _write_text(out / "config.xml", labelstudio_format.config(form))
        _write_json(out / "tasks.json", labelstudio_format.tasks(form, items))
        guide = "\n\n".join(
            [question_text(form), *allowed_answers(form), form.guidelines or ""]
        ).strip()
        _write_text(out / "instructions.md", guide + "\n")
        paths = [out / "config.xml", out / "tasks.json", out / "instructions.md"]
    else:
        _write_json(out / "settings.json", argilla_format.settings(form, items))
        _write_json(out / "records.json", argilla_format.records(form, items))
        paths = [out / "settings.json", out / "records.json"]
    return ExportResult(form.queue, fmt, len(items), paths)


def detect_format(path: Path) -> str:
    """The import format from the file: .csv, .xlsx, an Argilla folder (records.json), or a
    JSON file of Label Studio tasks or Argilla records."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".xlsx"):
        return suffix[1:]
    if path.is_dir() and (path / "records.json").exists():
        return "argilla"
    if suffix == ".json":
        data = _load_json(path)
        first = data[0] if isinstance(data, list) and data else None
        if isinstance(first, dict) and "data" in first:
            return "labelstudio"
        argilla_keys = {"fields", "responses", "_server_id", "tuneloop_item_id"}
        if isinstance(first, dict) and (
            argilla_keys & set(first) or any(k.endswith(".responses") for k in first)
        ):
            return "argilla"
    raise UserError(f"{path}: cannot tell the format; pass --format ({', '.join(FORMATS)})")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def _read(path: Path, fmt: str, form: Form, sizes: dict[int, int]) -> Reading:
    if fmt == "csv":
        return sheets.read_csv(path, form, sizes)
    if fmt == "xlsx":
        return sheets.read_xlsx(path, form, sizes)
    if fmt == "labelstudio":
        return labelstudio_format.read_export(str(path), _load_json(path), form, sizes)
    return argilla_format.read_records(str(path), _load_json(path), form, sizes)


@dataclass
class ImportResult:
    queue: str
    format: str
    source: str
    file: str
    new: int = 0  # answers added
    updated: int = 0  # answers whose value (or source, or comment) changed
    unchanged: int = 0  # answers already there as the file has them
    skipped: dict[str, int] = field(default_factory=dict)  # why -> rows/annotations
    missing: int = 0  # items of the queue the file does not mention
    annotators: list[str] = field(default_factory=list)
    new_users: list[str] = field(default_factory=list)
    over_policy: int = 0  # items with more answers than the queue's people per item

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _annotator_names(
    where: str, reading: Reading, as_user: str | None, mapping: dict[str, str]
) -> list[str | None]:
    """The username of each answer (None where it has none; a problem recorded)."""
    if as_user is not None:
        name = check_username(as_user)
        people = sorted({g.annotator[0] for g in reading.answers if g.annotator})
        if len(people) > 1:
            reading.problem(
                where,
                f"--as {name} takes a file from one annotator; this one has answers from "
                f"{', '.join(people[:5])}{' ...' if len(people) > 5 else ''}",
            )
        return [name] * len(reading.answers)
    names: list[str | None] = []
    for given in reading.answers:
        mapped = next((mapping[k] for k in given.annotator if k in mapping), None)
        raw = mapped or (given.annotator[0] if given.annotator else None)
        if raw is None:
            reading.problem(
                given.location, "no annotator: name one, or pass --as USER", given.annotator_field
            )
            names.append(None)
            continue
        try:
            names.append(check_username(raw))
        except UserError:
            reading.problem(
                given.location,
                f"annotator {raw!r} is not a usable username (2-64 of a-z 0-9 _ . @ -); "
                f"map it with --annotator '{given.annotator[0]}=NAME'",
                given.annotator_field,
            )
            names.append(None)
    return names


def import_answers(
    store: Store,
    actor: Actor | None,
    queue_id: int,
    path: Path,
    fmt: str | None = None,
    *,
    as_user: str | None = None,
    annotators: dict[str, str] | None = None,
    partial: bool | None = None,
) -> ImportResult:
    """Read a filled sheet or a tool's export and store its answers in the queue, all or
    nothing. ``as_user``: every answer is this person's (a file from one annotator);
    ``annotators``: the file's names, emails or user ids -> usernames; ``partial``: accept a
    sheet that lacks rows (default: refused for sheets, counted for the tools' exports)."""
    if actor is not None and not actor.is_admin:
        raise Forbidden("only an admin may import answers (it may add people)")
    if not path.exists():
        raise UserError(f"no file {path}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise UserError(f"import format {fmt!r}: one of {', '.join(FORMATS)}")
    if fmt == "argilla" and path.is_dir():
        path = path / "records.json"
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id)
        form, items = _form(session, queue)
    sizes = {i.item_id: len(i.responses) for i in items}
    reading = _read(path, fmt, form, sizes)
    if reading.queue is not None and reading.queue != form.queue:
        reading.problem(str(path), f"the sheet is for queue {reading.queue!r}, not {form.queue!r}")
    names = _annotator_names(str(path), reading, as_user, dict(annotators or {}))
    first: dict[tuple[int, str], str] = {}
    for given, name in zip(reading.answers, names, strict=True):
        if name is None:
            continue
        key = (given.item_id, name)
        if key in first:
            reading.problem(
                given.location,
                f"a second answer of {name!r} to item {given.item_id} (the first: {first[key]})",
                given.annotator_field,
            )
        first.setdefault(key, given.location)
    missing = [i.item_id for i in items if i.item_id not in reading.seen]
    if partial is None:
        partial = fmt not in ("csv", "xlsx")
    if missing and not partial:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        reading.problem(
            str(path),
            f"no row for {len(missing)} of the {len(items)} items (item_id {shown}); the sheet "
            "went out with one row per item: restore them, or pass --partial to import a part",
            sheets.ITEM,
        )
    if reading.problems:
        raise ImportProblems(path, reading.problems)

    result = ImportResult(form.queue, fmt, SOURCE[fmt], str(path), missing=len(missing))
    result.skipped = dict(Counter(why for _, why in reading.skipped))
    now = datetime.now(UTC)
    with store.transaction() as session:
        queue = load_queue(session, actor, queue_id)
        lock_row(session, Queue.id, queue.id)
        users = _people(session, {n for n in names if n is not None}, result)
        in_queue = select(QueueItem).where(QueueItem.queue_id == queue.id)
        by_id = {i.id: i for i in session.scalars(in_queue)}
        suggestions = {
            i.id: i.suggestion.get("value")
            for i in by_id.values()
            if queue.show_suggestions and i.suggestion
        }
        existing = {
            (a.queue_item_id, a.user_id): a
            for a in session.scalars(
                select(Answer)
                .join(QueueItem, QueueItem.id == Answer.queue_item_id)
                .where(QueueItem.queue_id == queue.id)
            )
        }
        for given, name in zip(reading.answers, names, strict=True):
            assert name is not None
            user = users[name]
            meta: dict[str, Any] = {"import": {"file": path.name, "at": given.location}}
            if given.comment:
                meta["comment"] = given.comment
            if given.item_id in suggestions:
                meta["suggestion"] = suggestions[given.item_id]  # shown: it may have anchored
            answer = existing.get((given.item_id, user.id))
            if answer is None:
                answer = Answer(queue_item_id=given.item_id, user_id=user.id, created_at=now)
                session.add(answer)
                by_id[given.item_id].answer_count += 1
                result.new += 1
            elif (
                answer.value == given.value
                and answer.source == result.source
                and (answer.meta or {}).get("comment") == given.comment
            ):
                result.unchanged += 1
                continue
            else:
                result.updated += 1
            answer.value, answer.source, answer.meta, answer.updated_at = (
                given.value,
                result.source,
                meta,
                now,
            )
        session.flush()
        result.over_policy = sum(
            1 for i in by_id.values() if i.answer_count > queue.annotators_per_item
        )
    result.annotators = sorted(users)
    return result


def _people(session: Session, names: set[str], result: ImportResult) -> dict[str, User]:
    """The users with these names; the ones not there yet are added as annotators who cannot
    sign in (no password, inactive) until an admin gives them a password and enables them."""
    found = {
        u.username: u for u in session.scalars(select(User).where(User.username.in_(sorted(names))))
    }
    for name in sorted(names - set(found)):
        user = User(username=name, role="annotator", password_hash=None, active=False)
        session.add(user)
        found[name] = user
        result.new_users.append(name)
    session.flush()
    return found
