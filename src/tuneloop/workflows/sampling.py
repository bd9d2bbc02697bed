"""Seeded samples of a dataset's records, the same for every prompt version (stateless helpers
shared by eyeball and evaluate)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from tuneloop.errors import UserError
from tuneloop.store.models import Dataset, Record
from tuneloop.tasks import Split, task_spec

NON_GOLD = ("train", "validation", "test", "unsplit")


def default_splits(dataset: Dataset, given: Sequence[str]) -> list[str]:
    """The splits named, else every split but the locked gold slice."""
    known = {s.value for s in Split} | {"unsplit"}
    for name in given:
        if name not in known:
            raise UserError(f"unknown split {name!r}; splits are {', '.join(sorted(known))}")
    if given:
        return list(dict.fromkeys(given))
    return list(NON_GOLD) if dataset.split_config else ["unsplit"]


def _in_splits(splits: Sequence[str]) -> ColumnElement[bool]:
    chosen: ColumnElement[bool] = Record.split.in_([s for s in splits if s != "unsplit"])
    if "unsplit" in splits:
        chosen = chosen | Record.split.is_(None)
    return chosen


@dataclass(frozen=True)
class Sample:
    ids: list[int]  # in dataset order
    population: int  # records it was drawn from


def sample_records(
    session: Session,
    dataset: Dataset,
    splits: Sequence[str],
    n: int,
    seed: int,
    *,
    need_reference: bool,
) -> Sample:
    """``n`` records drawn without replacement by ``seed`` from the splits (only records with a
    reference output when ``need_reference``). The draw depends on the dataset version, the
    splits, ``n`` and the seed only, so every prompt version meets the same items."""
    if n < 1:
        raise UserError(f"sample size must be at least 1, got {n}")
    target = task_spec(dataset.task_type).target
    rows = session.execute(
        select(Record.id, Record.fields)
        .where(Record.dataset_id == dataset.id, _in_splits(splits))
        .order_by(Record.position)
    ).all()
    pool: list[int] = [rid for rid, fields in rows if not need_reference or _has(fields, target)]
    if not pool:
        what = f"with a reference {target!r} " if need_reference else ""
        raise UserError(
            f"dataset {dataset.ref} has no records {what}in split(s) {', '.join(splits)}"
        )
    if n >= len(pool):
        return Sample(pool, len(pool))
    picked = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return Sample([pool[i] for i in sorted(picked.tolist())], len(pool))


def _has(fields: dict[str, Any], name: str) -> bool:
    value = fields.get(name)
    return value is not None and value != ""
