"""From a run's plain numbers (the views the report workflow reads from the store) to report
sections: paragraphs, tables with 95% intervals, and plots. Pure: no store, no I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuneloop.report import plots
from tuneloop.report.page import Paragraph, Plot, Section, Table
from tuneloop.report.plots import BarPanel, Confusion, Estimate, LinePanel

MAX_SLICES = 20
OPTIONS = (  # training options the lineage table shows
    "epochs",
    "max_steps",
    "batch_size",
    "grad_accum",
    "learning_rate",
    "lr_scheduler",
    "lora_r",
    "lora_alpha",
    "max_length",
    "seed",
)
TEXT_METRICS = (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"))
CORPUS_METRICS = (("bleu", "BLEU"), ("chrf", "chrF"))


@dataclass
class EvalView:
    """One finished evaluation run."""

    run_id: int
    label: str  # the prompt version, or "MODEL (chat format)"
    model: str
    dataset: str
    splits: list[str]
    started: str
    config: dict[str, Any]
    stats: dict[str, Any]
    slices: list[dict[str, Any]] = field(default_factory=list)  # Slice.to_dict(), worst first

    @property
    def closed(self) -> bool:
        return "accuracy" in (self.stats.get("metrics") or {})

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.stats.get("metrics") or {})


@dataclass
class TrainView:
    """One training run, finished or not, with its logged steps and its model."""

    run_id: int
    status: str
    error: str | None
    started: str
    config: dict[str, Any]
    stats: dict[str, Any]
    steps: list[dict[str, Any]]  # step, epoch, loss, learning_rate, grad_norm, tokens_per_second
    model: dict[str, Any] | None = None  # the registered model: name, family, path, parent


# --- formatting ---------------------------------------------------------------------------------


def iv(data: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``0.812 [0.770, 0.851]``; ``n/a`` where undefined."""
    est = Estimate.of(data)
    if est.value is None:
        return "n/a"
    if est.low is None or est.high is None:
        return f"{est.value:.{digits}f}"
    return f"{est.value:.{digits}f} [{est.low:.{digits}f}, {est.high:.{digits}f}]"


def seconds(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return (
        f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
    )


def number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{float(value):.{digits}g}"


def usd(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


# --- evaluations --------------------------------------------------------------------------------


def metric_rows(view: EvalView) -> list[list[str]]:
    """The headline numbers of an evaluation, each with its interval."""
    m = view.metrics
    if view.closed:
        rows = [["accuracy", iv(m.get("accuracy"))]]
        for avg in ("macro", "micro"):
            for name in ("precision", "recall", "f1"):
                title = "F1" if name == "f1" else name
                rows.append([f"{avg} {title}", iv((m.get(avg) or {}).get(name))])
    else:
        rows = [[title, iv(m.get(key))] for key, title in TEXT_METRICS + CORPUS_METRICS]
    judge = view.stats.get("judge")
    if judge:
        rows.append([f"judge mean (0..4, {judge.get('model')})", iv(judge.get("mean"), 2)])
    return rows


def confusion_of(view: EvalView, name: str | None = None) -> Confusion:
    m = view.metrics
    return Confusion(name or view.label, m["labels"], m["columns"], m["confusion"])


def per_class_table(view: EvalView) -> Table:
    rows = [
        [label, iv(s["precision"]), iv(s["recall"]), iv(s["f1"]), number(s["support"])]
        for label, s in (view.metrics.get("per_class") or {}).items()
    ]
    return Table(["class", "precision", "recall", "F1", "gold items"], rows, "Per class")


def slice_name(s: Mapping[str, Any]) -> str:
    dimension = str(s["dimension"]).removeprefix("meta.")
    return f"{dimension} = {s['value']} (n={s['n']})"


def slice_plot(
    views: Sequence[EvalView], *, key: str, names: Sequence[str] | None = None
) -> Plot | None:
    """The mean item score of each slice, worst first (of the first view), one bar per view."""
    first = views[0]
    if not first.slices:
        return None
    chosen = first.slices[:MAX_SLICES]
    keys = [(s["dimension"], s["value"]) for s in chosen]
    series = {}
    for view, name in zip(views, names or [v.label for v in views], strict=True):
        found = {(s["dimension"], s["value"]): s for s in view.slices}
        series[name] = [Estimate.of((found.get(k) or {}).get("score")) for k in keys]
    primary = str(first.stats.get("primary", "score"))
    what = {"accuracy": "accuracy", "judge": "judge rating (0..4)"}.get(primary, primary)
    title = f"Where the {'labels' if first.closed else 'answers'} are bad: {what} per slice"
    svg = plots.interval_bars(
        [slice_name(s) for s in chosen],
        series,
        title=title,
        xlabel=f"{what} (95% interval)",
        key=key,
        xlim=(0.0, 4.0) if primary == "judge" else (0.0, 1.0),
    )
    more = len(first.slices) - len(chosen)
    caption = "Slices by gold label, input length, annotator confidence and metadata fields."
    if more > 0:
        caption += f" The {more} better slices are left out."
    return Plot(key, title, svg, caption)


def evaluation_sections(view: EvalView) -> list[Section]:
    m = view.metrics
    review = view.stats.get("needs_review", 0)
    summary = Section("metrics", "Metrics").add(
        Paragraph(
            f"{view.label} answered {view.stats.get('n', m.get('n'))} records of {view.dataset} "
            f"({', '.join(view.splits)}); {review} answers fell outside the label set or were "
            "empty (counted as wrong)."
            if view.closed
            else f"{view.label} answered {view.stats.get('n', m.get('n'))} records of "
            f"{view.dataset} ({', '.join(view.splits)}).",
        ),
        Table(["metric", "value [95% interval]"], metric_rows(view)),
    )
    if view.closed:
        title = f"Confusion matrix: {view.label}"
        svg = plots.confusion_matrices([confusion_of(view)], title=title, key="confusion")
        summary.add(Plot("confusion", title, svg), per_class_table(view))
    else:
        summary.add(text_metric_plot(view), judge_plot(view))
    sections = [summary]
    plot = slice_plot([view], key="slices")
    if plot is not None:
        rows = [[slice_name(s), iv(s["score"])] for s in view.slices]
        sections.append(
            Section("slices", "Slices").add(plot, Table(["slice", "mean score [95%]"], rows))
        )
    return sections


def text_metric_plot(view: EvalView) -> Plot:
    m = view.metrics
    names = [title for _, title in TEXT_METRICS] + [f"{t} / 100" for _, t in CORPUS_METRICS]
    values = [Estimate.of(m.get(k)) for k, _ in TEXT_METRICS]
    for key, _ in CORPUS_METRICS:
        est = Estimate.of(m.get(key))
        values.append(
            Estimate(*(None if x is None else x / 100 for x in (est.value, est.low, est.high)))
        )
    title = f"Overlap with the references: {view.label}"
    svg = plots.interval_bars(
        names, {view.label: values}, title=title, xlabel="score (95% interval)", key="text-metrics"
    )
    return Plot("text-metrics", title, svg, "BLEU and chrF are shown divided by 100.")


def judge_plot(view: EvalView) -> Plot | None:
    judge = view.stats.get("judge")
    if not judge:
        return None
    counts: dict[str, float | None] = {
        f"{i} {level}": float(judge["counts"].get(level, 0))
        for i, level in enumerate(judge.get("levels") or [])
    }
    counts["needs review"] = float(judge.get("needs_review", 0))
    title = f"Judge ratings by {judge.get('model')} ({judge.get('prompt')})"
    panel = BarPanel("answers per level", "answers", counts, "{:.0f}")
    svg = plots.bar_panels([panel], title=title, key="judge-levels")
    return Plot("judge-levels", title, svg, f"Mean rating {iv(judge.get('mean'), 2)}.")


# --- training -----------------------------------------------------------------------------------


def train_sections(view: TrainView, *, labels: bool = True) -> list[Section]:
    s = view.stats
    facts = [
        ["status", view.status + (f" ({view.error})" if view.error else "")],
        ["steps", number(s.get("steps", len(view.steps)))],
        ["training examples", number(s.get("examples"))],
        ["train loss (mean over steps)", number(s.get("train_loss"))],
        ["final step loss", number(s.get("final_loss"))],
        ["training time", seconds(s.get("train_seconds"))],
        ["tokens per second", number(s.get("tokens_per_second"), 3)],
        ["precision", str(s.get("precision", "-"))],
    ]
    section = Section("training", "Fine-tuning").add(
        loss_plot(view), speed_plot(view), Table([], facts)
    )
    sections = [section]
    if labels:
        sections.append(Section("labels", "Label sources").add(label_plot(view, {})))
    sections.append(Section("lineage", "Lineage").add(lineage_table(view)))
    return sections


def _steps(view: TrainView, name: str) -> list[float | None]:
    return [None if r.get(name) is None else float(r[name]) for r in view.steps]


def loss_plot(view: TrainView) -> Plot:
    x = [float(r["step"]) for r in view.steps]
    loss = _steps(view, "loss")
    notes = [f"last step: {number(loss[-1])}"] if loss and loss[-1] is not None else []
    title = f"Training loss: {view.config.get('name', f'run {view.run_id}')}"
    panel = LinePanel(
        "loss per optimizer step", "loss (completion tokens)", {"loss": loss}, notes=notes
    )
    svg = plots.lines(x, [panel], title=title, xlabel="step", key="loss-curve")
    return Plot("loss-curve", title, svg, f"{len(x)} steps logged by run {view.run_id}.")


def speed_plot(view: TrainView) -> Plot:
    x = [float(r["step"]) for r in view.steps]
    title = "Learning rate and speed"
    panels = [
        LinePanel("learning rate schedule", "learning rate", {"lr": _steps(view, "learning_rate")}),
        LinePanel(
            "throughput", "tokens per second", {"tokens/s": _steps(view, "tokens_per_second")}
        ),
    ]
    svg = plots.lines(x, panels, title=title, xlabel="step", key="training-speed")
    return Plot("training-speed", title, svg)


def label_plot(
    view: TrainView | None, applied: Mapping[str, int], *, key: str = "label-sources"
) -> Plot | None:
    """Training examples per label source (and records without a usable label), LLM labels
    per prompt version, and the labels the annotator applied per value."""
    panels = []
    if view is not None:
        ls = view.config.get("label_sources") or {}
        counts: dict[str, float | None] = {k: float(v) for k, v in (ls.get("counts") or {}).items()}
        counts["no usable label"] = float(ls.get("unlabelled", 0))
        panels.append(
            BarPanel(
                f"training examples by source ({ls.get('source')})", "records", counts, "{:.0f}"
            )
        )
        versions = ls.get("prompt_versions") or {}
        if versions:
            panels.append(
                BarPanel(
                    "LLM labels by prompt version",
                    "examples",
                    {k: float(v) for k, v in versions.items()},
                    "{:.0f}",
                )
            )
    if applied:
        panels.append(
            BarPanel(
                "labels the annotator applied",
                "records",
                {k: float(v) for k, v in applied.items()},
                "{:.0f}",
            )
        )
    if not panels:
        return None
    title = "Label sources"
    return Plot(key, title, plots.bar_panels(panels, title=title, key=key))


def lineage_table(view: TrainView) -> Table:
    c, options = view.config, view.config.get("options") or {}
    base = c.get("base") or {}
    ls = c.get("label_sources") or {}
    model = view.model or {}
    rows = [
        ["model", str(c.get("name", "-"))],
        ["saved at", str(model.get("path") or c.get("model_dir", "-"))],
        ["base", f"{base.get('ref')} ({base.get('kind')}, family {base.get('family')})"],
        ["weights loaded from", str(base.get("source", "-"))],
        ["parent model", str(model.get("parent") or "-")],
        ["dataset", f"{c.get('dataset')} (splits {', '.join(c.get('splits') or [])})"],
        ["labels", f"{ls.get('source')} (min confidence {ls.get('min_confidence')})"],
        [
            "prompt versions",
            ", ".join(f"{k}: {v}" for k, v in (ls.get("prompt_versions") or {}).items()) or "-",
        ],
        ["method", "LoRA" if options.get("lora", True) else "full fine-tune"],
    ]
    for key in OPTIONS:
        if options.get(key) is not None:
            rows.append([key.replace("_", " "), str(options[key])])
    return Table([], rows, f"Training run {view.run_id}")
