"""``tuneloop annotate`` and ``tuneloop calls ...``: label with an LLM, read the call log."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from tuneloop.cli.main import console, state

calls_app = typer.Typer(help="Read the log of LLM calls (also the cache).", no_args_is_help=True)


def annotate(
    dataset: Annotated[str, typer.Option(help="Dataset NAME or NAME@VERSION.")],
    model: Annotated[
        str, typer.Option(help="Model name (tuneloop models list), openai:MODEL, or fake.")
    ],
    prompt: Annotated[
        str | None,
        typer.Option(help="Prompt version NAME[@VERSION] (default: the task's chat format)."),
    ] = None,
    split: Annotated[
        list[str] | None,
        typer.Option(
            help="Splits to label (repeatable; default train, or every record of an unsplit "
            "dataset). The gold slice only when named."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Label at most this many records in all.")
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            help="Records per batch: one transaction each; a local model scores a batch's "
            "labels in shared passes."
        ),
    ] = 16,
    concurrency: Annotated[
        int | None,
        typer.Option(help="Calls at once (HTTP endpoints; local models run one at a time)."),
    ] = None,
    retries: Annotated[
        int, typer.Option(help="Re-asks when a free-text answer is outside the label set.")
    ] = 2,
    max_tokens: Annotated[int, typer.Option(help="Longest answer for generative tasks.")] = 256,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Call the model even for a prompt answered before.")
    ] = False,
) -> None:
    """Label every record of the splits that this job has not labelled yet (resumable: run the
    same command again after an interruption)."""
    from tuneloop.llm.engine import Engine
    from tuneloop.llm.factory import open_model
    from tuneloop.workflows.annotate import AnnotateOptions
    from tuneloop.workflows.annotate import Progress as Done
    from tuneloop.workflows.annotate import annotate as run

    handle = open_model(model, state.project_dir, store=state.store())
    opts = AnnotateOptions(
        dataset=dataset,
        model=model,
        prompt=prompt,
        splits=split or [],
        limit=limit,
        batch_size=batch_size,
        retries=retries,
        max_tokens=max_tokens,
        use_cache=not no_cache,
        concurrency=min(concurrency or handle.max_concurrency, handle.max_concurrency),
        project=state.project_name,
    )
    store = state.store()
    progress = Progress(
        TextColumn("[bold]annotate"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        TextColumn("${task.fields[cost]:.4f}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )
    try:
        with progress:
            task = progress.add_task("annotate", total=None, cost=0.0)

            def on_progress(p: Done) -> None:
                progress.update(task, completed=p.done, total=p.total, cost=p.cost)

            result = run(
                store,
                opts,
                lambda run_id: Engine(
                    store,
                    handle.provider,
                    family=handle.family,
                    price=handle.price,
                    use_cache=opts.use_cache,
                    run_id=run_id,
                ),
                on_progress=on_progress,
            )
    finally:
        handle.close()
    verb = "resumed" if result.resumed else "started"
    console.print(
        f"run {result.run_id} ({verb}): labelled {result.labelled} records now, "
        f"{result.total} in the job; {result.needs_review} need review; "
        f"{result.cached_calls} answers from the cache; cost ${result.cost:.4f}"
    )
    if result.methods:
        console.print(
            "how labels were chosen: " + ", ".join(f"{k} {v}" for k, v in result.methods.items())
        )


@calls_app.command("list")
def list_calls(
    n: Annotated[int, typer.Option("-n", help="How many, newest first.")] = 20,
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
) -> None:
    """The newest LLM calls."""
    from sqlalchemy import select

    from tuneloop.store.models import LLMCall

    with state.store().transaction() as session:
        query = select(LLMCall).order_by(LLMCall.id.desc()).limit(n)
        if model:
            query = query.where(LLMCall.model == model)
        table = Table("id", "when", "model", "op", "tokens in/out", "ms", "cost $", "output")
        for c in session.scalars(query):
            table.add_row(
                str(c.id),
                c.created_at.strftime("%H:%M:%S"),
                c.model,
                str(c.params.get("op")),
                f"{c.tokens_in or 0}/{c.tokens_out or 0}",
                f"{c.latency_ms or 0:.0f}",
                f"{c.cost_usd or 0:.5f}",
                (c.error or c.output or "")[:60].replace("\n", " "),
            )
    console.print(table)


@calls_app.command("show")
def show_call(call_id: Annotated[int, typer.Argument(help="Call id.")]) -> None:
    """One call in full: messages, parameters, output."""
    from tuneloop.errors import UserError
    from tuneloop.store.models import LLMCall

    with state.store().transaction() as session:
        c = session.get(LLMCall, call_id)
        if c is None:
            raise UserError(f"no LLM call {call_id}")
        info = {
            "id": c.id,
            "model": c.model,
            "family": c.family,
            "provider": c.provider,
            "params": c.params,
            "messages": c.messages,
            "output": c.output,
            "output_data": c.output_data,
            "tokens_in": c.tokens_in,
            "tokens_out": c.tokens_out,
            "latency_ms": c.latency_ms,
            "cost_usd": c.cost_usd,
            "error": c.error,
            "cache_key": c.cache_key,
            "run_id": c.run_id,
            "created_at": c.created_at.isoformat(),
        }
    console.print_json(json.dumps(info, ensure_ascii=False, default=str))


@calls_app.command("stats")
def call_stats() -> None:
    """Calls, tokens, time and cost per model."""
    from sqlalchemy import func, select

    from tuneloop.store.models import LLMCall

    with state.store().transaction() as session:
        rows = session.execute(
            select(
                LLMCall.model,
                LLMCall.family,
                func.count(),
                func.sum(LLMCall.tokens_in),
                func.sum(LLMCall.tokens_out),
                func.avg(LLMCall.latency_ms),
                func.sum(LLMCall.cost_usd),
                func.count(LLMCall.error),
            ).group_by(LLMCall.model, LLMCall.family)
        ).all()
    table = Table(
        "model", "family", "calls", "tokens in", "tokens out", "mean ms", "cost $", "errors"
    )
    for m, fam, n, tin, tout, ms, cost, errs in rows:
        table.add_row(
            m,
            fam,
            str(n),
            str(tin or 0),
            str(tout or 0),
            f"{ms or 0:.0f}",
            f"{cost or 0:.4f}",
            str(errs),
        )
    console.print(table)
