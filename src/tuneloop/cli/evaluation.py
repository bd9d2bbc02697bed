"""``tuneloop eval``: a model (base, annotator or trained student) on a split, through the
task's chat format, and ``tuneloop eval compare`` of several models on the same items."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from tuneloop.cli.main import console, state
from tuneloop.cli.protocol import open_models, print_metrics, stage_bars
from tuneloop.errors import UserError

app = typer.Typer(
    help="Evaluate models on a split (the task's chat format), and compare them on the same "
    "items. `tuneloop eval --model M --dataset D --split test` evaluates one.",
    invoke_without_command=True,
)

Split = Annotated[str, typer.Option(help="Split to evaluate on (test, validation, gold, ...).")]


@app.callback()
def evaluate_model(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Model name, openai:MODEL, or fake.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset NAME or NAME@VERSION.")] = None,
    split: Split = "test",
    n: Annotated[
        int | None, typer.Option("-n", help="A seeded sample of this many (default all).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling and bootstrap seed.")] = 0,
    judge: Annotated[str | None, typer.Option(help="Judge model for generative tasks.")] = None,
    judge_prompt: Annotated[str | None, typer.Option(help="Judge prompt NAME[@VERSION].")] = None,
    allow_same_family: Annotated[
        bool, typer.Option("--allow-same-family", help="Allow a judge of the model's family.")
    ] = False,
    max_tokens: Annotated[int, typer.Option(help="Longest generated answer.")] = 256,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Evaluate a model on a split: labels by constrained label scoring (accuracy, per-class
    P/R/F1 with intervals), generative answers by ROUGE/BLEU/chrF and the judge."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None or dataset is None:
        raise UserError("tuneloop eval needs --model and --dataset (or a subcommand: compare)")
    from tuneloop.workflows.evaluate import EvaluateOptions, evaluate

    store = state.store()
    opts = EvaluateOptions(
        prompt=None,
        dataset=dataset,
        n=n,
        seed=seed,
        splits=[split],
        judge_prompt=judge_prompt,
        allow_same_family=allow_same_family,
        resamples=resamples,
        max_tokens=max_tokens,
        project=state.project_name,
    )
    with open_models(model, judge) as (ref, judge_ref):
        assert ref is not None
        if as_json:
            result = evaluate(store, opts, ref, judge_ref)
        else:
            with stage_bars() as bar:
                result = evaluate(store, opts, ref, judge_ref, on_progress=bar)
    if as_json:
        console.print_json(json.dumps({"run": result.run_id, "model": model, **result.stats}))
        return
    how = "reused" if result.reused else "finished"
    console.print(
        f"evaluation run {result.run_id} ({how}): {model} on {result.n} {split} records "
        f"of {dataset}"
    )
    print_metrics(result.stats)


@app.command("compare")
def compare(
    models: Annotated[
        list[str],
        typer.Argument(
            help="Two or more evaluated models: NAME, or run:N for an evaluation run on the "
            "split (an annotator's evaluation with its prompt, for instance)."
        ),
    ],
    dataset: Annotated[str, typer.Option(help="Dataset NAME or NAME@VERSION.")],
    split: Split = "test",
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Line up evaluated models on the same items: each against the first, with the paired
    bootstrap interval of the difference (and McNemar's test for labels)."""
    from tuneloop.store.db import get_project
    from tuneloop.workflows.compare import compare_runs, find_model_evaluation

    if len(models) < 2:
        raise UserError("eval compare needs two or more models")
    store = state.store()
    with store.transaction() as session:
        project_id = get_project(session, state.project_name).id
        runs = [find_model_evaluation(session, project_id, m, dataset, split).id for m in models]
    results = [compare_runs(store, runs[0], r, resamples=resamples) for r in runs[1:]]
    if as_json:
        console.print_json(json.dumps([c.to_dict() for c in results]))
        return
    first = results[0]
    table = Table("model", f"mean {first.metric}", f"difference vs {models[0]}", "p", "verdict")
    table.add_row(models[0], str(first.a_score), "", "", "")
    for name, c in zip(models[1:], results, strict=True):
        p = c.mcnemar.p_value if c.mcnemar is not None else c.p_value
        table.add_row(name, str(c.b_score), str(c.diff), f"{p:.4f}", c.verdict)
    console.print(table)
