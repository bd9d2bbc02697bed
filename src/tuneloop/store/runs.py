"""Runs keyed by their options: the same options find the same run (to resume or reuse it),
and a run that stops on an error says so."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.store.db import Store
from tuneloop.store.models import Run


def options_key(config: dict[str, Any]) -> str:
    """A short content hash of a run's options."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def keyed_run(
    session: Session, project_id: int, kind: str, dataset_id: int | None, config: dict[str, Any]
) -> Run:
    """The run of ``kind`` with these options (its ``config`` holds their key), else a new one.
    The caller looks at ``status`` to reuse a finished run or resume an interrupted one."""
    key = options_key(config)
    runs = session.scalars(select(Run).where(Run.kind == kind, Run.dataset_id == dataset_id))
    run = next((r for r in runs if r.config.get("key") == key), None)
    if run is None:
        run = Run(
            project_id=project_id,
            kind=kind,
            dataset_id=dataset_id,
            config={**config, "key": key},
        )
        session.add(run)
        session.flush()
    return run


def finish_run(session: Session, run_id: int, stats: dict[str, Any]) -> None:
    run = session.get(Run, run_id)
    assert run is not None
    run.stats, run.status, run.error = stats, "finished", None
    run.finished_at = datetime.now(UTC)


@contextmanager
def marks_interruption(store: Store, run_id: int) -> Iterator[None]:
    """Record on the run why it stopped (an error, Ctrl-C) before the exception goes on."""
    try:
        yield
    except BaseException as exc:
        with store.transaction() as session:
            failed = session.get(Run, run_id)
            if failed is not None:
                failed.status = "interrupted"
                failed.error = f"{type(exc).__name__}: {exc}"
        raise
