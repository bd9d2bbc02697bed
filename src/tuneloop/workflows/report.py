"""The HTML report of a run: ``tuneloop report RUN``, the demo's last step, and the web app.

Reads top to bottom: find the run (a clear error for an unknown id or a kind with no report)
-> read what its kind needs from the store into plain views (an evaluation: its metrics, items'
slices; a training run: its steps, label sources and lineage; a demo: the runs each stage
produced, and paired comparisons of its evaluations) -> the pure section builders turn the
views into tables and plots -> one self-contained HTML page.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.errors import NotFound, UserError
from tuneloop.report.demo import DemoView, demo_sections
from tuneloop.report.page import Page, render_page
from tuneloop.report.sections import (
    EvalView,
    TrainView,
    evaluation_sections,
    number,
    seconds,
    train_sections,
)
from tuneloop.store.datasets import resolve_dataset
from tuneloop.store.db import Store
from tuneloop.store.models import Label, ModelEntry, Project, Run, TrainStep
from tuneloop.workflows.compare import compare_runs, run_label, slice_analysis

KINDS = ("demo", "evaluate", "train")


def render_report(store: Store, run_id: int, *, project: str | None = None) -> str:
    """The report of run ``run_id`` as one self-contained HTML document. With ``project``,
    a run of another project is not found."""
    return render_page(build_page(store, run_id, project=project))


def write_report(store: Store, run_id: int, path: Path, *, project: str | None = None) -> Path:
    """Write the report to ``path`` (folders made; the file appears whole or not at all)."""
    html = render_report(store, run_id, project=project)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(html, encoding="utf-8")
    partial.replace(path)
    return path


@dataclass(frozen=True)
class Reportable:
    """A run that has a report: what the list of reports shows."""

    run_id: int
    kind: str
    project: str
    dataset: str | None
    status: str
    started_at: datetime
    summary: str


def reportable_runs(store: Store, *, limit: int = 200) -> list[Reportable]:
    """Finished demo, evaluation and training runs of every project, newest first."""
    from tuneloop.store.models import Dataset

    with store.transaction() as session:
        rows = session.execute(
            select(Run, Project.name, Dataset.name, Dataset.version)
            .join(Project, Project.id == Run.project_id)
            .outerjoin(Dataset, Dataset.id == Run.dataset_id)
            .where(Run.kind.in_(KINDS), Run.status == "finished")
            .order_by(Run.id.desc())
            .limit(limit)
        ).all()
        return [
            Reportable(
                run.id,
                run.kind,
                project_name,
                None if name is None else f"{name}@{version}",
                run.status,
                run.started_at,
                _summary(run),
            )
            for run, project_name, name, version in rows
        ]


def _summary(run: Run) -> str:
    """One line about a run for the list of reports."""
    config, stats = run.config or {}, run.stats or {}
    if run.kind == "train":
        loss = stats.get("final_loss")
        tail = "" if loss is None else f", final loss {loss:.4f}"
        return f"model {stats.get('model', config.get('name', '?'))}{tail}"
    if run.kind == "evaluate":
        model = config.get("model")
        accuracy = (stats.get("metrics") or {}).get("accuracy")
        tail = "" if not isinstance(accuracy, dict) else f", accuracy {accuracy['value']:.3f}"
        return f"{config.get('prompt') or 'chat format'} by {model or '?'}{tail}"
    return "quick demo" if config.get("quick") else "demo"


def default_report_path(store: Store, run_id: int, project_dir: Path) -> Path:
    """``PROJECT_DIR/reports/KIND-run-ID.html``."""
    with store.transaction() as session:
        run = session.get(Run, run_id)
        kind = "run" if run is None else run.kind
    return project_dir / "reports" / f"{kind}-run-{run_id}.html"


def build_page(store: Store, run_id: int, *, project: str | None = None) -> Page:
    with store.transaction() as session:
        run = session.get(Run, run_id)
        owner = None if run is None else session.get(Project, run.project_id)
        if run is None or owner is None or (project is not None and owner.name != project):
            where = f" in project {project!r}" if project else ""
            raise NotFound(f"no run {run_id}{where}")
        kind, project_name = run.kind, owner.name
    if kind == "evaluate":
        return _evaluation_page(store, run_id, project_name)
    if kind == "train":
        return _train_page(store, run_id, project_name)
    if kind == "demo":
        return _demo_page(store, run_id, project_name)
    raise UserError(
        f"run {run_id} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} run; a report covers "
        f"{', '.join(KINDS[:-1])} and {KINDS[-1]} runs"
    )


def _date(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _dataset_facts(session: Session, project_name: str, ref: str) -> list[tuple[str, str]]:
    project = session.scalar(select(Project).where(Project.name == project_name))
    assert project is not None
    try:
        dataset = resolve_dataset(session, project, ref)
    except UserError:
        return [("dataset", ref)]
    splits = (dataset.stats or {}).get("splits") or {}
    parts = ", ".join(f"{name} {n:,}" for name, n in splits.items()) if splits else ""
    facts = [
        ("dataset", f"{dataset.ref}: {dataset.task_type}, {dataset.record_count:,} records"),
    ]
    if parts:
        facts.append(("splits", parts))
    if dataset.licence:
        facts.append(("licence", dataset.licence))
    return facts


# --- evaluation ---------------------------------------------------------------------------------


def eval_view(store: Store, run_id: int, project_name: str, *, slices: bool = True) -> EvalView:
    """A finished evaluation run and (``slices``) its slice analysis."""
    with store.transaction() as session:
        run = session.get(Run, run_id)
        if run is None or run.kind != "evaluate":
            raise UserError(f"no evaluation run {run_id}")
        if run.status != "finished":
            raise UserError(
                f"evaluation run {run_id} is {run.status}: nothing to report until it finishes "
                "(run the same evaluation again to resume it)"
            )
        view = EvalView(
            run.id,
            run_label(run),
            str(run.config.get("model")),
            str(run.config.get("dataset")),
            list(run.config.get("splits") or []),
            _date(run.started_at),
            dict(run.config),
            dict(run.stats),
        )
    if slices:
        found = slice_analysis(store, project_name, str(run_id))
        view.slices = [s.to_dict() for s in found.slices]
    return view


def _evaluation_page(store: Store, run_id: int, project_name: str) -> Page:
    view = eval_view(store, run_id, project_name)
    c = view.config
    with store.transaction() as session:
        header = [("project", project_name), *_dataset_facts(session, project_name, view.dataset)]
    header += [
        ("date", view.started),
        ("model", f"{view.model} (family {c.get('family')})"),
        ("prompt", str(c.get("prompt") or "the chat format (no prompt version)")),
        ("records", f"{view.stats.get('n')} of {', '.join(view.splits)} (seed {c.get('seed')})"),
    ]
    if c.get("judge"):
        same = " (same family, allowed)" if c.get("allow_same_family") else ""
        header.append(("judge", f"{c['judge']} (family {c.get('judge_family')}){same}"))
    return Page(
        f"Evaluation run {run_id}: {view.label}",
        f"{view.label} on {view.dataset}, measured against the reference outputs",
        header,
        evaluation_sections(view),
    )


# --- training -----------------------------------------------------------------------------------


def train_view(store: Store, run_id: int) -> TrainView:
    with store.transaction() as session:
        run = session.get(Run, run_id)
        if run is None or run.kind != "train":
            raise UserError(f"no training run {run_id}")
        steps = [
            {
                "step": s.step,
                "epoch": s.epoch,
                "loss": s.loss,
                "learning_rate": s.learning_rate,
                "grad_norm": s.grad_norm,
                "tokens_per_second": s.tokens_per_second,
            }
            for s in session.scalars(
                select(TrainStep).where(TrainStep.run_id == run_id).order_by(TrainStep.step)
            )
        ]
        entry = session.scalar(select(ModelEntry).where(ModelEntry.run_id == run_id))
        model = None
        if entry is not None:
            parent = None if entry.parent_id is None else session.get(ModelEntry, entry.parent_id)
            model = {
                "name": entry.name,
                "family": entry.family,
                "path": entry.path,
                "parent": None if parent is None else parent.name,
            }
        return TrainView(
            run.id,
            run.status,
            run.error,
            _date(run.started_at),
            dict(run.config),
            dict(run.stats),
            steps,
            model,
        )


def _train_page(store: Store, run_id: int, project_name: str) -> Page:
    view = train_view(store, run_id)
    c = view.config
    base = c.get("base") or {}
    with store.transaction() as session:
        header = [
            ("project", project_name),
            *_dataset_facts(session, project_name, str(c.get("dataset"))),
        ]
    header += [
        ("date", view.started),
        ("base model", f"{base.get('ref')} (family {base.get('family')})"),
        ("model", str(c.get("name"))),
        ("labels", str((c.get("label_sources") or {}).get("source"))),
        ("status", view.status),
    ]
    return Page(
        f"Training run {run_id}: {c.get('name')}",
        f"Supervised fine-tuning of {base.get('ref')} on {c.get('dataset')}",
        header,
        train_sections(view),
    )


# --- the demo -----------------------------------------------------------------------------------


def _applied(session: Session, run_id: int | None) -> dict[str, int]:
    """The labels an annotate run wrote: accepted ones per value, the rest per status."""
    if run_id is None:
        return {}
    rows = session.execute(select(Label.value, Label.status).where(Label.run_id == run_id))
    counts = Counter(  # counted here: PostgreSQL cannot group by a JSON column
        str(value) if status == "accepted" else status.replace("_", " ") for value, status in rows
    )
    return dict(sorted(counts.items()))


def _demo_page(store: Store, run_id: int, project_name: str) -> Page:
    with store.transaction() as session:
        run = session.get(Run, run_id)
        assert run is not None
        view = DemoView(run.id, run.status, run.error, dict(run.config), dict(run.stats))
        started = _date(run.started_at)
        stages = view.stages
        apply_run = ((stages.get("apply") or {}).get("runs") or {}).get("annotation")
        view.applied = _applied(session, apply_run)
        dataset = str((stages.get("data") or {}).get("dataset", "-"))
        header = [("project", project_name), *_dataset_facts(session, project_name, dataset)]
    for name in ("evaluate v1", "evaluate v2"):
        found = ((stages.get(name) or {}).get("runs") or {}).get("evaluation")
        if found is not None:
            evaluated = eval_view(store, found, project_name)
            view.prompts[evaluated.label] = evaluated
    if len(view.prompts) == 2:
        a, b = view.prompts.values()
        view.prompt_comparison = compare_runs(store, a.run_id, b.run_id).to_dict()
    train_run = ((stages.get("fine-tune") or {}).get("runs") or {}).get("train")
    if train_run is not None:
        view.train = train_view(store, train_run)
    gold = stages.get("gold") or {}
    for role in ("base", "annotator", "student"):
        found = (gold.get("runs") or {}).get(role)
        if found is not None:
            view.gold[role] = eval_view(store, found, project_name, slices=False)
    pairs = [("student", "annotator"), ("student", "base"), ("base", "annotator")]
    for b_role, a_role in pairs:
        if a_role in view.gold and b_role in view.gold:
            pair = compare_runs(store, view.gold[a_role].run_id, view.gold[b_role].run_id)
            view.gold_comparisons.append((f"{b_role} - {a_role}", pair.to_dict()))
    c = view.config
    models = gold.get("models") or {}
    header += [
        ("date", started),
        ("annotator", str(c.get("annotator"))),
        ("student", f"{models.get('student', '-')} (LoRA on {c.get('student_base')})"),
        ("mode", f"{'quick' if c.get('quick') else 'full'}, seed {c.get('seed')}"),
        ("time", seconds(view.stats.get("seconds"))),
        ("status", view.status + (f": {view.error}" if view.error else "")),
    ]
    calls = sum(int((s.get("llm") or {}).get("calls", 0)) for s in stages.values())
    return Page(
        f"tuneloop demo, run {run_id}",
        f"From unlabeled text to a fine-tuned student: {len(stages)} stages, "
        f"{number(calls)} LLM calls behind the results",
        header,
        demo_sections(view),
    )
