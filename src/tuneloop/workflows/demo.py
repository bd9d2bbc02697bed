"""The main job on the embedded defaults: what ``make demo`` runs.

Stages so far, on Rotten Tomatoes: (1) data: import, de-duplicate, split with a locked gold
slice; (2) eyeball: prompt v1 (a shipped starter) answers a few seeded records, shown beside
their inputs; (3) evaluate v1 on a seeded sample against the dataset's labels, with intervals;
(4) revise to the shipped v2, evaluate it on the same items and compare the two; (5) apply the
better version to the training records; (6) fine-tune the student on those labels; (7)
evaluate base, annotator and student on the gold slice. Each later stage of the loop joins
here as it lands. A second run reuses finished stages: the imported dataset, the evaluations
(stored runs), the annotation job (resumed, its answers in the call cache) and the student.

Every run of the demo records itself (``demo_log``: a ``demo`` run with each stage's seconds,
LLM usage and run ids) and ends by writing its HTML report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tuneloop.examples import get_example
from tuneloop.llm.engine import Engine
from tuneloop.llm.factory import ModelHandle, open_model
from tuneloop.splits import SplitPlan
from tuneloop.store.datasets import resolve_dataset
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import Dataset, ModelEntry, PromptVersion, Record
from tuneloop.store.runs import marks_interruption
from tuneloop.training.config import TrainConfig
from tuneloop.workflows.annotate import AnnotateOptions, annotate
from tuneloop.workflows.compare import compare_runs
from tuneloop.workflows.demo_log import DemoLog, run_of_labels
from tuneloop.workflows.demo_review import ReviewStage, review_stage
from tuneloop.workflows.evaluate import EvaluateOptions, ModelRef, evaluate
from tuneloop.workflows.examples import import_example
from tuneloop.workflows.eyeball import EyeballOptions, eyeball
from tuneloop.workflows.prompts import create_prompt, edit_prompt, starter
from tuneloop.workflows.report import write_report
from tuneloop.workflows.train import sft

STAGES = 8
PROMPT = "sentiment"


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of one demo run."""

    example: str = "rotten-tomatoes"
    sample: int | None = None  # None: every record
    gold: int = 500
    ratios: str = "0.8,0.1,0.1"
    annotator: str = "qwen2.5-coder-1.5b-instruct"
    eyeball_n: int = 8
    evaluate_n: int = 500
    annotate_n: int = 300
    student_base: str = "smollm2-135m-instruct"
    train_epochs: float = 1.0
    train_max_steps: int | None = None
    review_n: int = 50  # the student's hardest validation records, queued for people
    review_candidates: int = 200  # of a seeded sample of this many validation records

    @property
    def dataset_name(self) -> str:
        return "demo-" + self.example + ("" if self.sample is None else f"-{self.sample}")


FULL = DemoConfig()
QUICK = DemoConfig(
    sample=1000,
    gold=100,
    annotator="qwen2.5-coder-0.5b-instruct",
    eyeball_n=4,
    evaluate_n=40,
    annotate_n=40,
    train_max_steps=10,
    review_n=10,
    review_candidates=50,
)


Meter = Callable[[str, int | None], AbstractContextManager[Callable[[int], None]]]


@contextmanager
def no_meter(_description: str, _total: int | None) -> Iterator[Callable[[int], None]]:
    yield lambda _n: None


@dataclass
class DemoResult:
    ref: str
    reused: bool
    stats: dict[str, Any]
    evaluations: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, Any] = field(default_factory=dict)
    annotation: dict[str, Any] = field(default_factory=dict)
    student: dict[str, Any] = field(default_factory=dict)
    gold: dict[str, Any] = field(default_factory=dict)  # model -> its evaluation on gold
    review: ReviewStage | None = None  # people and the queue of the student's hardest items
    run_id: int | None = None  # the demo's own run
    report: Path | None = None


def run_demo(
    store: Store,
    *,
    quick: bool = False,
    seed: int = 13,
    project: str = "default",
    project_dir: Path | None = None,
    say: Callable[[str], None] = print,
    meter: Meter = no_meter,
    report: Path | None = None,
) -> DemoResult:
    """Run (or reuse) each stage; ``meter(description, total)`` shows progress. Records itself
    as a ``demo`` run and writes its report (default: PROJECT_DIR/reports/demo-run-ID.html)."""
    project_dir = project_dir or Path.cwd()
    config = QUICK if quick else FULL
    log = DemoLog.start(store, project, {"quick": quick, "seed": seed, **asdict(config)})
    with marks_interruption(store, log.run_id):
        result = _stages(store, config, seed, project, project_dir, say, meter, log)
        log.finish(dataset=result.ref, student=result.student["model"])
    result.run_id = log.run_id
    path = report or project_dir / "reports" / f"demo-run-{log.run_id}.html"
    result.report = write_report(store, log.run_id, path)
    return result


def _stages(
    store: Store,
    config: DemoConfig,
    seed: int,
    project: str,
    project_dir: Path,
    say: Callable[[str], None],
    meter: Meter,
    log: DemoLog,
) -> DemoResult:
    log.begin("data")
    result = _data_stage(store, config, seed, project, say, meter)
    log.end("data", reused=result.reused, runs={}, dataset=result.ref)
    handle = open_model(config.annotator)
    try:
        annotator = ModelRef(
            config.annotator,
            handle.family,
            lambda run_id: Engine(store, handle.provider, family=handle.family, run_id=run_id),
        )
        v1 = _ensure_prompt(store, project, 1, "sentiment-v1")
        say(f"[2/{STAGES}] eyeball: {v1} by {config.annotator} on {config.eyeball_n} records")
        log.begin("eyeball")
        sample = eyeball(
            store,
            EyeballOptions(v1, result.ref, n=config.eyeball_n, seed=seed, project=project),
            annotator,
        )
        for item in sample.items:
            text = str(item.inputs.get("text", ""))
            mark = "ok " if item.output == item.reference else "BAD"
            say(f"  {mark} {item.output!s:>7} (gold {item.reference}) | {text[:90]}")
        log.end(
            "eyeball",
            reused=None,
            runs={"annotation": run_of_labels(store, [item.label_id for item in sample.items])},
            prompt=v1,
            records=len(sample.items),
            agree=sum(item.output == item.reference for item in sample.items),
        )
        for stage, version, name in ((3, 1, "sentiment-v1"), (4, 2, "sentiment-v2")):
            ref = _ensure_prompt(store, project, version, name)
            say(
                f"[{stage}/{STAGES}] evaluate: {ref} on {config.evaluate_n} seeded records "
                "against the dataset's labels"
            )
            log.begin(f"evaluate v{version}")
            done = _evaluate(store, config, ref, result.ref, seed, project, annotator, say, meter)
            result.evaluations[ref] = done
            log.end(
                f"evaluate v{version}",
                reused=done["reused"],
                runs={"evaluation": done["run_id"]},
                prompt=ref,
            )
        log.begin("compare")
        c = compare_runs(
            store,
            result.evaluations[f"{PROMPT}@1"]["run_id"],
            result.evaluations[f"{PROMPT}@2"]["run_id"],
        )
        result.comparison = c.to_dict()
        say(f"compare: accuracy difference (v2 - v1) {c.diff}, {c.verdict}")
        best = f"{PROMPT}@2" if c.diff.value > 0 else f"{PROMPT}@1"
        reused = all(e["reused"] for e in result.evaluations.values())
        log.end("compare", reused=reused, runs={}, result=result.comparison, best=best)
        log.begin("apply")
        result.annotation = _apply(store, config, best, result.ref, project, annotator, say, meter)
        log.end("apply", reused=None, runs={"annotation": result.annotation["run_id"]}, prompt=best)
        log.begin("fine-tune")
        result.student = _train(store, config, best, result.ref, project, project_dir, say)
        log.end(
            "fine-tune",
            reused=result.student["reused"],
            runs={"train": result.student["run_id"]},
            model=result.student["model"],
        )
        say(
            f"[7/{STAGES}] gold: base {config.student_base}, annotator {config.annotator} "
            f"({best}) and student {result.student['model']} on the locked gold slice"
        )
        log.begin("gold")
        result.gold[config.annotator] = _evaluate(
            store, config, best, result.ref, seed, project, annotator, say, meter, split="gold"
        )
    finally:
        handle.close()
    for name in (config.student_base, result.student["model"]):
        other = open_model(name, project_dir, store=store)
        try:
            model = ModelRef(name, other.family, _engine_maker(store, other))
            result.gold[name] = _evaluate(
                store, config, None, result.ref, seed, project, model, say, meter, split="gold"
            )
        finally:
            other.close()
    runs = [result.gold[m]["run_id"] for m in result.gold]
    comparisons = []
    for name, run_id in zip(list(result.gold)[1:], runs[1:], strict=True):
        c = compare_runs(store, runs[0], run_id)
        say(f"{name} vs {config.annotator}: accuracy difference {c.diff}, {c.verdict}")
        comparisons.append(c.to_dict())
    models = {"base": config.student_base, "annotator": config.annotator}
    models["student"] = result.student["model"]
    log.end(
        "gold",
        reused=all(g["reused"] for g in result.gold.values()),
        runs={role: result.gold[name]["run_id"] for role, name in models.items()},
        models=models,
        comparisons=comparisons,
    )
    say(
        f"[8/{STAGES}] review: the {config.review_n} validation records (of a sample of "
        f"{config.review_candidates}) {result.student['model']} is least sure about, queued "
        "for people in the web app"
    )
    log.begin("review")
    with meter("select", config.review_candidates) as on_row:
        counted = [0]

        def on_progress(p: Any) -> None:
            on_row(p.done - counted[0])
            counted[0] = p.done

        result.review = review_stage(
            store,
            dataset=result.ref,
            student=result.student["model"],
            n=config.review_n,
            candidates=config.review_candidates,
            seed=seed,
            project=project,
            project_dir=project_dir,
            say=say,
            on_progress=on_progress,
        )
    log.end(
        "review",
        reused=result.review.reused,
        runs={"selection": result.review.run_id},
        queue=result.review.queue,
        items=result.review.items,
        people=result.review.people,
    )
    return result


def _engine_maker(store: Store, handle: ModelHandle) -> Callable[[int | None], Engine]:
    def make(run_id: int | None) -> Engine:
        return Engine(store, handle.provider, family=handle.family, run_id=run_id)

    return make


def _train(
    store: Store,
    config: DemoConfig,
    prompt: str,
    ref: str,
    project: str,
    project_dir: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Fine-tune the student with LoRA on the annotator's labels (made once)."""
    name = f"{config.dataset_name}-student"
    with store.transaction() as session:
        proj = get_project(session, project)
        have = session.scalar(
            select(ModelEntry).where(ModelEntry.project_id == proj.id, ModelEntry.name == name)
        )
        if have is not None:
            say(f"[6/{STAGES}] fine-tune: reusing {name}")
            return {
                "model": name,
                "reused": True,
                "run_id": have.run_id,
                "label_sources": have.label_sources,
            }
    say(
        f"[6/{STAGES}] fine-tune: {config.student_base} with LoRA on {config.annotate_n} "
        f"training records with the {prompt} labels of {config.annotator}"
    )
    trained = sft(
        store,
        TrainConfig.model_validate(
            {
                "dataset": ref,
                "base": config.student_base,
                "name": name,
                "labels": "llm",
                "prompt": prompt,
                "epochs": config.train_epochs,
                "max_steps": config.train_max_steps,
                # as many examples as the apply stage labelled: the evaluations' labels of
                # training records would more than double the time the student takes to train
                "limit": config.annotate_n,
                "seed": 13,
            }
        ),
        project=project,
        project_dir=project_dir,
        note=say,
    )
    loss = "-" if trained.train_loss is None else f"{trained.train_loss:.4f}"
    say(
        f"trained {name}: {trained.steps} steps in {trained.seconds:.0f} s, train loss {loss}, "
        f"{sum(trained.counts.values())} examples ({trained.precision})"
    )
    return {
        "model": name,
        "reused": False,
        "run_id": trained.run_id,
        "steps": trained.steps,
        "train_loss": trained.train_loss,
        "seconds": trained.seconds,
        "counts": trained.counts,
    }


def _ensure_prompt(store: Store, project: str, version: int, name: str) -> str:
    """Prompt ``sentiment@version`` from the shipped starter ``name`` (made once)."""
    with store.transaction() as session:
        proj = get_project(session, project)
        have = session.scalar(
            select(PromptVersion.id).where(
                PromptVersion.project_id == proj.id,
                PromptVersion.name == PROMPT,
                PromptVersion.version == version,
            )
        )
    if have is None:
        spec = starter(name)
        if version == 1:
            create_prompt(store, project, PROMPT, spec)
        else:
            edit_prompt(
                store,
                project,
                f"{PROMPT}@{version - 1}",
                user=spec.user,
                system=spec.system,
                note=spec.note,
                author="tuneloop demo",
            )
    return f"{PROMPT}@{version}"


def _split_size(store: Store, project: str, ref: str, split: str) -> int:
    """How many records ``split`` of dataset ``ref`` holds (the progress bar's total)."""
    with store.transaction() as session:
        dataset = resolve_dataset(session, get_project(session, project), ref)
        count = session.scalar(
            select(func.count()).where(Record.dataset_id == dataset.id, Record.split == split)
        )
    return int(count or 0)


def _evaluate(
    store: Store,
    config: DemoConfig,
    prompt: str | None,
    dataset: str,
    seed: int,
    project: str,
    annotator: ModelRef,
    say: Callable[[str], None],
    meter: Meter,
    *,
    split: str | None = None,
) -> dict[str, Any]:
    """Evaluate a prompt on the seeded sample, or (``split``) every record of a split."""
    n = None if split else config.evaluate_n
    with meter("evaluate", _split_size(store, project, dataset, split) if split else n) as on_row:
        done = [0]

        def on_progress(p: Any) -> None:
            on_row(p.done - done[0])
            done[0] = p.done

        opts = EvaluateOptions(prompt, dataset, n=n, seed=seed, project=project)
        if split:
            opts.splits = [split]
        result = evaluate(store, opts, annotator, on_progress=on_progress)
    m = result.stats["metrics"]
    verb = "reused" if result.reused else "finished"
    say(
        f"{annotator.name} {prompt or '(chat format)'}: {verb} run {result.run_id}: accuracy "
        f"{_iv(m['accuracy'])}, macro F1 {_iv(m['macro']['f1'])}, "
        f"{result.stats['needs_review']} outside the label set"
    )
    return {"run_id": result.run_id, "reused": result.reused, **result.stats}


def _iv(d: dict[str, Any]) -> str:
    return f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


def _data_stage(
    store: Store,
    config: DemoConfig,
    seed: int,
    project: str,
    say: Callable[[str], None],
    meter: Meter,
) -> DemoResult:
    with store.transaction() as session:
        proj = get_project(session, project)
        existing = session.scalar(
            select(Dataset)
            .where(Dataset.project_id == proj.id, Dataset.name == config.dataset_name)
            .order_by(Dataset.version.desc())
            .limit(1)
        )
        if existing is not None and existing.split_config is not None:
            say(f"[1/{STAGES}] data: reusing {existing.ref} ({existing.record_count} records)")
            return DemoResult(existing.ref, True, existing.stats)
    say(
        f"[1/{STAGES}] data: importing {config.example}"
        + (f" (a seeded sample of about {config.sample})" if config.sample else "")
    )
    plan = SplitPlan.parse(config.ratios, gold=config.gold, seed=seed)
    total = config.sample or get_example(config.example).size
    with meter(f"import {config.example}", total) as on_row:
        result = import_example(
            store,
            config.example,
            dataset_name=config.dataset_name,
            split=plan,
            sample=config.sample,
            seed=seed,
            project=project,
            on_row=on_row,
        )
    say(
        f"imported {result.imported} records into {result.ref} "
        f"({result.exact_duplicates} exact and {result.near_duplicates} near duplicates dropped)"
    )
    return DemoResult(result.ref, False, result.stats)


def _apply(
    store: Store,
    config: DemoConfig,
    prompt: str,
    ref: str,
    project: str,
    annotator: ModelRef,
    say: Callable[[str], None],
    meter: Meter,
) -> dict[str, Any]:
    say(
        f"[5/{STAGES}] apply: {prompt} labels {config.annotate_n} training records "
        f"with {config.annotator} (label scoring)"
    )
    opts = AnnotateOptions(
        dataset=ref,
        model=config.annotator,
        prompt=prompt,
        limit=config.annotate_n,
        project=project,
    )
    with meter("annotate", config.annotate_n) as on_row:
        done = [0]

        def on_progress(p: Any) -> None:
            on_row(p.done - done[0])
            done[0] = p.done

        outcome = annotate(store, opts, annotator.make_engine, on_progress=on_progress)
    summary = {
        "run_id": outcome.run_id,
        "prompt": prompt,
        "model": config.annotator,
        "labelled": outcome.total,
        "needs_review": outcome.needs_review,
        "resumed": outcome.resumed,
    }
    verb = "reused" if outcome.labelled == 0 else "labelled"
    say(
        f"{verb} {outcome.total} training records (run {outcome.run_id}); "
        f"{outcome.needs_review} need review; {outcome.cached_calls} answers from the cache"
    )
    return summary
