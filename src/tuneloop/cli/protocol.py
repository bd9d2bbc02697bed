"""The prompt protocol's commands: ``tuneloop prompt eyeball|evaluate|slices|compare|best|evals``
and ``tuneloop judge calibrate``. Thin: options -> workflow -> tables (or ``--json``)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tuneloop.cli.main import console, state
from tuneloop.errors import UserError

if TYPE_CHECKING:
    from tuneloop.workflows.evaluate import ModelRef

judge_app = typer.Typer(help="Check the LLM judge against people's ratings.", no_args_is_help=True)

DatasetOpt = Annotated[str, typer.Option(help="Dataset NAME or NAME@VERSION.")]
ModelOpt = Annotated[
    str, typer.Option(help="Annotator model (tuneloop models list), openai:MODEL, or fake.")
]
SplitOpt = Annotated[
    list[str] | None,
    typer.Option("--split", help="Splits to sample from (repeatable; default all but gold)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ResamplesOpt = Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")]


@contextmanager
def open_models(*names: str | None, use_cache: bool = True) -> Iterator[list[ModelRef | None]]:
    """Open each named model (None stays None) as a ModelRef; close them all afterwards."""
    from tuneloop.llm.engine import Engine
    from tuneloop.llm.factory import open_model
    from tuneloop.workflows.evaluate import ModelRef

    store = state.store()
    refs: list[ModelRef | None] = []
    with ExitStack() as stack:
        for name in names:
            if name is None:
                refs.append(None)
                continue
            handle = open_model(name, state.project_dir, store=store)
            stack.callback(handle.close)

            def make(run_id: int | None, h: Any = handle) -> Engine:
                return Engine(
                    store,
                    h.provider,
                    family=h.family,
                    price=h.price,
                    use_cache=use_cache,
                    run_id=run_id,
                )

            refs.append(ModelRef(name, handle.family, make))
        yield refs


@contextmanager
def stage_bars() -> Iterator[Callable[[Any], None]]:
    """One progress bar per stage (annotate, judge) with rate and ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(show_speed=True),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )
    tasks: dict[str, Any] = {}

    def update(p: Any) -> None:
        if p.stage not in tasks:
            tasks[p.stage] = progress.add_task(p.stage, total=p.total)
        progress.update(tasks[p.stage], completed=p.done, total=p.total)

    with progress:
        yield update


def _author() -> str:
    import getpass

    return os.environ.get("TUNELOOP_USER") or getpass.getuser()


def eyeball(
    prompt: Annotated[str, typer.Option(help="Prompt version NAME or NAME@VERSION.")],
    dataset: DatasetOpt,
    model: ModelOpt,
    n: Annotated[int, typer.Option("-n", help="How many records (1-19).")] = 15,
    seed: Annotated[int, typer.Option(help="Sampling seed (same seed, same records).")] = 0,
    split: SplitOpt = None,
    verdicts: Annotated[
        Path | None,
        typer.Option(help="Read verdicts from a CSV/JSONL file (record_id, verdict, note)."),
    ] = None,
    no_review: Annotated[
        bool, typer.Option("--no-review", help="Only show the answers; ask for no verdicts.")
    ] = False,
) -> None:
    """Run the annotator on a few seeded records, show input and output side by side, and
    mark each answer good or bad with a note (kept with the prompt version)."""
    from tuneloop.workflows.eyeball import EyeballOptions, Verdict, save_verdicts
    from tuneloop.workflows.eyeball import eyeball as run

    store = state.store()
    opts = EyeballOptions(prompt, dataset, n, seed, split, project=state.project_name)
    with open_models(model) as (annotator,):
        assert annotator is not None
        sample = run(store, opts, annotator)
    given = _read_verdicts(verdicts) if verdicts else {}
    collected: list[Verdict] = []
    for i, item in enumerate(sample.items, 1):
        table = Table(
            title=f"{i}/{len(sample.items)}  record {item.record_id}", show_lines=True, expand=True
        )
        table.add_column("input", ratio=3)
        table.add_column(f"output of {sample.prompt}", ratio=2)
        inputs = "\n\n".join(f"[bold]{k}[/]: {escape(_short(v))}" for k, v in item.inputs.items())
        out = (
            escape(str(item.output))
            if item.output is not None
            else (
                f"[red]no answer in the label set[/] (raw: {escape(str(item.raw_output))!s:.200})"
            )
        )
        if item.reference is not None:
            out += f"\n\n[dim]reference: {escape(_short(item.reference))}[/]"
        if item.verdict:
            out += f"\n\n[dim]earlier verdict: {item.verdict} {escape(item.note or '')}[/]"
        table.add_row(inputs, out)
        console.print(table)
        if no_review:
            continue
        if verdicts:
            if item.record_id in given:
                v, note = given[item.record_id]
                collected.append(Verdict(item.record_id, v, note, item.label_id, item.output))
            continue
        answer = _ask("verdict: [g]ood, [b]ad, [s]kip, [q]uit > ")
        if answer is None or answer.startswith("q"):
            break
        if answer.startswith("s") or not answer:
            continue
        if answer[0] not in "gb":
            console.print("answer g, b, s or q; skipped")
            continue
        note = _ask("note (enter for none) > ") or None
        verdict = "good" if answer.startswith("g") else "bad"
        collected.append(Verdict(item.record_id, verdict, note, item.label_id, item.output))
    if no_review:
        return
    unknown = set(given) - {it.record_id for it in sample.items}
    if unknown:
        raise UserError(
            f"{verdicts}: record(s) {', '.join(map(str, sorted(unknown)))} are not in this "
            "eyeball sample"
        )
    counts = save_verdicts(store, state.project_name, sample.prompt, collected, author=_author())
    console.print(
        f"saved {len(collected)} verdicts for {sample.prompt}: "
        f"{counts['good']} good, {counts['bad']} bad in all"
    )


def _ask(question: str) -> str | None:
    try:
        return console.input(question).strip().lower()
    except EOFError:
        return None


def _short(value: Any, limit: int = 1200) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= limit else text[:limit] + " ..."


def _read_verdicts(path: Path) -> dict[int, tuple[str, str | None]]:
    """record_id -> (verdict, note) from CSV/TSV (header: record_id,verdict,note) or JSONL."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    rows: list[tuple[str, dict[str, Any]]] = []
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{n}: not valid JSON: {exc.msg}") from None
    else:
        delimiter = "\t" if path.suffix == ".tsv" else ","
        reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
        rows = [(f"{path}:{n}", dict(r)) for n, r in enumerate(reader, 2)]
    out: dict[int, tuple[str, str | None]] = {}
    for where, row in rows:
        try:
            rid = int(row["record_id"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{where}: field record_id: expected a record id") from None
        verdict = str(row.get("verdict") or "").strip().lower()
        if verdict not in ("good", "bad"):
            raise UserError(f"{where}: field verdict: expected good or bad, got {verdict!r}")
        out[rid] = (verdict, (str(row.get("note") or "").strip() or None))
    return out


def evaluate(
    prompt: Annotated[str, typer.Option(help="Prompt version NAME or NAME@VERSION.")],
    dataset: DatasetOpt,
    model: ModelOpt,
    n: Annotated[int, typer.Option("-n", help="Sample size (the same items every time).")] = 500,
    seed: Annotated[int, typer.Option(help="Sampling and bootstrap seed.")] = 0,
    split: SplitOpt = None,
    judge: Annotated[
        str | None,
        typer.Option(help="Judge model for generative tasks (another family than the model)."),
    ] = None,
    judge_prompt: Annotated[
        str | None, typer.Option(help="Judge prompt NAME[@VERSION] (default: the shipped one).")
    ] = None,
    judge_mode: Annotated[
        str, typer.Option(help="rationale (reasoning, then a rating) or score (levels scored).")
    ] = "rationale",
    allow_same_family: Annotated[
        bool,
        typer.Option(
            "--allow-same-family", help="Let a judge of the annotator's family rate (recorded)."
        ),
    ] = False,
    resamples: ResamplesOpt = 1000,
    max_tokens: Annotated[int, typer.Option(help="Longest generated answer.")] = 256,
    force: Annotated[
        bool, typer.Option("--force", help="Evaluate again even if done with these options.")
    ] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Bypass the call cache.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a prompt version on a seeded sample: accuracy and per-class P/R/F1 against the
    reference labels, or ROUGE/BLEU/chrF plus a five-level judge for generative tasks; every
    number with a bootstrap 95% interval. Stored as a run."""
    from tuneloop.workflows.evaluate import EvaluateOptions
    from tuneloop.workflows.evaluate import evaluate as run

    store = state.store()
    opts = EvaluateOptions(
        prompt=prompt,
        dataset=dataset,
        n=n,
        seed=seed,
        splits=split or [],
        judge_prompt=judge_prompt,
        judge_mode=judge_mode,
        allow_same_family=allow_same_family,
        resamples=resamples,
        max_tokens=max_tokens,
        force=force,
        project=state.project_name,
    )
    with open_models(model, judge, use_cache=not no_cache) as (annotator, judge_ref):
        assert annotator is not None
        if as_json:
            result = run(store, opts, annotator, judge_ref)
        else:
            with stage_bars() as bar:
                result = run(store, opts, annotator, judge_ref, on_progress=bar)
    if as_json:
        console.print_json(
            json.dumps({"run": result.run_id, "prompt": result.prompt, **result.stats})
        )
        return
    how = "reused" if result.reused else "finished"
    console.print(
        f"evaluation run {result.run_id} ({how}): {result.prompt} by {model} on "
        f"{result.n} of {result.population} records"
    )
    print_metrics(result.stats)


def print_metrics(stats: dict[str, Any]) -> None:
    """The metric tables of an evaluation's stats."""
    metrics = stats.get("metrics") or {}
    if "accuracy" in metrics:
        _print_classification(metrics)
    elif metrics:
        table = Table("metric", "value", "95% interval", title="against the references")
        for name in ("rouge1", "rouge2", "rougeL", "bleu", "chrf"):
            if metrics.get(name) is not None:
                m = metrics[name]
                table.add_row(name, f"{m['value']:.4f}", f"[{m['low']:.4f}, {m['high']:.4f}]")
        console.print(table)
    judge = stats.get("judge")
    if judge:
        console.print(f"judge {judge['model']} ({judge['family']}), prompt {judge['prompt']}")
        table = Table("level", "score", "items")
        for i, level in enumerate(judge["levels"]):
            table.add_row(level, str(i), str(judge["counts"].get(level, 0)))
        console.print(table)
        mean = judge.get("mean")
        if mean:
            console.print(
                f"mean judge score {mean['value']:.3f} [{mean['low']:.3f}, {mean['high']:.3f}] "
                f"on 0..4 over {judge['rated']} rated; {judge['needs_review']} flagged"
            )
    if stats.get("needs_review"):
        console.print(f"{stats['needs_review']} answers were outside the label set (need review)")


def _iv(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "-"
    return f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"


def _print_classification(metrics: dict[str, Any]) -> None:
    console.print(f"accuracy {_iv(metrics['accuracy'])}  (n={metrics['n']})")
    table = Table("class", "precision", "recall", "F1", "support", title="per class (95% CI)")
    for label, c in metrics["per_class"].items():
        table.add_row(label, _iv(c["precision"]), _iv(c["recall"]), _iv(c["f1"]), str(c["support"]))
    for avg in ("macro", "micro"):
        m = metrics[avg]
        table.add_row(f"[bold]{avg}[/]", _iv(m["precision"]), _iv(m["recall"]), _iv(m["f1"]), "")
    console.print(table)
    confusion = Table("gold \\ predicted", *metrics["columns"], title="confusion matrix")
    for label, row in zip(metrics["labels"], metrics["confusion"], strict=True):
        confusion.add_row(label, *map(str, row))
    console.print(confusion)


def slices(
    ref: Annotated[str, typer.Argument(help="Evaluation run id, or prompt NAME[@VERSION].")],
    dataset: Annotated[str | None, typer.Option(help="Only evaluations on this dataset.")] = None,
    by: Annotated[
        list[str] | None,
        typer.Option(help="label, length, confidence or meta.FIELD (repeatable; default all)."),
    ] = None,
    min_count: Annotated[int, typer.Option(help="Leave out slices with fewer items.")] = 5,
    show_examples: Annotated[
        int, typer.Option(help="Print this many failing items of each slice.")
    ] = 0,
    top: Annotated[int, typer.Option(help="Show the worst N slices.")] = 20,
    resamples: ResamplesOpt = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Where are the labels bad? Mean item score per gold label, metadata value, input length
    and annotator confidence, worst first, with 95% intervals."""
    from tuneloop.workflows.compare import slice_analysis

    report = slice_analysis(
        state.store(),
        state.project_name,
        ref,
        dataset=dataset,
        by=by,
        min_count=min_count,
        examples=show_examples,
        resamples=resamples,
    )
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "run": report.run_id,
                    "prompt": report.prompt,
                    "metric": report.primary,
                    "overall": report.overall.to_dict(),
                    "n": report.n,
                    "slices": [s.to_dict() for s in report.slices],
                }
            )
        )
        return
    console.print(
        f"evaluation run {report.run_id} of {report.prompt}: {report.primary} per item "
        f"{report.overall} over {report.n} items"
    )
    table = Table(
        "slice", "value", "n", f"mean {report.primary}", "95% interval", title="worst slices first"
    )
    for s in report.slices[:top]:
        table.add_row(
            s.dimension,
            s.value,
            str(s.n),
            f"{s.score.value:.3f}",
            f"[{s.score.low:.3f}, {s.score.high:.3f}]",
        )
    console.print(table)
    for s in report.slices[:top]:
        failing = report.examples.get((s.dimension, s.value))
        if not failing:
            continue
        console.print(f"\n[bold]{s.dimension} = {escape(s.value)}[/]: failing items")
        for item in failing:
            inputs = " | ".join(
                _short(v, 200) for k, v in item["fields"].items() if k not in ("label", "summary")
            )
            console.print(
                f"  record {item['record_id']}: {escape(inputs)}\n"
                f"    predicted {escape(_short(item['prediction'], 200))}; reference "
                f"{escape(_short(item['reference'], 200))}"
                + (
                    f"\n    judge: {escape(_short(item['judge_rationale'], 300))}"
                    if item.get("judge_rationale")
                    else ""
                )
            )


def compare(
    a: Annotated[str, typer.Argument(help="Prompt NAME@VERSION (or evaluation run id).")],
    b: Annotated[str, typer.Argument(help="Prompt NAME@VERSION (or evaluation run id).")],
    dataset: Annotated[str | None, typer.Option(help="Only evaluations on this dataset.")] = None,
    resamples: ResamplesOpt = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """B against A on the same items: the paired bootstrap interval of the difference (and
    McNemar's exact test for labels), and a verdict."""
    from tuneloop.workflows.compare import compare_prompts

    c = compare_prompts(
        state.store(), state.project_name, a, b, dataset=dataset, resamples=resamples, seed=seed
    )
    if as_json:
        console.print_json(json.dumps(c.to_dict()))
        return
    table = Table("", c.a, c.b, title=f"{c.n} shared items (runs {c.a_run} and {c.b_run})")
    table.add_row(f"mean {c.metric} per item", str(c.a_score), str(c.b_score))
    for name, (va, vb) in c.run_metrics.items():
        table.add_row(name, "-" if va is None else f"{va:.4f}", "-" if vb is None else f"{vb:.4f}")
    console.print(table)
    console.print(f"difference (B - A): {c.diff}  paired bootstrap p = {c.p_value:.4f}")
    if c.mcnemar is not None:
        console.print(
            f"McNemar (exact): only A right {c.mcnemar.only_a}, only B right {c.mcnemar.only_b}, "
            f"p = {c.mcnemar.p_value:.4f}"
        )
    console.print(f"[bold]verdict:[/] {c.verdict}")


def best(
    name: Annotated[str | None, typer.Argument(help="Only versions of this prompt.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only evaluations on this dataset.")] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="accuracy, macro_f1, micro_f1, judge, rouge1/2/L, bleu, chrf "
            "(default: the evaluation's main metric)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The best evaluated prompt version; `tuneloop annotate --prompt best` applies it."""
    from tuneloop.store.db import get_project
    from tuneloop.workflows.compare import best_prompt

    with state.store().transaction() as session:
        project_id = get_project(session, state.project_name).id
        found = best_prompt(session, project_id, name=name, dataset=dataset, metric=metric)
        ref = f"{found.prompt.name}@{found.prompt.version}"
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "prompt": ref,
                    "run": found.run_id,
                    "metric": found.metric,
                    "value": found.value,
                    "ranking": [{"prompt": p, "run": r, "value": v} for p, r, v in found.ranking],
                }
            )
        )
        return
    table = Table("prompt", "evaluation run", found.metric, title="evaluated prompt versions")
    for p, r, v in found.ranking:
        table.add_row(p, str(r), f"{v:.4f}")
    console.print(table)
    console.print(f"best: [bold]{ref}[/] ({found.metric} {found.value:.4f}, run {found.run_id})")


def evals(
    name: Annotated[str | None, typer.Argument(help="Only this prompt's versions.")] = None,
) -> None:
    """The history of evaluations and eyeball verdicts per prompt version."""
    from sqlalchemy import select

    from tuneloop.store.db import get_project
    from tuneloop.store.models import PromptVersion, Run
    from tuneloop.workflows.compare import run_label, run_metric
    from tuneloop.workflows.eyeball import verdict_counts

    with state.store().transaction() as session:
        project_id = get_project(session, state.project_name).id
        runs = session.scalars(
            select(Run).where(Run.project_id == project_id, Run.kind == "evaluate").order_by(Run.id)
        ).all()
        table = Table(
            "run",
            "prompt",
            "dataset",
            "model",
            "n",
            "status",
            "main metric",
            "judge",
            "eyeball good/bad",
            title="evaluations",
        )
        for r in runs:
            ref = run_label(r)
            if name and ref.partition("@")[0] != name:
                continue
            version = session.get(PromptVersion, r.config.get("prompt_version_id") or -1)
            counts = verdict_counts(session, version) if version else {"good": 0, "bad": 0}
            primary = r.stats.get("primary")
            value = run_metric(r, str(primary)) if primary else None
            table.add_row(
                str(r.id),
                ref,
                r.config.get("dataset", ""),
                r.config.get("model", ""),
                str(r.stats.get("n", r.config.get("n"))),
                r.status,
                "-" if value is None else f"{primary} {value:.4f}",
                r.config.get("judge") or "-",
                f"{counts['good']}/{counts['bad']}",
            )
    console.print(table)


@judge_app.command("calibrate")
def calibrate(
    dataset: DatasetOpt,
    judge: Annotated[str, typer.Option(help="Judge model.")],
    judge_prompt: Annotated[
        str, typer.Option(help="Judge prompt NAME[@VERSION] whose scale matches the people's.")
    ] = "judge-harm",
    ratings_field: Annotated[
        str, typer.Option(help="Metadata field holding each record's list of human ratings.")
    ] = "ratings",
    scale: Annotated[str, typer.Option(help="The people's scale: 0-1, 0-4 or 1-5.")] = "0-1",
    n: Annotated[int | None, typer.Option("-n", help="Seeded sample size (default all).")] = None,
    min_raters: Annotated[int, typer.Option(help="Only items with this many ratings.")] = 1,
    seed: Annotated[int, typer.Option(help="Sampling and bootstrap seed.")] = 0,
    judge_mode: Annotated[str, typer.Option(help="rationale or score.")] = "rationale",
    resamples: ResamplesOpt = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Rate items people rated, and report the judge's agreement with them next to their
    agreement with each other (Krippendorff's alpha, ordinal; weighted Cohen's kappa)."""
    from tuneloop.workflows.calibrate import CalibrateOptions
    from tuneloop.workflows.calibrate import calibrate as run

    opts = CalibrateOptions(
        dataset=dataset,
        judge_prompt=judge_prompt,
        ratings_field=ratings_field,
        scale=scale,
        min_raters=min_raters,
        n=n,
        seed=seed,
        judge_mode=judge_mode,
        resamples=resamples,
        project=state.project_name,
    )
    store = state.store()
    with open_models(judge) as (ref,):
        assert ref is not None
        if as_json:
            result = run(store, opts, ref)
        else:
            with stage_bars() as bar:
                result = run(store, opts, ref, on_progress=bar)
    s = result.stats
    if as_json:
        console.print_json(json.dumps({"run": result.run_id, **s}))
        return
    console.print(f"calibration run {result.run_id}: {s['n']} items, {s['needs_review']} flagged")
    table = Table("who", "Krippendorff alpha (ordinal)", "items", title="agreement")
    for label, key in (
        ("people with each other", "humans"),
        ("people and the judge", "humans_and_judge"),
        ("judge vs people's median", "judge_vs_median"),
    ):
        table.add_row(label, _iv(s[key]["alpha"]), str(s[key]["n_items"]))
    console.print(table)
    pairs = Table(
        "rater A",
        "rater B",
        "items",
        "weighted kappa",
        "same rating",
        title="pairs (linear-weighted Cohen's kappa)",
    )
    for p in s["humans_and_judge"]["pairs"]:
        kappa = p["kappa"]
        pairs.add_row(
            p["a"],
            p["b"],
            str(p["n"]),
            "-" if kappa is None else f"{kappa:.3f}",
            f"{p['observed']:.2f}",
        )
    console.print(pairs)
    dist = Table("level", "judge", "people", title="how often each level was given")
    for i, level in enumerate(s["levels"]):
        dist.add_row(f"{i} {level}", str(s["judge_counts"][i]), str(s["human_counts"][i]))
    console.print(dist)
