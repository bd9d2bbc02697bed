"""Where a new queue's items come from: a dataset's records (its splits, a seeded sample, or
given ids), or the rows of an items file (records by id, with model responses and LLM
suggestions). ``feedback select`` will build items with K generated responses the same way.
``select_items`` chooses between them for the web app and the API; ``dataset_choices`` lists
the datasets to choose from."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from tuneloop.errors import UserError
from tuneloop.store.datasets import resolve_dataset
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import Dataset, Project, Record
from tuneloop.workflows.datasets import iter_records
from tuneloop.workflows.sampling import default_splits, sample_records


@dataclass
class NewItem:
    record_id: int | None = None
    responses: list[dict[str, Any]] | None = None  # [{"model": ..., "text": ...}]
    suggestion: dict[str, Any] | None = None  # an answer value suggested by an LLM
    location: str = ""  # where the item came from, for error messages


def dataset_items(
    store: Store,
    dataset: str,
    *,
    splits: Sequence[str] = (),
    n: int | None = None,
    seed: int = 0,
    ids: Sequence[str] = (),
    project: str = "default",
) -> list[NewItem]:
    """Items for the records of a dataset: those with the given ids, else a seeded sample of
    ``n`` (or all) from the splits (never the gold slice unless it is named)."""
    with store.transaction() as session:
        ds = resolve_dataset(session, get_project(session, project), dataset)
        if ids:
            found = dict(
                session.execute(
                    select(Record.external_id, Record.id).where(
                        Record.dataset_id == ds.id, Record.external_id.in_(list(ids))
                    )
                ).all()
            )
            missing = [i for i in ids if i not in found]
            if missing:
                raise UserError(f"dataset {ds.ref} has no record with id {missing[0]!r}")
            return [NewItem(found[i], location=f"record id {i!r}") for i in dict.fromkeys(ids)]
        chosen = default_splits(ds, splits)
        if n is not None:
            sample = sample_records(session, ds, chosen, n, seed, need_reference=False)
            return [NewItem(rid) for rid in sample.ids]
        items = [NewItem(r.id) for r in iter_records(session, ds, chosen)]
        if not items:
            raise UserError(f"dataset {ds.ref} has no records in split(s) {', '.join(chosen)}")
        return items


def items_from_rows(
    store: Store,
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    dataset: str | None,
    project: str = "default",
) -> list[NewItem]:
    """Items from rows of an items file, each ``(location, row)``: ``record_id`` (tuneloop's)
    or ``id`` (the record's id in the dataset), optional ``responses`` and ``suggestion``."""
    items: list[NewItem] = []
    with store.transaction() as session:
        ds = resolve_dataset(session, get_project(session, project), dataset) if dataset else None
        for location, row in rows:
            unknown = sorted(set(row) - {"record_id", "id", "responses", "suggestion"})
            if unknown:
                raise UserError(f"{location}: unknown field {unknown[0]!r}")
            record_id = row.get("record_id")
            if record_id is None and row.get("id") is not None:
                if ds is None:
                    raise UserError(f"{location}: field 'id' needs a dataset (--dataset)")
                record_id = session.scalar(
                    select(Record.id).where(
                        Record.dataset_id == ds.id, Record.external_id == str(row["id"])
                    )
                )
                if record_id is None:
                    raise UserError(f"{location}: field 'id': no record {row['id']!r} in {ds.ref}")
            if record_id is not None and not isinstance(record_id, int):
                raise UserError(f"{location}: field 'record_id' must be a number")
            responses = row.get("responses")
            if responses is not None and not isinstance(responses, list):
                raise UserError(f"{location}: field 'responses' must be a list")
            suggestion = row.get("suggestion")
            if suggestion is not None and not isinstance(suggestion, dict):
                raise UserError(f"{location}: field 'suggestion' must be an answer object")
            items.append(NewItem(record_id, responses, suggestion, location))
    return items


def jsonl_rows(text: str, name: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The rows of an items file's text, each ``(NAME:LINE, row)``; blank lines are skipped."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{name}:{number}: not JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise UserError(f"{name}:{number}: expected a JSON object")
        yield f"{name}:{number}", row


def select_items(
    store: Store,
    *,
    dataset: str | None,
    rows: Iterable[tuple[str, Mapping[str, Any]]] | None = None,
    splits: Sequence[str] = (),
    n: int | None = None,
    seed: int = 0,
    ids: Sequence[str] = (),
    project: str = "default",
) -> list[NewItem]:
    """A new queue's items: the rows of an items file when given (an ``id`` names a record of
    ``dataset``), else the dataset's records (the given ids, a seeded sample, or the splits)."""
    if rows is not None:
        if ids or n is not None or splits:
            raise UserError("give an items file, or record ids, a sample size or splits; not both")
        return items_from_rows(store, rows, dataset, project)
    if not dataset:
        raise UserError("a queue needs a dataset or an items file")
    return dataset_items(store, dataset, splits=splits, n=n, seed=seed, ids=ids, project=project)


@dataclass(frozen=True)
class DatasetChoice:
    """A dataset version a new queue can take its records from."""

    id: int
    project: str
    ref: str  # name@version
    task: str
    records: int
    labels: list[str] = field(default_factory=list)


def dataset_choices(store: Store) -> list[DatasetChoice]:
    """Every dataset version of every project, by project and name, newest version first."""
    with store.transaction() as session:
        rows = session.execute(
            select(Dataset, Project.name)
            .join(Project, Project.id == Dataset.project_id)
            .order_by(Project.name, Dataset.name, Dataset.version.desc())
        ).all()
        return [
            DatasetChoice(ds.id, project, ds.ref, ds.task_type, ds.record_count, ds.labels or [])
            for ds, project in rows
        ]
