"""Reading evaluations: where a prompt's labels are bad (slices), whether one prompt version
beats another on the same items (paired bootstrap, McNemar), and which version is best.

Everything here reads finished ``evaluate`` runs and their items; nothing calls a model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.errors import UserError
from tuneloop.metrics.intervals import Interval, McNemar, mcnemar, mean_interval, paired_difference
from tuneloop.metrics.slices import Slice, confidence_bucket, length_buckets, slices
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import EvalItem, PromptVersion, Record, Run

# the metric each task's "best" is chosen by, when not named: per-item means or run metrics
METRICS = (
    "accuracy",
    "macro_f1",
    "micro_f1",
    "judge",
    "rouge1",
    "rouge2",
    "rougeL",
    "bleu",
    "chrf",
)
MAX_META_VALUES = 20


def finished_evaluations(session: Session, project_id: int) -> list[Run]:
    """The project's finished evaluation runs, newest first."""
    return list(
        session.scalars(
            select(Run)
            .where(Run.project_id == project_id, Run.kind == "evaluate", Run.status == "finished")
            .order_by(Run.id.desc())
        )
    )


def find_evaluation(session: Session, project_id: int, ref: str, dataset: str | None = None) -> Run:
    """An evaluation by run id (``12``, ``run:12``) or the latest finished one of a prompt
    version (``NAME`` or ``NAME@N``), optionally on a dataset NAME[@VERSION]."""
    text = ref.removeprefix("run:")
    if text.isdigit():
        run = session.get(Run, int(text))
        if run is None or run.kind != "evaluate" or run.project_id != project_id:
            raise UserError(f"no evaluation run {text}")
        return run
    from tuneloop.workflows.prompts import resolve_prompt

    prompt = resolve_prompt(session, project_id, ref)
    runs = [
        r
        for r in finished_evaluations(session, project_id)
        if r.config.get("prompt_version_id") == prompt.id
        and (dataset is None or _same_dataset(r.config.get("dataset", ""), dataset))
    ]
    if not runs:
        where = f" on {dataset}" if dataset else ""
        raise UserError(
            f"prompt {prompt.name}@{prompt.version} has no finished evaluation{where}; "
            "run `tuneloop prompt evaluate` first"
        )
    return runs[0]


def run_label(run: Run) -> str:
    """What an evaluation measured: its prompt version, or the model with the chat format."""
    prompt = run.config.get("prompt")
    return str(prompt) if prompt else f"{run.config.get('model')} (chat format)"


def _same_dataset(run_dataset: str, wanted: str) -> bool:
    return run_dataset == wanted if "@" in wanted else run_dataset.partition("@")[0] == wanted


@dataclass
class SliceReport:
    run_id: int
    prompt: str
    primary: str
    overall: Interval
    n: int
    slices: list[Slice]
    examples: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)


def slice_analysis(
    store: Store,
    project: str,
    ref: str,
    *,
    dataset: str | None = None,
    by: list[str] | None = None,
    min_count: int = 5,
    examples: int = 0,
    resamples: int = 1000,
) -> SliceReport:
    """Per gold label, per metadata field, per input length and per annotator confidence:
    the mean item score of each slice with its interval, worst first; ``examples`` failing
    items per slice (lowest scores first)."""
    with store.transaction() as session:
        project_id = get_project(session, project).id
        run = find_evaluation(session, project_id, ref, dataset)
        rows = session.execute(
            select(EvalItem, Record)
            .join(Record, Record.id == EvalItem.record_id)
            .where(EvalItem.run_id == run.id)
            .order_by(Record.position)
        ).all()
        closed = run.stats.get("primary") == "accuracy"
        items = [
            {
                "record_id": rec.id,
                "position": rec.position,
                "fields": rec.fields,
                "meta": rec.meta or {},
                "input_chars": rec.input_chars,
                "prediction": it.prediction,
                "reference": it.reference,
                "score": it.score,
                "confidence": it.confidence,
                "judge_rationale": it.judge_rationale,
            }
            for it, rec in rows
        ]
        run_id, prompt, primary = run.id, run_label(run), run.stats.get("primary", "score")
    if not items:
        raise UserError(f"evaluation run {run_id} has no items")
    scores = [it["score"] for it in items]
    wanted = set(by or [])
    dims: dict[str, list[str | None]] = {}
    if closed and (not wanted or "label" in wanted):
        dims["label"] = [None if it["reference"] is None else str(it["reference"]) for it in items]
    for name in _meta_fields(items, wanted):
        dims[f"meta.{name}"] = [_scalar(it["meta"].get(name)) for it in items]
    if not wanted or "length" in wanted:
        dims["length"] = list(length_buckets([it["input_chars"] for it in items]))
    if (not wanted or "confidence" in wanted) and any(it["confidence"] for it in items):
        dims["confidence"] = [confidence_bucket(it["confidence"]) for it in items]
    unknown = wanted - set(dims) - {"label", "length", "confidence"}
    if unknown:
        raise UserError(
            f"cannot slice by {', '.join(sorted(unknown))}: use label, length, confidence or "
            "meta.FIELD with a field the records have"
        )
    table: list[Slice] = []
    for dim, keys in dims.items():
        table += slices(dim, keys, scores, min_count=min_count, resamples=resamples)
    table.sort(key=lambda s: (s.score.value, -s.n))
    rated = [float(s) for s in scores if s is not None]
    report = SliceReport(
        run_id, prompt, primary, mean_interval(rated, resamples=resamples), len(rated), table
    )
    if examples:
        for sl in table:
            members = sorted(sl.members, key=lambda i: (items[i]["score"], items[i]["position"]))
            worst = [items[i] for i in members if _failing(items[i]["score"], closed, primary)]
            report.examples[(sl.dimension, sl.value)] = worst[:examples]
    return report


def _failing(score: float | None, closed: bool, primary: str) -> bool:
    if score is None:
        return True
    if closed:
        return score < 1.0
    if primary == "judge":
        return score <= 1.0  # very bad or bad
    return score < 0.2


def _scalar(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def _meta_fields(items: list[dict[str, Any]], wanted: set[str]) -> list[str]:
    """The metadata fields to slice by: those named, else every field with 2..20 values."""
    named = [w.removeprefix("meta.") for w in wanted if w.startswith("meta.")]
    if wanted:
        return named
    values: dict[str, Counter[str]] = {}
    for it in items:
        for key, value in it["meta"].items():
            text = _scalar(value)
            if text is not None:
                values.setdefault(key, Counter())[text] += 1
    return sorted(k for k, c in values.items() if 2 <= len(c) <= MAX_META_VALUES)


@dataclass
class Comparison:
    a: str
    b: str
    a_run: int
    b_run: int
    metric: str
    n: int  # items both evaluated
    a_score: Interval
    b_score: Interval
    diff: Interval  # b - a
    p_value: float
    mcnemar: McNemar | None
    verdict: str
    run_metrics: dict[str, tuple[Any, Any]]

    def to_dict(self) -> dict[str, Any]:
        out = {
            "a": self.a,
            "b": self.b,
            "a_run": self.a_run,
            "b_run": self.b_run,
            "metric": self.metric,
            "n": self.n,
            "a_score": self.a_score.to_dict(),
            "b_score": self.b_score.to_dict(),
            "diff": self.diff.to_dict(),
            "p_value": self.p_value,
            "verdict": self.verdict,
            "run_metrics": {k: list(v) for k, v in self.run_metrics.items()},
        }
        if self.mcnemar is not None:
            out["mcnemar"] = {
                "only_a": self.mcnemar.only_a,
                "only_b": self.mcnemar.only_b,
                "p_value": self.mcnemar.p_value,
            }
        return out


def compare_prompts(
    store: Store,
    project: str,
    a: str,
    b: str,
    *,
    dataset: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """B against A on the items both evaluations share: the paired bootstrap interval of the
    mean score difference (and McNemar's exact test for labels), and a verdict."""
    with store.transaction() as session:
        project_id = get_project(session, project).id
        run_a = find_evaluation(session, project_id, a, dataset)
        run_b = find_evaluation(session, project_id, b, dataset)
    return compare_runs(store, run_a.id, run_b.id, resamples=resamples, seed=seed)


def find_model_evaluation(
    session: Session, project_id: int, model: str, dataset: str, split: str
) -> Run:
    """The latest finished chat-format evaluation of ``model`` on ``dataset``'s ``split``, or
    the evaluation run ``run:N`` (an annotator's evaluation with its prompt, for instance)."""
    if model.startswith("run:"):
        run = find_evaluation(session, project_id, model, dataset)
        if not _same_dataset(run.config.get("dataset", ""), dataset):
            raise UserError(f"{model} evaluated {run.config.get('dataset')}, not {dataset}")
        if run.config.get("splits") != [split]:
            splits = ", ".join(run.config.get("splits") or []) or "a sample"
            raise UserError(f"{model} evaluated {splits}, not the {split} split")
        return run
    for run in finished_evaluations(session, project_id):
        c = run.config
        if (
            c.get("prompt") is None
            and c.get("model") == model
            and c.get("splits") == [split]
            and _same_dataset(c.get("dataset", ""), dataset)
        ):
            return run
    raise UserError(
        f"model {model} has no finished evaluation on {dataset} ({split}); run "
        f"`tuneloop eval --model {model} --dataset {dataset} --split {split}` first"
    )


def compare_runs(
    store: Store, a_run: int, b_run: int, *, resamples: int = 1000, seed: int = 0
) -> Comparison:
    """Evaluation run B against run A on the items they share."""
    with store.transaction() as session:
        run_a, run_b = session.get(Run, a_run), session.get(Run, b_run)
        assert run_a is not None and run_b is not None
        a, b = run_label(run_a), run_label(run_b)
        if run_a.config.get("dataset") != run_b.config.get("dataset"):
            raise UserError(
                f"{a} was evaluated on {run_a.config.get('dataset')} and {b} on "
                f"{run_b.config.get('dataset')}: compare evaluations of the same dataset "
                "(pass --dataset)"
            )
        if run_a.stats.get("primary") != run_b.stats.get("primary"):
            raise UserError(
                f"the evaluations measure different things ({run_a.stats.get('primary')} vs "
                f"{run_b.stats.get('primary')}): evaluate both with the same judge, or neither"
            )
        sa = _item_scores(session, run_a.id)
        sb = _item_scores(session, run_b.id)
        names = (run_label(run_a), run_label(run_b))
        ids = (run_a.id, run_b.id)
        primary = str(run_a.stats.get("primary"))
        metrics = {k: (run_metric(run_a, k), run_metric(run_b, k)) for k in METRICS}
    common = sorted(set(sa) & set(sb))
    if not common:
        raise UserError(f"evaluations {ids[0]} and {ids[1]} share no items")
    xa = [sa[i] for i in common]
    xb = [sb[i] for i in common]
    paired = paired_difference(xa, xb, resamples=resamples, seed=seed)
    test = None
    if primary == "accuracy":
        test = mcnemar([x == 1.0 for x in xa], [x == 1.0 for x in xb])
    if paired.diff.low > 0:
        verdict = f"{names[1]} is better than {names[0]}"
    elif paired.diff.high < 0:
        verdict = f"{names[0]} is better than {names[1]}"
    else:
        verdict = "no significant difference at 95%"
    return Comparison(
        names[0],
        names[1],
        ids[0],
        ids[1],
        primary,
        len(common),
        mean_interval(xa, resamples=resamples, seed=seed),
        mean_interval(xb, resamples=resamples, seed=seed),
        paired.diff,
        paired.p_value,
        test,
        verdict,
        {k: v for k, v in metrics.items() if v != (None, None)},
    )


def _item_scores(session: Session, run_id: int) -> dict[int, float]:
    rows = session.execute(
        select(EvalItem.record_id, EvalItem.score).where(EvalItem.run_id == run_id)
    ).all()
    return {rid: float(score) for rid, score in rows if score is not None}


def run_metric(run: Run, name: str) -> float | None:
    """A headline number of an evaluation run: accuracy, macro/micro F1, judge mean, ROUGE..."""
    stats = run.stats
    metrics = stats.get("metrics") or {}
    if name == "judge":
        mean = (stats.get("judge") or {}).get("mean")
        return None if mean is None else float(mean["value"])
    if name in ("macro_f1", "micro_f1"):
        avg = metrics.get(name.split("_")[0]) or {}
        value = avg.get("f1")
    else:
        value = metrics.get(name)
    if isinstance(value, dict):
        value = value.get("value")
    return None if value is None else float(value)


@dataclass
class Best:
    prompt: PromptVersion
    run_id: int
    metric: str
    value: float
    ranking: list[tuple[str, int, float]]  # (prompt ref, run id, value), best first


def best_prompt(
    session: Session,
    project_id: int,
    *,
    name: str | None = None,
    dataset: str | None = None,
    metric: str | None = None,
) -> Best:
    """The prompt version whose latest finished evaluation scores highest on ``metric``
    (default: accuracy for labels, the judge's mean, else ROUGE-L), among versions of ``name``
    (or all annotator prompts) evaluated on ``dataset`` (or any)."""
    if metric is not None and metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    runs = finished_evaluations(session, project_id)
    latest: dict[int, Run] = {}
    for run in runs:
        pid = run.config.get("prompt_version_id")
        if pid is None or pid in latest:
            continue
        if dataset is not None and not _same_dataset(run.config.get("dataset", ""), dataset):
            continue
        if name is not None and run.config.get("prompt", "").partition("@")[0] != name:
            continue
        latest[pid] = run
    ranking: list[tuple[str, int, float]] = []
    chosen_metric = metric
    for run in latest.values():
        m = chosen_metric or str(run.stats.get("primary", "accuracy"))
        chosen_metric = chosen_metric or m
        value = run_metric(run, m)
        if value is not None:
            ranking.append((run.config["prompt"], run.id, value))
    if not ranking:
        scope = f"prompt {name}" if name else "any prompt"
        where = f" on {dataset}" if dataset else ""
        raise UserError(
            f"no finished evaluation of {scope}{where}; run `tuneloop prompt evaluate` first"
        )
    ranking.sort(key=lambda r: (-r[2], r[1]))
    ref, run_id, value = ranking[0]
    pname, _, version = ref.partition("@")
    prompt = session.scalar(
        select(PromptVersion).where(
            PromptVersion.project_id == project_id,
            PromptVersion.name == pname,
            PromptVersion.version == int(version),
        )
    )
    if prompt is None:
        raise UserError(f"prompt {ref} of evaluation {run_id} no longer exists")
    return Best(prompt, run_id, chosen_metric or "accuracy", value, ranking)
