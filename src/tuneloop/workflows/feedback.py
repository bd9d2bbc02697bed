"""Challenging examples: score a split's records with a model, rank them by how hard they are
for it, and put the hardest into a human review queue.

Reads top to bottom: check the options -> find the selection run with these options (a
finished one is reused: its queue, no model call) -> score every record of the split with the
model through the engine, the calls ``tuneloop eval`` and ``annotate`` make (label scores for
closed tasks, a greedy answer for generative ones; cached, so a re-run costs nothing; no label
is written) -> rank by the strategy: ``uncertainty`` (1 - margin, or the entropy, of the label
distribution), ``disagreement`` (among the model, LLM annotators, people and the reference),
``judge-low`` (the judge's rating of the model's answer, lowest first), ``slice`` (the failing
items of the worst slices of the model's evaluation) or ``random`` (a seeded uniform sample, the
baseline; the model answers only the items drawn, and only where people see its answer) -> the
top n -> the responses people judge (the model's answer; for pairwise and ranking K samples from
one model, or one answer from each model, in a seeded random order) -> the queue, through
``create_queue`` (one transaction; people never see model names or reference outputs) -> the
run finished with the strategy, the scores and the chosen records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.chat import target
from tuneloop.errors import UserError
from tuneloop.llm.engine import Engine
from tuneloop.llm.judge import LEVELS, check_levels, rate
from tuneloop.llm.types import GenParams
from tuneloop.metrics.hardness import (
    MEASURES,
    Hard,
    by_disagreement,
    by_random,
    by_uncertainty,
    hardest,
    margin,
    probabilities,
)
from tuneloop.store.datasets import resolve_dataset
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import Dataset, LLMCall, ModelEntry, Queue, QueueItem, User
from tuneloop.store.runs import finish_run, keyed_run, marks_interruption
from tuneloop.training.labels import prompt_messages
from tuneloop.workflows.annotate import CLOSED
from tuneloop.workflows.datasets import iter_records
from tuneloop.workflows.evaluate import (
    EvaluateOptions,
    ModelRef,
    Progress,
    check_families,
    evaluate,
    judge_messages,
    judge_prompt_version,
)
from tuneloop.workflows.feedback_items import answers_by_source, model_responses, response_count
from tuneloop.workflows.queue_items import NewItem
from tuneloop.workflows.queues import QueueSpec, create_queue
from tuneloop.workflows.sampling import default_splits

STRATEGIES = ("uncertainty", "disagreement", "judge-low", "slice", "random")


@dataclass
class SelectOptions:
    dataset: str | None = None  # NAME[@VERSION]; default: the dataset the model was trained on
    split: str = "validation"
    strategy: str = "uncertainty"  # uncertainty | disagreement | judge-low | slice | random
    n: int = 100
    candidates: int | None = None  # score a seeded sample of this many records (default: all)
    question: str = "label"  # the queue's question type
    queue: str | None = None  # default: DATASET-STRATEGY-RUN
    responses: int | None = None  # K for pairwise (2) / ranking (3, or one per model)
    temperature: float = 0.8  # sampling K responses from one model
    seed: int = 0
    measure: str = "margin"  # uncertainty: margin | entropy
    min_slice: int = 5  # slices smaller than this are not ranked
    judge_prompt: str | None = None
    allow_same_family: bool = False
    include_queued: bool = False  # also records already in a queue of this question type
    max_tokens: int = 256
    annotators_per_item: int = 1
    members: list[str] = field(default_factory=list)
    guidelines: str | None = None
    queue_options: dict[str, Any] = field(default_factory=dict)  # labels, rubric, prompt
    project: str = "default"


@dataclass
class SelectResult:
    run_id: int
    reused: bool
    queue_id: int
    queue: str
    question: str
    strategy: str
    scored: int  # records of the split the model answered (random: the drawn ones, if any)
    chosen: list[dict[str, Any]]
    notes: list[str]


@dataclass
class _Scored:
    record_id: int
    record: str
    fields: dict[str, Any]
    answer: str | None
    call_id: int | None = None  # the label-scoring call, whose log holds the distribution
    probs: dict[str, float] | None = None


def select_hard(
    store: Store,
    opts: SelectOptions,
    models: Sequence[ModelRef],
    judge: ModelRef | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
) -> SelectResult:
    """The ``opts.n`` records of the split hardest for ``models[0]``, as a new queue."""
    if opts.strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {opts.strategy!r}; strategies: {', '.join(STRATEGIES)}")
    if opts.measure not in MEASURES:
        raise UserError(f"unknown uncertainty measure {opts.measure!r}: margin or entropy")
    if opts.n < 1:
        raise UserError(f"--n must be at least 1, got {opts.n}")
    if opts.candidates is not None and opts.candidates < opts.n:
        raise UserError(f"--candidates {opts.candidates} is fewer than --n {opts.n}")
    if not models or len({m.name for m in models}) != len(models):
        raise UserError("give one or more distinct --model values")
    k = response_count(opts.question, opts.responses, len(models), opts.temperature)
    model = models[0]
    if judge is not None:
        check_families(model, judge, opts.allow_same_family)
    with store.transaction() as session:
        project = get_project(session, opts.project)
        dataset = resolve_dataset(
            session, project, opts.dataset or _trained_on(session, project.id, model)
        )
        task, labels, dataset_ref = dataset.task_type, list(dataset.labels or []), dataset.ref
        closed = task in CLOSED
        if opts.strategy == "uncertainty" and not closed:
            raise UserError(
                f"uncertainty needs a label distribution, and {dataset_ref} is {task} (free "
                "text): use --strategy judge-low, disagreement or slice"
            )
        if opts.strategy == "judge-low" and (judge is None or closed):
            raise UserError(
                "judge-low needs --judge and a generative task (open_qa, summarization, "
                f"instruction); {dataset_ref} is {task}"
            )
        split = default_splits(dataset, [opts.split])[0]
        missing = [u for u in opts.members if not _user_exists(session, u)]
        if missing:
            raise UserError(f"no user {missing[0]!r} (add one with `tuneloop users add`)")
        config = {
            **asdict(opts),
            "dataset": dataset_ref,
            "split": split,
            "models": [m.name for m in models],
            "judge": judge.name if judge else None,
            "responses": k,
            "members": sorted(opts.members),
        }
        run = keyed_run(session, project.id, "feedback-select", dataset.id, config)
        made = session.get(Queue, run.stats.get("queue_id", -1))
        if run.status == "finished" and made is not None:
            return _result(run.id, True, made, run.stats)
        queue_name = opts.queue or f"{dataset.name}-{opts.strategy}-{run.id}"
        if session.scalar(
            select(Queue.id).where(Queue.project_id == project.id, Queue.name == queue_name)
        ):
            raise UserError(f"queue {queue_name!r} exists already in project {project.name!r}")
        run.status, run_id = "running", run.id
        records = [
            (r.id, r.external_id or str(r.id), dict(r.fields))
            for r in iter_records(session, dataset, [split])
        ]
        queued = set() if opts.include_queued else _queued(session, project.id, opts.question)
        pool = [r for r in records if r[0] not in queued]
        if not pool:  # nothing written: the new run goes with the transaction
            raise UserError(
                f"{dataset_ref} has no records in split {split} that are not in a "
                f"{opts.question} queue already (pass --include-queued to ask again)"
            )
    notes: list[str] = []
    if len(pool) < len(records):
        notes.append(f"{len(records) - len(pool)} records already in a {opts.question} queue")
    if opts.candidates is not None and len(pool) > opts.candidates:
        # a seeded draw of its own (another seed than the random strategy's own draw)
        drawn = set(
            hardest(by_random({rid: n for rid, n, _ in pool}, -1 - opts.seed), opts.candidates)
        )
        notes.append(f"scored a seeded sample of {opts.candidates} of the {len(pool)} records")
        pool = [r for r in pool if r[0] in drawn]

    def tell(stage: str, done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(Progress(stage, done, total))

    with marks_interruption(store, run_id):
        engine = model.make_engine(run_id)
        ranked: dict[int, Hard] = {}
        if opts.strategy == "random":  # draw first; the model answers what people will see
            ranked = by_random({rid: name for rid, name, _ in pool}, opts.seed)
            drawn = set(hardest(ranked, opts.n))
            pool = [r for r in pool if r[0] in drawn]
        ask = opts.strategy != "random" or k == 1  # people see the model's answer
        scored: list[_Scored] = []
        for done, (rid, name, fields) in enumerate(pool, 1):
            if not ask:
                scored.append(_Scored(rid, name, fields, None))
                continue
            scored.append(_score(engine, task, labels, rid, name, fields, opts.max_tokens))
            tell("score", done, len(pool))
        _attach_probabilities(store, scored)

        if opts.strategy == "random":
            pass  # drawn above
        elif opts.strategy == "uncertainty":
            ranked = by_uncertainty(
                {it.record_id: (it.answer, it.probs) for it in scored}, opts.measure
            )
            if not any(it.probs for it in scored):
                raise UserError(
                    f"uncertainty needs label scores, and {model.name} gives none (an HTTP "
                    "endpoint scores no labels): use --strategy disagreement or slice"
                )
            if len(ranked) < len(scored):
                notes.append(f"{len(scored) - len(ranked)} answers had no label scores (left out)")
        elif opts.strategy == "disagreement":
            answers = {it.record_id: (it.answer, it.fields) for it in scored}
            votes = answers_by_source(store, task, answers, [m.name for m in models])
            unsure = {it.record_id: 1 - margin(it.probs) for it in scored if it.probs}
            ranked = by_disagreement(votes, unsure, free_text=not closed)
        elif opts.strategy == "judge-low":
            assert judge is not None
            prompt = judge_prompt_version(store, opts.project, opts.judge_prompt, task)
            levels = check_levels(prompt.params.get("levels", LEVELS))
            judge_engine = judge.make_engine(run_id)
            ranked = {}
            for done, it in enumerate(scored, 1):
                if it.answer is None:
                    ranked[it.record_id] = Hard(None, {"no_answer": True})
                else:
                    reference = target(task, it.fields)
                    messages = judge_messages(prompt, task, it.fields, it.answer, reference)
                    rating = rate(judge_engine, messages, levels)
                    if rating.score is not None:
                        hard = float(len(levels) - 1 - rating.score)
                        ranked[it.record_id] = Hard(hard, {"judge": rating.level})
                tell("judge", done, len(scored))
            if len(ranked) < len(scored):
                notes.append(f"the judge could not rate {len(scored) - len(ranked)} answers")
        else:
            ranked = _by_worst_slices(store, opts, dataset_ref, split, model, judge, on_progress)
        by_id = {it.record_id: it for it in scored}
        picked = [
            by_id[i] for i in hardest({i: h for i, h in ranked.items() if i in by_id}, opts.n)
        ]
        if not picked:
            raise UserError(
                f"no record of {dataset_ref} ({split}) is hard by {opts.strategy}: nothing to ask"
            )

        # the responses people judge (without the models' names), then the queue
        items: list[NewItem] = []
        repeated = 0
        for done, it in enumerate(picked, 1):
            responses = None
            if k == 1:
                responses = [{"model": model.name, "text": it.answer or ""}]
            elif k > 1:
                responses = model_responses(
                    models,
                    run_id,
                    prompt_messages(task, it.fields, labels),
                    k,
                    temperature=opts.temperature,
                    seed=opts.seed,
                    max_tokens=opts.max_tokens,
                    order=f"{opts.seed}:{it.record_id}",
                )
                repeated += len({r["text"] for r in responses}) < len(responses)
                tell("responses", done, len(picked))
            items.append(NewItem(it.record_id, responses, location=f"record {it.record!r}"))
        if repeated:
            notes.append(f"{repeated} items show the same response twice (samples alike)")
        spec = QueueSpec(
            name=queue_name,
            question=opts.question,
            options=opts.queue_options,
            guidelines=opts.guidelines,
            annotators_per_item=opts.annotators_per_item,
            dataset=dataset_ref,
            members=opts.members,
            project=opts.project,
        )
        info = create_queue(store, spec, items)
        chosen = [
            {
                "record_id": it.record_id,
                "record": it.record,
                "hardness": ranked[it.record_id].hardness,
                "answer": it.answer,
                **ranked[it.record_id].details,
            }
            for it in picked
        ]
        stats = {
            "strategy": opts.strategy,
            "split": split,
            "scored": len(scored) if ask else 0,
            "chosen": chosen,
            "queue_id": info.id,
            "queue": info.name,
            "notes": notes,
        }
        with store.transaction() as session:
            finish_run(session, run_id, stats)
            made = session.get(Queue, info.id)
            assert made is not None
            return _result(run_id, False, made, stats)


def _trained_on(session: Session, project_id: int, model: ModelRef) -> str:
    entry = session.scalar(
        select(ModelEntry).where(ModelEntry.project_id == project_id, ModelEntry.name == model.name)
    )
    dataset = session.get(Dataset, entry.dataset_id) if entry and entry.dataset_id else None
    if dataset is None:
        raise UserError(f"--dataset is needed: {model.name} is not a model trained here")
    return dataset.ref


def _user_exists(session: Session, username: str) -> bool:
    name = username.strip().lower()
    return session.scalar(select(User.id).where(User.username == name)) is not None


def _queued(session: Session, project_id: int, question: str) -> set[int]:
    """Records already in a queue of this question type (not asked again by default)."""
    rows = session.scalars(
        select(QueueItem.record_id)
        .join(Queue, Queue.id == QueueItem.queue_id)
        .where(Queue.project_id == project_id, Queue.question == question)
    )
    return {rid for rid in rows if rid is not None}


def _score(
    engine: Engine,
    task: str,
    labels: list[str],
    record_id: int,
    name: str,
    fields: dict[str, Any],
    max_tokens: int,
) -> _Scored:
    """The model's answer to one record, asked exactly as evaluation and annotation ask."""
    messages = prompt_messages(task, fields, labels)
    if task in CLOSED:
        choices = labels if task == "classification" else list(fields["choices"])
        result = engine.classify(messages, choices, GenParams(max_tokens=16))
        call_id = result.call_ids[0] if result.method == "scores" else None
        return _Scored(record_id, name, fields, result.label, call_id)
    said = engine.chat(messages, GenParams(max_tokens=max_tokens))
    text = said.completion.text.strip() if said.completion else ""
    return _Scored(record_id, name, fields, text or None)


def _attach_probabilities(store: Store, scored: list[_Scored]) -> None:
    """The label distribution of each scored answer, read from its logged call."""
    calls = {it.call_id: it for it in scored if it.call_id is not None}
    ids = list(calls)
    with store.transaction() as session:
        for start in range(0, len(ids), 1000):
            rows = session.execute(
                select(LLMCall.id, LLMCall.output_data).where(
                    LLMCall.id.in_(ids[start : start + 1000])
                )
            )
            for call_id, data in rows:
                logprobs = (data or {}).get("logprobs")
                calls[call_id].probs = probabilities(logprobs) if logprobs else None


def _by_worst_slices(
    store: Store,
    opts: SelectOptions,
    dataset_ref: str,
    split: str,
    model: ModelRef,
    judge: ModelRef | None,
    on_progress: Callable[[Progress], None] | None,
) -> dict[int, Hard]:
    """The failing items of the slices below the model's overall mean (an evaluation of the
    split, reused when one with these options exists), worst slice first."""
    from tuneloop.workflows.compare import slice_analysis

    evaluated = evaluate(
        store,
        EvaluateOptions(
            prompt=None,
            dataset=dataset_ref,
            n=None,
            seed=opts.seed,
            splits=[split],
            judge_prompt=opts.judge_prompt,
            allow_same_family=opts.allow_same_family,
            max_tokens=opts.max_tokens,
            project=opts.project,
        ),
        model,
        judge,
        on_progress=on_progress,
    )
    report = slice_analysis(
        store, opts.project, f"run:{evaluated.run_id}", min_count=opts.min_slice, examples=opts.n
    )
    ranked: dict[int, Hard] = {}
    for sl in report.slices:  # worst first
        gap = report.overall.value - sl.score.value
        if not gap > 0:
            break
        for item in report.examples.get((sl.dimension, sl.value), []):
            details = {
                "slice": f"{sl.dimension}={sl.value}",
                "slice_mean": round(sl.score.value, 6),
                "evaluation": evaluated.run_id,
            }
            ranked.setdefault(item["record_id"], Hard(round(gap, 6), details))
    return ranked


def _result(run_id: int, reused: bool, queue: Queue, stats: dict[str, Any]) -> SelectResult:
    return SelectResult(
        run_id,
        reused,
        queue.id,
        queue.name,
        queue.question,
        str(stats.get("strategy")),
        int(stats.get("scored", 0)),
        list(stats.get("chosen", [])),
        list(stats.get("notes", [])),
    )
