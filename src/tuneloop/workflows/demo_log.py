"""The demo's record of itself: one ``demo`` run per ``tuneloop demo``.

Its ``config`` holds the demo's configuration; its ``stats["stages"]`` hold, per stage in
order, the seconds the stage took in this run, whether it reused finished work, the ids of the
runs it produced or reused, and the LLM usage (calls, tokens, cost) of those runs: ``llm`` sums
every ``llm_call`` row of the stage's runs (what its results cost when they were made) and
``new_llm`` only the rows made during this stage (what this run paid). ``tuneloop report``
draws the demo from this record.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneloop.store.db import Store, get_project
from tuneloop.store.models import Label, LLMCall, Run


def llm_usage(session: Session, run_ids: Iterable[int], *, after: int = 0) -> dict[str, Any]:
    """Calls, tokens, cost and model seconds of the LLM calls logged under ``run_ids`` (and,
    for evaluation runs, under the annotate run that answered for them); ``after``: only
    calls with a larger id."""
    ids = set(run_ids)
    for run in session.scalars(select(Run).where(Run.id.in_(ids))):
        child = (run.stats or {}).get("annotate_run")
        if isinstance(child, int):
            ids.add(child)
    row = session.execute(
        select(
            func.count(LLMCall.id),
            func.sum(LLMCall.tokens_in),
            func.sum(LLMCall.tokens_out),
            func.sum(LLMCall.cost_usd),
            func.sum(LLMCall.latency_ms),
        ).where(LLMCall.run_id.in_(ids), LLMCall.id > after)
    ).one()
    return {
        "calls": int(row[0] or 0),
        "tokens_in": int(row[1] or 0),
        "tokens_out": int(row[2] or 0),
        "cost_usd": float(row[3] or 0.0),
        "llm_seconds": float(row[4] or 0.0) / 1000.0,
    }


def run_of_labels(store: Store, label_ids: Iterable[int | None]) -> int | None:
    """The run that wrote these labels (the eyeball stage's annotate job)."""
    first = next((i for i in label_ids if i is not None), None)
    if first is None:
        return None
    with store.transaction() as session:
        return session.scalar(select(Label.run_id).where(Label.id == first))


@dataclass
class DemoLog:
    store: Store
    run_id: int
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    _open: dict[str, tuple[float, int]] = field(default_factory=dict)
    _clock: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, store: Store, project: str, config: dict[str, Any]) -> DemoLog:
        with store.transaction() as session:
            run = Run(
                project_id=get_project(session, project).id,
                kind="demo",
                config=config,
                stats={"stages": {}},
            )
            session.add(run)
            session.flush()
            return cls(store, run.id)

    def begin(self, stage: str) -> None:
        with self.store.transaction() as session:
            mark = session.scalar(select(func.max(LLMCall.id))) or 0
        self._open[stage] = (time.monotonic(), int(mark))

    def end(
        self, stage: str, *, reused: bool | None, runs: dict[str, int | None], **facts: Any
    ) -> None:
        """Close ``stage``: its seconds, its runs (name -> id) and their LLM usage, and any
        other facts (JSON values) the report shows. ``reused=None``: reused when the stage
        made no new LLM call (its answers came from the cache)."""
        started, mark = self._open.pop(stage)
        ids = [i for i in runs.values() if i is not None]
        with self.store.transaction() as session:
            new = llm_usage(session, ids, after=mark)
            self.stages[stage] = {
                "seconds": time.monotonic() - started,
                "reused": new["calls"] == 0 if reused is None else reused,
                "runs": runs,
                "llm": llm_usage(session, ids),
                "new_llm": new,
                **facts,
            }
            run = session.get(Run, self.run_id)
            assert run is not None
            run.stats = {**run.stats, "stages": dict(self.stages)}

    def finish(self, **facts: Any) -> None:
        with self.store.transaction() as session:
            run = session.get(Run, self.run_id)
            assert run is not None
            run.status, run.error = "finished", None
            run.finished_at = datetime.now(UTC)
            run.stats = {
                **run.stats,
                "stages": dict(self.stages),
                "seconds": time.monotonic() - self._clock,
                **facts,
            }
