"""``tuneloop demo``: the main job on the embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneloop.cli.main import console, state


def demo(
    quick: Annotated[
        bool, typer.Option(help="Small sizes: the same path in a few minutes.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for sampling and splits.")] = 13,
    report: Annotated[
        Path | None,
        typer.Option(help="Where to write the HTML report (default: reports/demo-run-ID.html)."),
    ] = None,
) -> None:
    """Run the loop on packaged data and models: import Rotten Tomatoes and split it with a
    locked gold slice; eyeball prompt v1 of the packaged Qwen annotator, evaluate it against
    the dataset's labels, revise to v2, evaluate and compare; apply the better one to the
    training records; fine-tune SmolLM2-135M with LoRA on those labels; evaluate base,
    annotator and student on the gold slice; queue the validation records the student is
    least sure about for people, with a demo admin and annotator for the web app. (Later
    stages join as they land.) A second run reuses finished stages. Ends by writing the run's
    HTML report (plots of every stage)."""
    from collections.abc import Callable, Iterator
    from contextlib import contextmanager

    from tuneloop.cli.data import meter, print_stats
    from tuneloop.workflows.demo import PROMPT, run_demo

    @contextmanager
    def rows_meter(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        with meter(description, total) as m:
            yield m.row

    result = run_demo(
        state.store(),
        quick=quick,
        seed=seed,
        project=state.project_name,
        project_dir=state.project_dir,
        say=console.print,
        meter=rows_meter,
        report=report,
    )
    print_stats(result.ref, result.stats)
    console.print(f"\ndatabase: {state.db_url}")
    console.print("see the LLM calls: tuneloop calls stats")
    console.print(f"next: tuneloop prompt slices {PROMPT}@1 --show-examples 2")
    console.print(f"      tuneloop prompt compare {PROMPT}@1 {PROMPT}@2")
    review = result.review
    if review is not None:
        console.print(
            f"web app: tuneloop web, then open http://127.0.0.1:8000 and sign in as "
            f"demo-annotator to answer queue {review.queue}, or as demo-admin to see the "
            f"reports; passwords in {review.passwords}",
            highlight=False,
            soft_wrap=True,
        )
        if review.new_people:
            console.print(f"made people {', '.join(review.new_people)} (passwords in that file)")
    console.print(f"report: {result.report}", highlight=False, soft_wrap=True)
