"""Bulk annotation: an LLM labels every record of the chosen splits that this job has not
labelled yet.

Reads top to bottom: resolve dataset, model and prompt -> find or start the job's run (the
same options resume the same run) -> take the records without a label from this run -> label
them in batches (a local model scores a closed-label batch in shared decode calls; HTTP models
take bounded concurrency) -> write each batch's labels in one transaction.

Resumable and idempotent: every LLM call is logged (and cached) the moment it returns, and a
batch's labels are written together, so after a kill -9 the same command skips the records
already labelled and gets the interrupted batch's answers from the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from tuneloop.chat import record_messages
from tuneloop.llm.engine import Engine, LabelResult
from tuneloop.llm.prompts import render_messages
from tuneloop.llm.types import GenParams, Message
from tuneloop.store.datasets import resolve_dataset
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import Dataset, Label, Record, Run
from tuneloop.tasks import Split, TaskType
from tuneloop.workflows.prompts import resolve_prompt

CLOSED = (TaskType.classification.value, TaskType.multiple_choice.value)


@dataclass
class AnnotateOptions:
    dataset: str
    model: str
    prompt: str | None = None  # NAME or NAME@VERSION of a prompt version; None: the chat format
    splits: list[str] = field(default_factory=list)  # empty: train, or all of an unsplit set
    limit: int | None = None
    # label exactly these records (an evaluation or eyeball sample) instead of whole splits
    record_ids: list[int] | None = None
    batch_size: int = 16
    concurrency: int = 1
    retries: int = 2
    max_tokens: int = 256
    use_cache: bool = True
    project: str = "default"


@dataclass
class AnnotateResult:
    run_id: int
    resumed: bool
    labelled: int  # in this invocation
    needs_review: int
    total: int  # records of the job, labelled now or before
    cached_calls: int
    cost: float
    methods: dict[str, int]


@dataclass
class Progress:
    done: int
    total: int
    cost: float


def _job_key(dataset: Dataset, opts: AnnotateOptions, prompt_id: int | None) -> str:
    payload = {
        "dataset_id": dataset.id,
        "model": opts.model,
        "prompt_version_id": prompt_id,
        "splits": sorted(opts.splits),
        "limit": opts.limit,
        "max_tokens": opts.max_tokens,
    }
    if opts.record_ids is not None:
        ids = ",".join(str(i) for i in sorted(opts.record_ids))
        payload["records"] = hashlib.sha256(ids.encode()).hexdigest()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _pending(session: Session, dataset: Dataset, run_id: int, opts: AnnotateOptions) -> list[int]:
    """Ids of the job's records that have no label from this run, in dataset order."""
    labelled = select(Label.record_id).where(Label.run_id == run_id)
    chosen: ColumnElement[bool]
    if opts.record_ids is not None:
        chosen = Record.id.in_(opts.record_ids)
    else:
        chosen = Record.split.in_([s for s in opts.splits if s != "unsplit"])
        if "unsplit" in opts.splits:
            chosen = chosen | Record.split.is_(None)
    query = (
        select(Record.id)
        .where(Record.dataset_id == dataset.id, chosen)
        .where(Record.id.not_in(labelled))
        .order_by(Record.position)
    )
    return list(session.scalars(query))


def annotate(
    store: Store,
    opts: AnnotateOptions,
    make_engine: Callable[[int], Engine],
    *,
    on_progress: Callable[[Progress], None] | None = None,
) -> AnnotateResult:
    """Label the pending records of the job; ``make_engine(run_id)`` gives the LLM engine."""
    with store.transaction() as session:
        project = get_project(session, opts.project)
        dataset = resolve_dataset(session, project, opts.dataset)
        if not opts.splits:
            opts.splits = [Split.train.value] if dataset.split_config else ["unsplit"]
        if opts.prompt == "best":  # the best evaluated prompt version for this dataset
            from tuneloop.workflows.compare import best_prompt

            prompt = best_prompt(session, project.id, dataset=dataset.name).prompt
        elif opts.prompt:
            prompt = resolve_prompt(
                session, project.id, opts.prompt, dataset.task_type, role="annotator"
            )
        else:
            prompt = None
        key = _job_key(dataset, opts, prompt.id if prompt else None)
        runs = session.scalars(
            select(Run).where(Run.kind == "annotate", Run.dataset_id == dataset.id)
        ).all()
        run = next((r for r in runs if r.config.get("key") == key), None)
        resumed = run is not None
        if run is None:
            run = Run(
                project_id=project.id,
                kind="annotate",
                dataset_id=dataset.id,
                config={
                    "key": key,
                    "dataset": dataset.ref,
                    "model": opts.model,
                    "prompt": f"{prompt.name}@{prompt.version}" if prompt else None,
                    "splits": opts.splits,
                    "limit": opts.limit,
                    "max_tokens": opts.max_tokens,
                    "records": None if opts.record_ids is None else len(opts.record_ids),
                },
            )
            session.add(run)
            session.flush()
        else:
            run.status = "running"
        ids = _pending(session, dataset, run.id, opts)
        already = session.scalar(select(func.count()).where(Label.run_id == run.id)) or 0
        if opts.limit is not None:
            ids = ids[: max(0, opts.limit - already)]
        task, labels = dataset.task_type, list(dataset.labels or [])
        prompt_id = prompt.id if prompt else None
        run_id = run.id
        templates = (prompt.system_template, prompt.user_template) if prompt else None

    engine = make_engine(run_id)
    total = already + len(ids)
    done, review, cached, cost = already, 0, 0, 0.0
    methods: dict[str, int] = {}
    params = GenParams(max_tokens=opts.max_tokens)

    def messages_for(fields: dict[str, Any]) -> list[Message]:
        if templates is None:
            return record_messages(task, fields, labels or fields.get("choices"))
        return render_messages(templates[0], templates[1], fields, labels, task=task)

    def choices_for(fields: dict[str, Any]) -> list[str]:
        return list(labels if task == TaskType.classification.value else fields["choices"])

    def label_one(fields: dict[str, Any]) -> LabelResult:
        messages = messages_for(fields)
        if task in CLOSED:
            return engine.classify(
                messages, choices_for(fields), GenParams(max_tokens=16), retries=opts.retries
            )
        result = engine.chat(messages, params)
        text = result.completion.text.strip() if result.completion else ""
        return LabelResult(
            text,
            "accepted",
            None,
            None,
            "generated",
            None,
            [result.call_id],
            result.cached,
            result.cost,
        )

    try:
        with ThreadPoolExecutor(max_workers=max(1, opts.concurrency)) as pool:
            for batch in _batches(ids, opts.batch_size):
                with store.transaction() as session:
                    records = session.scalars(select(Record).where(Record.id.in_(batch))).all()
                    fields = {r.id: r.fields for r in records}
                if task in CLOSED and opts.concurrency <= 1:  # a local model scores them together
                    items = [(messages_for(fields[i]), choices_for(fields[i])) for i in batch]
                    results = engine.classify_many(
                        items, GenParams(max_tokens=16), retries=opts.retries
                    )
                else:
                    results = list(pool.map(label_one, [fields[i] for i in batch]))
                with store.transaction() as session:
                    taken = set(
                        session.scalars(
                            select(Label.record_id).where(
                                Label.run_id == run_id, Label.record_id.in_(batch)
                            )
                        )
                    )
                    for record_id, res in zip(batch, results, strict=True):
                        if record_id in taken:
                            continue
                        session.add(
                            Label(
                                record_id=record_id,
                                value=res.label,
                                source="llm",
                                llm_call_id=res.call_ids[-1],
                                prompt_version_id=prompt_id,
                                run_id=run_id,
                                status=res.status,
                                confidence=res.confidence,
                                raw_output=res.raw_output,
                                note=None if res.margin is None else f"margin {res.margin:.4f}",
                            )
                        )
                for res in results:
                    done += 1
                    review += res.status == "needs_review"
                    cached += res.cached
                    cost += res.cost
                    methods[res.method] = methods.get(res.method, 0) + 1
                if on_progress is not None:
                    on_progress(Progress(done, total, cost))
    except BaseException as exc:
        with store.transaction() as session:
            failed = session.get(Run, run_id)
            if failed is not None:
                failed.status = "interrupted"
                failed.error = f"{type(exc).__name__}: {exc}"
        raise
    with store.transaction() as session:
        finished = session.get(Run, run_id)
        assert finished is not None
        counts = {
            status: n
            for status, n in session.execute(
                select(Label.status, func.count())
                .where(Label.run_id == run_id)
                .group_by(Label.status)
            )
        }
        finished.status = "finished"
        finished.error = None
        finished.finished_at = datetime.now(UTC)
        finished.stats = {"labels": counts, "methods": methods, "cost_usd": cost}
    return AnnotateResult(run_id, resumed, done - already, review, total, cached, cost, methods)


def _batches(ids: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(ids), max(1, size)):
        yield ids[i : i + size]
