"""Evaluate a prompt version: the annotator labels a seeded sample, and its answers are
measured against the references (and, for generative tasks, rated by a judge of another family).

Reads top to bottom: resolve dataset, prompt and judge -> refuse a same-family judge unless
allowed (recorded) -> draw the sample (the same items for every prompt version) -> find a
finished evaluation with these options (reuse it) or start one -> the annotator labels the
sample (a resumable annotate job; answers cached) -> metrics against the references with
bootstrap intervals -> the judge rates each answer (cached calls) -> items and metrics written
in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select

from tuneloop.errors import UserError
from tuneloop.llm.engine import Engine
from tuneloop.llm.judge import LEVELS, check_levels, rate
from tuneloop.llm.prompts import render_messages
from tuneloop.llm.types import Message
from tuneloop.metrics.classification import classification_metrics, per_item_correct
from tuneloop.metrics.intervals import mean_interval
from tuneloop.metrics.text import text_metrics
from tuneloop.store.datasets import resolve_dataset
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import EvalItem, Label, PromptVersion, Record
from tuneloop.store.runs import finish_run, keyed_run, marks_interruption
from tuneloop.tasks import TaskType, task_spec
from tuneloop.workflows.annotate import CLOSED, AnnotateOptions, annotate
from tuneloop.workflows.annotate import Progress as AnnotateProgress
from tuneloop.workflows.prompts import create_prompt, resolve_prompt, starter, starters
from tuneloop.workflows.sampling import default_splits, sample_records

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class ModelRef:
    """A model to call: its name, its family, and how to make its engine for a run."""

    name: str
    family: str
    make_engine: Callable[[int | None], Engine]


@dataclass
class EvaluateOptions:
    prompt: str | None  # NAME or NAME@VERSION of the annotator prompt; None: the chat format
    dataset: str
    n: int | None = 500  # None: every record of the splits
    seed: int = 0
    splits: list[str] = field(default_factory=list)  # default: every split but gold
    judge_prompt: str | None = None  # default: the shipped judge for the task
    judge_mode: str = "rationale"  # rationale | score
    allow_same_family: bool = False
    resamples: int = 1000
    max_tokens: int = 256
    batch_size: int = 16
    concurrency: int = 1
    force: bool = False  # evaluate again even when a finished run has these options
    project: str = "default"


@dataclass
class Progress:
    stage: str  # annotate | judge
    done: int
    total: int


@dataclass
class EvaluateResult:
    run_id: int
    reused: bool
    prompt: str | None
    n: int
    population: int
    stats: dict[str, Any]


JUDGE_STARTERS = {
    TaskType.summarization.value: "judge-summary",
    TaskType.open_qa.value: "judge-answer",
    TaskType.instruction.value: "judge-response",
}


def judge_starter(task: str) -> str:
    """The shipped judge prompt for a generative task."""
    return JUDGE_STARTERS.get(task, "judge-answer")


def check_families(annotator: ModelRef, judge: ModelRef, allow_same_family: bool) -> None:
    """A judge rates its own family's answers too kindly: refuse one unless told otherwise."""
    if annotator.family == judge.family and not allow_same_family:
        raise UserError(
            f"the judge {judge.name} is of the same model family ({judge.family}) as the "
            f"annotator {annotator.name}: a judge tends to favour answers of its own family. "
            "Pick a judge of another family, or pass --allow-same-family (it is recorded with "
            "the evaluation)."
        )


def judge_prompt_version(store: Store, project: str, ref: str | None, task: str) -> PromptVersion:
    """The named judge prompt, or the shipped judge for the task; a shipped judge is added to
    the project's prompts on first use (so its version is tracked like any other)."""
    name = ref or judge_starter(task)
    base = name.partition("@")[0]
    with store.transaction() as session:
        project_id = get_project(session, project).id
        exists = session.scalar(
            select(PromptVersion.id).where(
                PromptVersion.project_id == project_id, PromptVersion.name == base
            )
        )
    if exists is None and base in starters():
        create_prompt(store, project, base, starter(base))
    with store.transaction() as session:
        project_id = get_project(session, project).id
        prompt = resolve_prompt(session, project_id, name, task)
        if prompt.role != "judge":
            raise UserError(f"prompt {prompt.name}@{prompt.version} is not a judge prompt")
        session.expunge(prompt)
        return prompt


def judge_messages(
    prompt: PromptVersion, task: str, fields: dict[str, Any], output: str, reference: Any
) -> list[Message]:
    levels = check_levels(prompt.params.get("levels", LEVELS))
    return render_messages(
        prompt.system_template,
        prompt.user_template,
        fields,
        task=task,
        extra={"output": output, "reference": reference, "levels": levels},
    )


def evaluate(
    store: Store,
    opts: EvaluateOptions,
    annotator: ModelRef,
    judge: ModelRef | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
) -> EvaluateResult:
    """Evaluate ``opts.prompt`` as answered by ``annotator`` (and rated by ``judge``)."""
    with store.transaction() as session:
        project = get_project(session, opts.project)
        dataset = resolve_dataset(session, project, opts.dataset)
        task = dataset.task_type
        prompt_ref, prompt_id = None, None  # None: the task's chat format (a trained model's)
        if opts.prompt is not None:
            prompt = resolve_prompt(session, project.id, opts.prompt, task, role="annotator")
            prompt_ref, prompt_id = f"{prompt.name}@{prompt.version}", prompt.id
        closed = task in CLOSED
        splits = default_splits(dataset, opts.splits)
        sample = sample_records(
            session, dataset, splits, opts.n or 2**62, opts.seed, need_reference=True
        )
        dataset_ref, dataset_id, labels = dataset.ref, dataset.id, list(dataset.labels or [])
    if judge is not None and closed:
        raise UserError(
            f"{task} answers are measured against the reference labels; a judge rates "
            "generative answers (open_qa, summarization, instruction)"
        )
    judge_prompt = None
    if judge is not None:
        check_families(annotator, judge, opts.allow_same_family)
        judge_prompt = judge_prompt_version(store, opts.project, opts.judge_prompt, task)
    config = {
        "prompt": prompt_ref,
        "prompt_version_id": prompt_id,
        "model": annotator.name,
        "family": annotator.family,
        "dataset": dataset_ref,
        "splits": splits,
        "n": opts.n,
        "seed": opts.seed,
        "max_tokens": opts.max_tokens,
        "judge": None if judge is None else judge.name,
        "judge_family": None if judge is None else judge.family,
        "judge_prompt": None
        if judge_prompt is None
        else f"{judge_prompt.name}@{judge_prompt.version}",
        "judge_mode": opts.judge_mode if judge else None,
        "allow_same_family": bool(judge and judge.family == annotator.family),
        "resamples": opts.resamples,
    }
    with store.transaction() as session:
        run = keyed_run(session, project.id, "evaluate", dataset_id, config)
        if run.status == "finished" and not opts.force:
            return EvaluateResult(
                run.id, True, prompt_ref, len(sample.ids), sample.population, run.stats
            )
        run.status, run_id = "running", run.id

    def tell(stage: str) -> Callable[[AnnotateProgress], None]:
        def forward(p: AnnotateProgress) -> None:
            if on_progress is not None:
                on_progress(Progress(stage, p.done, p.total))

        return forward

    with marks_interruption(store, run_id):
        labelled = annotate(
            store,
            AnnotateOptions(
                dataset=dataset_ref,
                model=annotator.name,
                prompt=prompt_ref,
                record_ids=sample.ids,
                max_tokens=opts.max_tokens,
                batch_size=opts.batch_size,
                concurrency=opts.concurrency,
                project=opts.project,
            ),
            annotator.make_engine,
            on_progress=tell("annotate"),
        )
        with store.transaction() as session:
            records = {
                r.id: r for r in session.scalars(select(Record).where(Record.id.in_(sample.ids)))
            }
            answers = {
                lab.record_id: lab
                for lab in session.scalars(select(Label).where(Label.run_id == labelled.run_id))
            }
            items = [_item(records[rid], answers.get(rid), task) for rid in sample.ids]
            for record in records.values():
                session.expunge(record)
        stats: dict[str, Any] = {"annotate_run": labelled.run_id, "n": len(items)}
        stats["needs_review"] = sum(1 for it in items if it.prediction is None)
        if closed:
            gold = [str(it.reference) for it in items]
            pred = [it.prediction for it in items]
            names = labels if task == TaskType.classification.value else None
            if task == TaskType.multiple_choice.value:
                gold = [  # an answer is always one of its record's choices
                    LETTERS[it.record.fields["choices"].index(g)]
                    for it, g in zip(items, gold, strict=True)
                ]
                pred = [
                    _letter(it.record.fields["choices"], p)
                    for it, p in zip(items, pred, strict=True)
                ]
                names = sorted({*gold, *(p for p in pred if p)})
            result = classification_metrics(
                gold, pred, names, resamples=opts.resamples, seed=opts.seed
            )
            stats["metrics"] = result.to_dict()
            stats["primary"] = "accuracy"
            for it, ok in zip(items, per_item_correct(gold, pred), strict=True):
                it.score = float(ok)
                it.scores = {"correct": float(ok)}
        else:
            refs = [str(it.reference) for it in items]
            preds = [it.prediction or "" for it in items]
            text = text_metrics(refs, preds, resamples=opts.resamples, seed=opts.seed)
            stats["metrics"] = text.to_dict()
            stats["primary"] = "rougeL"
            for it, scores in zip(items, text.per_item, strict=True):
                it.scores = dict(scores)
                it.score = scores["rougeL"]
        if judge is not None and judge_prompt is not None:
            stats["judge"] = _run_judge(judge, judge_prompt, task, items, run_id, opts, on_progress)
            stats["primary"] = "judge"
        with store.transaction() as session:
            session.execute(delete(EvalItem).where(EvalItem.run_id == run_id))
            for it in items:
                session.add(
                    EvalItem(
                        run_id=run_id,
                        record_id=it.record.id,
                        label_id=it.label_id,
                        prediction=it.prediction,
                        reference=it.reference,
                        score=it.score,
                        scores=it.scores,
                        confidence=it.confidence,
                        judge_score=it.judge_score,
                        judge_status=it.judge_status,
                        judge_rationale=it.judge_rationale,
                        judge_call_id=it.judge_call_id,
                    )
                )
            finish_run(session, run_id, stats)
    return EvaluateResult(run_id, False, prompt_ref, len(items), sample.population, stats)


@dataclass
class _Item:
    record: Record
    label_id: int | None
    prediction: str | None
    reference: Any
    confidence: float | None
    score: float | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    judge_score: float | None = None
    judge_status: str | None = None
    judge_rationale: str | None = None
    judge_call_id: int | None = None


def _item(record: Record, label: Label | None, task: str) -> _Item:
    target = task_spec(task).target
    accepted = label is not None and label.status == "accepted"
    value = label.value if accepted and label is not None else None
    return _Item(
        record,
        None if label is None else label.id,
        None if value is None else str(value),
        record.fields.get(target),
        None if label is None else label.confidence,
    )


def _letter(choices: list[str], answer: str | None) -> str | None:
    if answer is None or answer not in choices:
        return None
    return LETTERS[choices.index(answer)]


def _run_judge(
    judge: ModelRef,
    prompt: PromptVersion,
    task: str,
    items: list[_Item],
    run_id: int,
    opts: EvaluateOptions,
    on_progress: Callable[[Progress], None] | None,
) -> dict[str, Any]:
    """Rate every answer; an item without an answer is not rated (it counts as flagged)."""
    engine = judge.make_engine(run_id)
    levels = check_levels(prompt.params.get("levels", LEVELS))
    counts = dict.fromkeys(levels, 0)
    flagged = 0
    for done, it in enumerate(items, 1):
        if it.prediction is None:
            it.judge_status = "needs_review"
            it.score = None
            flagged += 1
        else:
            messages = judge_messages(prompt, task, it.record.fields, it.prediction, it.reference)
            rating = rate(engine, messages, levels, mode=opts.judge_mode)
            it.judge_status = rating.status
            it.judge_rationale = (
                rating.rationale if rating.status == "accepted" else (rating.raw_output)
            )
            it.judge_call_id = rating.call_ids[0] if rating.call_ids else None
            if rating.score is not None and rating.level is not None:
                it.judge_score = float(rating.score)
                it.score = float(rating.score)
                counts[rating.level] += 1
            else:
                it.score = None  # flagged: never a guessed rating
                flagged += 1
        if on_progress is not None:
            on_progress(Progress("judge", done, len(items)))
    rated = [it.judge_score for it in items if it.judge_score is not None]
    mean = mean_interval(rated, resamples=opts.resamples, seed=opts.seed) if rated else None
    return {
        "model": judge.name,
        "family": judge.family,
        "prompt": f"{prompt.name}@{prompt.version}",
        "levels": levels,
        "counts": counts,
        "needs_review": flagged,
        "rated": len(rated),
        "mean": None if mean is None else mean.to_dict(),
    }
