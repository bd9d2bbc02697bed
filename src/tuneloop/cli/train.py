"""``tuneloop train ...``: supervised fine-tuning, resuming, listing runs, exporting models.

The flags of ``train sft`` are made from the fields of ``TrainConfig`` (one source for flags,
YAML keys and help text): every field is a flag, ``--config FILE`` reads the same keys from a
YAML file, and flags given win over the file.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from tuneloop.cli.main import console, state
from tuneloop.training.config import TrainConfig

app = typer.Typer(
    help="Fine-tune a model on the labelled data (LoRA or full), resume, list, export.",
    no_args_is_help=True,
)


def _flag_type(annotation: Any) -> Any:
    """The type a flag parses into: the field's type, not optional (None means not given)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _config_parameters() -> list[inspect.Parameter]:
    """One keyword parameter (a typer option, default None: not given) per config field."""
    params = []
    for name, info in TrainConfig.model_fields.items():
        kind = _flag_type(info.annotation)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flag = name.replace("_", "-")
        decl = str(extra.get("flag") or (f"--{flag}/--no-{flag}" if kind is bool else f"--{flag}"))
        help_text = str(info.description)
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        if default not in (None, [], "") and "default" not in help_text:
            help_text += f" (default: {str(default).lower() if kind is bool else default})"
        metavar = "<str>" if typing.get_origin(kind) is list else None
        option = typer.Option(decl, help=help_text, show_default=False, metavar=metavar)
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[kind | None, option],
            )
        )
    return params


def sft(
    config_file: Path | None = None,
    **flags: Any,
) -> None:
    """Fine-tune a base model on a dataset's labels (LoRA by default): loss on the answers
    only, checkpoints every --save-steps, per-step metrics in the database. The trained model
    is registered with its lineage (`tuneloop models show NAME`) and can be used by name
    wherever a model is accepted (`tuneloop annotate --model NAME`)."""
    from tuneloop.training.config import load_config
    from tuneloop.workflows.train import sft as run_sft

    config = load_config(config_file, flags)
    store = state.store()
    with _progress() as (on_step, note):
        result = run_sft(
            store,
            config,
            project=state.project_name,
            project_dir=state.project_dir,
            on_step=on_step,
            note=note,
        )
    _print_result(result)


sft.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter(
            "config_file",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Option(
                    "--config",
                    help="A YAML file of config keys (the flags' names with underscores).",
                ),
            ],
        ),
        *_config_parameters(),
    ]
)
app.command("sft")(sft)


@app.command()
def resume(
    run_id: Annotated[int, typer.Argument(metavar="RUN", help="Training run id.")],
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (default: the run's setting).")
    ] = None,
) -> None:
    """Continue an interrupted training run (a crash, Ctrl-C, kill -9) from its last
    checkpoint; steps after that checkpoint are done again, once."""
    from tuneloop.workflows.train import resume as run_resume

    with _progress() as (on_step, note):
        result = run_resume(state.store(), run_id, threads=threads, on_step=on_step, note=note)
    _print_result(result)


@app.command("list")
def list_() -> None:
    """Training runs, newest first: status, steps done, labels, and the model made."""
    from sqlalchemy import func, select

    from tuneloop.store.db import get_project
    from tuneloop.store.models import Run, TrainStep

    table = Table("run", "status", "dataset", "base", "method", "labels", "steps", "loss", "model")
    with state.store().transaction() as session:
        project = get_project(session, state.project_name)
        runs = session.scalars(
            select(Run)
            .where(Run.project_id == project.id, Run.kind == "train")
            .order_by(Run.id.desc())
        ).all()
        for run in runs:
            done = session.scalar(
                select(func.max(TrainStep.step)).where(TrainStep.run_id == run.id)
            )
            last = session.scalar(
                select(TrainStep.loss)
                .where(TrainStep.run_id == run.id)
                .order_by(TrainStep.step.desc())
                .limit(1)
            )
            options = run.config.get("options", {})
            counts = run.config.get("label_sources", {}).get("counts", {})
            table.add_row(
                str(run.id),
                run.status,
                escape(str(run.config.get("dataset"))),
                escape(str(options.get("base"))),
                "lora" if options.get("lora", True) else "full",
                ", ".join(f"{k} {v}" for k, v in counts.items() if v),
                str(done or 0),
                "-" if last is None else f"{last:.4f}",
                escape(str(run.stats.get("model") or "-")),
            )
    console.print(table)


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="Trained model name (`tuneloop models list`).")],
    format_: Annotated[
        Literal["adapter", "merged", "gguf"],
        typer.Option(
            "--format",
            help="adapter: the LoRA adapter folder; merged: a standalone Hugging Face folder; "
            "gguf: one file for llama.cpp / Ollama.",
        ),
    ] = "merged",
    out: Annotated[
        Path, typer.Option("-o", "--out", help="Output folder (gguf: a folder or a .gguf file).")
    ] = Path("export"),
    outtype: Annotated[
        Literal["f32", "f16", "bf16", "q8_0"], typer.Option(help="GGUF tensor type.")
    ] = "f16",
) -> None:
    """Write a trained model out for use elsewhere."""
    from sqlalchemy import select

    from tuneloop.errors import UserError
    from tuneloop.store.db import get_project
    from tuneloop.store.models import ModelEntry
    from tuneloop.training import export as exporting

    with state.store().transaction() as session:
        project = get_project(session, state.project_name)
        entry = session.scalar(
            select(ModelEntry).where(ModelEntry.project_id == project.id, ModelEntry.name == name)
        )
        if entry is None:
            raise UserError(f"no trained model {name!r} (see `tuneloop train list`)")
        path, config = Path(entry.path or ""), dict(entry.config)
    if format_ == "adapter":
        written = exporting.export_adapter(name, path, out)
    elif format_ == "merged":
        written = exporting.export_merged(name, path, config, out)
    else:
        written = exporting.export_gguf(name, path, config, out, outtype)
    console.print(f"{name}: {format_} written to {escape(str(written))}")


@contextmanager
def _progress() -> Iterator[tuple[Callable[[Any], None], Callable[[str], None]]]:
    """A rich progress bar over optimizer steps (loss, learning rate, tokens/s), and notes."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("lr {task.fields[lr]}"),
        TextColumn("{task.fields[speed]} tok/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )
    with bar:
        task = bar.add_task("train", total=None, loss="-", lr="-", speed="-")

        def on_step(info: Any) -> None:
            fields: dict[str, Any] = {}
            if info.loss is not None:
                fields["loss"] = f"{info.loss:.4f}"
            if info.learning_rate is not None:
                fields["lr"] = f"{info.learning_rate:.2e}"
            if info.tokens_per_second is not None:
                fields["speed"] = f"{info.tokens_per_second:,.0f}"
            bar.update(task, completed=info.step, total=info.total or None, **fields)

        def note(message: str) -> None:
            bar.console.print(f"[dim]{escape(message)}[/]")

        yield on_step, note


def _print_result(result: Any) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
    resumed = "" if result.resumed_from is None else f", resumed at step {result.resumed_from}"
    speed = "-" if result.tokens_per_second is None else f"{result.tokens_per_second:,.0f}"
    console.print(
        f"run {result.run_id}: model [bold]{escape(result.model)}[/] trained {result.steps} "
        f"steps{resumed} ({result.precision}, {result.seconds:.1f} s, {speed} tokens/s), "
        f"train loss {result.train_loss:.4f}"
    )
    unlabelled = f"; {result.unlabelled} records had no usable label" if result.unlabelled else ""
    console.print(f"examples by label source: {counts}{unlabelled}")
    console.print(f"saved in {escape(str(result.path))}")
