"""The demo's report sections: time and cost per stage, the prompt protocol, the labels, the
fine-tuning and the gold-slice comparison of base, annotator and student. Pure: no store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuneloop.report import plots
from tuneloop.report.page import Paragraph, Plot, Section, Table
from tuneloop.report.plots import BarPanel, Estimate
from tuneloop.report.sections import (
    EvalView,
    TrainView,
    confusion_of,
    iv,
    label_plot,
    number,
    seconds,
    slice_plot,
    train_sections,
    usd,
)


@dataclass
class DemoView:
    """A demo run: its stages and the runs they produced."""

    run_id: int
    status: str
    error: str | None
    config: dict[str, Any]
    stats: dict[str, Any]
    prompts: dict[str, EvalView] = field(default_factory=dict)  # prompt ref -> evaluation
    prompt_comparison: dict[str, Any] | None = None  # Comparison.to_dict(), v2 against v1
    applied: dict[str, int] = field(default_factory=dict)  # applied label value -> count
    train: TrainView | None = None
    gold: dict[str, EvalView] = field(default_factory=dict)  # role -> evaluation on gold
    gold_comparisons: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        return dict(self.stats.get("stages") or {})


def stage_section(view: DemoView) -> Section:
    stages = view.stages
    names = [f"{k} (reused)" if st.get("reused") else k for k, st in stages.items()]
    llm = [st.get("llm") or {} for st in stages.values()]
    new = [st.get("new_llm") or {} for st in stages.values()]
    panels = [
        BarPanel(
            "time in this run",
            "seconds",
            dict(
                zip(names, [float(st.get("seconds", 0.0)) for st in stages.values()], strict=True)
            ),
            "{:.1f} s",
        ),
        BarPanel(
            "LLM calls behind the results",
            "calls",
            dict(zip(names, [float(u.get("calls", 0)) for u in llm], strict=True)),
            "{:.0f}",
        ),
        BarPanel(
            "LLM cost behind the results",
            "US dollars",
            dict(zip(names, [float(u.get("cost_usd", 0.0)) for u in llm], strict=True)),
            "${:.4f}",
        ),
    ]
    title = "Time and cost per stage"
    plot = Plot(
        "stages",
        title,
        plots.bar_panels(panels, title=title, key="stages"),
        "Calls and cost count every LLM call logged under the stage's runs, also those made by "
        "an earlier run whose results this one reused. Local models cost nothing unless "
        "tuneloop.yaml sets a price.",
    )
    rows = []
    for name, st, u, n in zip(names, stages.values(), llm, new, strict=True):
        runs = ", ".join(f"{k} {v}" for k, v in (st.get("runs") or {}).items() if v is not None)
        rows.append(
            [
                name,
                seconds(st.get("seconds")),
                number(u.get("calls", 0)),
                number(n.get("calls", 0)),
                f"{number(u.get('tokens_in', 0))} / {number(u.get('tokens_out', 0))}",
                seconds(u.get("llm_seconds")),
                usd(u.get("cost_usd")),
                runs or "-",
            ]
        )
    total = sum(float(st.get("seconds", 0.0)) for st in stages.values())
    columns = [
        "stage",
        "time",
        "LLM calls",
        "made in this run",
        "tokens in / out",
        "model time",
        "cost",
        "runs",
    ]
    return Section("stages", "Stages: time and cost").add(
        Paragraph(
            f"{len(stages)} stages in {seconds(view.stats.get('seconds', total))}; "
            f"{sum(int(u.get('calls', 0)) for u in llm)} LLM calls behind the results, "
            f"{sum(int(u.get('calls', 0)) for u in new)} of them made by this run."
        ),
        plot,
        Table(columns, rows),
    )


def _headline(views: Mapping[str, EvalView]) -> Table:
    rows = [
        [
            name,
            view.model,
            str(view.config.get("prompt") or "chat format"),
            str(view.run_id),
            number(view.stats.get("n")),
            iv(view.metrics.get("accuracy")),
            iv((view.metrics.get("macro") or {}).get("f1")),
            number(view.stats.get("needs_review", 0)),
        ]
        for name, view in views.items()
    ]
    columns = ["", "model", "prompt", "run", "items", "accuracy", "macro F1", "outside labels"]
    return Table(columns, rows)


def _comparison_plot(
    views: Mapping[str, EvalView],
    diffs: Sequence[tuple[str, dict[str, Any]]],
    *,
    title: str,
    key: str,
) -> Plot:
    series = {
        name: [
            Estimate.of(view.metrics.get("accuracy")),
            Estimate.of((view.metrics.get("macro") or {}).get("f1")),
        ]
        for name, view in views.items()
    }
    svg = plots.comparison(
        ["accuracy", "macro F1"],
        series,
        [(name, Estimate.of(c.get("diff"))) for name, c in diffs],
        title=title,
        ylabel="score",
        diff_label="accuracy difference",
        key=key,
    )
    return Plot(key, title, svg, "Differences are paired: the same items, resampled together.")


def _verdicts(diffs: Sequence[tuple[str, dict[str, Any]]]) -> Table:
    rows = []
    for name, c in diffs:
        test = c.get("mcnemar") or {}
        rows.append(
            [
                name,
                number(c.get("n")),
                iv(c.get("diff")),
                number(c.get("p_value"), 3),
                number(test.get("p_value"), 3) if test else "-",
                str(c.get("verdict", "")),
            ]
        )
    columns = ["comparison", "items", "accuracy difference [95%]", "p", "McNemar p", "verdict"]
    return Table(columns, rows)


def prompt_section(view: DemoView) -> Section | None:
    if not view.prompts:
        return None
    section = Section("prompts", "Prompt protocol: eyeball, evaluate, compare")
    eye = view.stages.get("eyeball")
    if eye:
        section.add(
            Paragraph(
                f"Eyeball: {eye.get('prompt')} answered {eye.get('records')} seeded records; "
                f"{eye.get('agree')} of them matched the dataset's label."
            )
        )
    views = {v.label: v for v in view.prompts.values()}
    section.add(_headline(views))
    diffs: list[tuple[str, dict[str, Any]]] = []
    if view.prompt_comparison:
        c = view.prompt_comparison
        diffs = [(f"{c['b']} - {c['a']}", c)]
        best = (view.stages.get("compare") or {}).get("best")
        section.add(
            _comparison_plot(
                views, diffs, title="Prompt versions on the same items", key="prompt-comparison"
            ),
            Paragraph(f"{c.get('verdict')}; applied: {best}." if best else str(c.get("verdict"))),
            _verdicts(diffs),
        )
    closed = [v for v in view.prompts.values() if v.closed]
    if closed:
        title = "Confusion matrices of the prompt versions"
        svg = plots.confusion_matrices(
            [confusion_of(v) for v in closed], title=title, key="confusion-prompts"
        )
        section.add(Plot("confusion-prompts", title, svg))
    section.add(slice_plot(list(view.prompts.values()), key="slices-prompts"))
    return section


def labels_section(view: DemoView) -> Section | None:
    apply = view.stages.get("apply")
    plot = label_plot(view.train, view.applied)
    if plot is None:
        return None
    section = Section("labels", "Labels: applying the best prompt")
    if apply:
        total = sum(view.applied.values())
        section.add(
            Paragraph(
                f"{apply.get('prompt')} labelled {total} training records (annotate run "
                f"{(apply.get('runs') or {}).get('annotation')}); the student learns from the "
                "accepted LLM labels of the training split."
            )
        )
    return section.add(plot)


def gold_section(view: DemoView) -> Section | None:
    if not view.gold:
        return None
    models = (view.stages.get("gold") or {}).get("models") or {}
    title = "Base vs annotator vs student on the locked gold slice"
    who = "; ".join(f"{role}: {models.get(role, v.model)}" for role, v in view.gold.items())
    section = Section("gold", "Gold slice: base, annotator and student").add(
        Paragraph(
            "Every model answers every record of the gold slice, which no prompt revision and no "
            f"training run ever saw ({who})."
        ),
        _comparison_plot(view.gold, view.gold_comparisons, title=title, key="gold-comparison"),
        _headline(view.gold),
        _verdicts(view.gold_comparisons),
    )
    closed = {role: v for role, v in view.gold.items() if v.closed}
    if closed:
        title = "Confusion matrices on the gold slice"
        panels = [confusion_of(v, role) for role, v in closed.items()]
        svg = plots.confusion_matrices(panels, title=title, key="confusion-gold")
        section.add(Plot("confusion-gold", title, svg))
    return section


def demo_sections(view: DemoView) -> list[Section]:
    sections = [stage_section(view)]
    for section in (prompt_section(view), labels_section(view)):
        if section is not None:
            sections.append(section)
    if view.train is not None:
        sections += train_sections(view.train, labels=False)
    gold = gold_section(view)
    if gold is not None:
        sections.append(gold)
    return sections
