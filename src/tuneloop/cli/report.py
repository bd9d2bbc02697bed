"""``tuneloop report RUN``: one self-contained HTML file with the run's plots and numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneloop.cli.main import console, state
from tuneloop.errors import UserError


def report(
    run: Annotated[
        str, typer.Argument(help="Run id (12 or run:12) of a demo, evaluation or training run.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="HTML file to write (default: reports/KIND-run-ID.html in the project).",
        ),
    ] = None,
) -> None:
    """Write the HTML report of a run: one self-contained file (plots inline, no scripts, opens
    offline). A demo run shows every stage: time and cost, the prompt versions compared,
    confusion matrices, slices, label sources, the loss curve, and base vs annotator vs
    student on the gold slice. An evaluation run shows its metrics with 95% intervals, its
    confusion matrix or text metrics and judge levels, and its slices; a training run its loss
    curve, learning rate, speed, label sources and lineage."""
    text = run.removeprefix("run:")
    if not text.isdigit():
        raise UserError(f"RUN is a run id such as 12, got {run!r}")
    from tuneloop.workflows.report import default_report_path, write_report

    store = state.store()
    run_id = int(text)
    path = out or default_report_path(store, run_id, state.project_dir)
    written = write_report(store, run_id, path, project=state.project_name)
    console.print(f"report: {written}", highlight=False, soft_wrap=True)
