"""Judge calibration: should you trust the judge? Where people have rated the same items, the
judge rates them too, and its agreement with the people is set beside the people's agreement
with each other.

Reads top to bottom: resolve dataset and judge prompt -> the rated records (human ratings in a
metadata field, mapped onto the judge's 0..4 scale) -> a seeded sample -> find a finished
calibration with these options (reuse it) or start one -> the judge rates each item (cached
calls) -> Krippendorff's alpha (ordinal) among people, and people plus judge; weighted Cohen's
kappa per pair -> items and report written in one transaction.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, select

from tuneloop.errors import UserError
from tuneloop.llm.judge import LEVELS, check_levels, rate
from tuneloop.metrics.agreement import agreement
from tuneloop.store.datasets import resolve_dataset
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import EvalItem, Record
from tuneloop.store.runs import finish_run, keyed_run, marks_interruption
from tuneloop.tasks import task_spec
from tuneloop.workflows.evaluate import ModelRef, Progress, judge_messages, judge_prompt_version
from tuneloop.workflows.sampling import default_splits

SCALES = {"0-1": (0.0, 1.0), "0-4": (0.0, 4.0), "1-5": (1.0, 5.0)}


@dataclass
class CalibrateOptions:
    dataset: str
    judge_prompt: str | None = "judge-harm"
    ratings_field: str = "ratings"  # metadata field holding the people's ratings (a list)
    scale: str = "0-1"  # the people's scale, mapped linearly onto 0..4
    min_raters: int = 1
    n: int | None = None  # None: every rated record
    seed: int = 0
    splits: list[str] = field(default_factory=list)
    judge_mode: str = "rationale"
    resamples: int = 1000
    project: str = "default"


@dataclass
class CalibrateResult:
    run_id: int
    reused: bool
    stats: dict[str, Any]


def to_steps(value: Any, scale: str) -> int | None:
    """A person's rating on ``scale`` as a step 0..4 (None when missing or off the scale)."""
    if value is None or value == "":
        return None
    lo, hi = SCALES[scale]
    try:
        step = (float(value) - lo) / (hi - lo) * 4
    except (TypeError, ValueError):
        return None
    if not -1e-9 <= step <= 4 + 1e-9:
        return None
    return round(step)


def calibrate(
    store: Store,
    opts: CalibrateOptions,
    judge: ModelRef,
    *,
    on_progress: Callable[[Progress], None] | None = None,
) -> CalibrateResult:
    if opts.scale not in SCALES:
        raise UserError(f"--scale must be one of {', '.join(SCALES)}, got {opts.scale!r}")
    with store.transaction() as session:
        project = get_project(session, opts.project)
        dataset = resolve_dataset(session, project, opts.dataset)
        task, dataset_id, dataset_ref = dataset.task_type, dataset.id, dataset.ref
        splits = default_splits(dataset, opts.splits)
        rows = session.scalars(
            select(Record).where(Record.dataset_id == dataset_id).order_by(Record.position)
        ).all()
        rated: list[tuple[Record, list[int | None]]] = []
        for rec in rows:
            if (rec.split or "unsplit") not in splits:
                continue
            raw = (rec.meta or {}).get(opts.ratings_field)
            if not isinstance(raw, list):
                continue
            steps = [to_steps(v, opts.scale) for v in raw]
            if sum(s is not None for s in steps) >= opts.min_raters:
                rated.append((rec, steps))
        for rec, _ in rated:
            session.expunge(rec)
    if not rated:
        raise UserError(
            f"dataset {dataset_ref} has no records with at least {opts.min_raters} rating(s) in "
            f"metadata field {opts.ratings_field!r}"
        )
    if opts.n is not None and opts.n < len(rated):
        picked = np.random.default_rng(opts.seed).choice(len(rated), size=opts.n, replace=False)
        rated = [rated[i] for i in sorted(picked.tolist())]
    prompt = judge_prompt_version(store, opts.project, opts.judge_prompt, task)
    levels = check_levels(prompt.params.get("levels", LEVELS))
    config = {
        "dataset": dataset_ref,
        "judge": judge.name,
        "judge_family": judge.family,
        "judge_prompt": f"{prompt.name}@{prompt.version}",
        "judge_mode": opts.judge_mode,
        "ratings_field": opts.ratings_field,
        "scale": opts.scale,
        "min_raters": opts.min_raters,
        "n": opts.n,
        "seed": opts.seed,
        "splits": splits,
    }
    with store.transaction() as session:
        run = keyed_run(session, project.id, "calibrate", dataset_id, config)
        if run.status == "finished":
            return CalibrateResult(run.id, True, run.stats)
        run.status, run_id = "running", run.id
    with marks_interruption(store, run_id):
        engine = judge.make_engine(run_id)
        target = task_spec(task).target
        judged = []
        for done, (rec, steps) in enumerate(rated, 1):
            output = rec.fields.get(target) or ""
            messages = judge_messages(prompt, task, rec.fields, output, None)
            judged.append((rec, steps, rate(engine, messages, levels, mode=opts.judge_mode)))
            if on_progress is not None:
                on_progress(Progress("judge", done, len(rated)))
        width = max(len(steps) for _, steps, _ in judged)
        humans = [f"human {i + 1}" for i in range(width)]
        table = [[*steps, *([None] * (width - len(steps)))] for _, steps, _ in judged]
        judge_col = [r.score for _, _, r in judged]
        medians = [_median(row) for row in table]
        people = agreement(
            table,
            "ordinal",
            rater_names=humans,
            value_order=list(range(5)),
            resamples=opts.resamples,
            seed=opts.seed,
        )
        with_judge = agreement(
            [[*row, j] for row, j in zip(table, judge_col, strict=True)],
            "ordinal",
            rater_names=[*humans, "judge"],
            value_order=list(range(5)),
            resamples=opts.resamples,
            seed=opts.seed,
        )
        vs_median = agreement(
            [[m, j] for m, j in zip(medians, judge_col, strict=True)],
            "ordinal",
            rater_names=["human median", "judge"],
            value_order=list(range(5)),
            resamples=opts.resamples,
            seed=opts.seed,
        )
        flagged = sum(r.status != "accepted" for _, _, r in judged)
        stats = {
            "judge": judge.name,
            "judge_family": judge.family,
            "judge_prompt": config["judge_prompt"],
            "n": len(judged),
            "levels": levels,
            "needs_review": flagged,
            "judge_counts": [judge_col.count(i) for i in range(5)],
            "human_counts": [sum(row.count(i) for row in table) for i in range(5)],
            "humans": people.to_dict(),
            "humans_and_judge": with_judge.to_dict(),
            "judge_vs_median": vs_median.to_dict(),
        }
        with store.transaction() as session:
            session.execute(delete(EvalItem).where(EvalItem.run_id == run_id))
            for (rec, steps, r), median in zip(judged, medians, strict=True):
                session.add(
                    EvalItem(
                        run_id=run_id,
                        record_id=rec.id,
                        prediction=r.level,
                        reference=steps,
                        score=None if r.score is None or median is None else -abs(r.score - median),
                        scores={"human_median": median},
                        judge_score=None if r.score is None else float(r.score),
                        judge_status=r.status,
                        judge_rationale=r.rationale if r.status == "accepted" else r.raw_output,
                        judge_call_id=r.call_ids[0] if r.call_ids else None,
                    )
                )
            finish_run(session, run_id, stats)
    return CalibrateResult(run_id, False, stats)


def _median(row: list[int | None]) -> float | None:
    values = [v for v in row if v is not None]
    return None if not values else float(statistics.median_low(values))
