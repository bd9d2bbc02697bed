"""The ``tuneloop`` command. Thin: parses options, calls workflow functions, prints results.

Heavy libraries (SQLAlchemy, pyarrow, datasets, torch) are imported inside commands so that
``tuneloop --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tuneloop.errors import UserError
from tuneloop.llm.types import ProviderError

if TYPE_CHECKING:
    from tuneloop.store.db import Store

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="tuneloop",
    help="Turn unlabeled text into a task-specific small language model, "
    "with large LLMs and humans in the loop.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


class State:
    """Global options: where the project and its database are."""

    project_path: Path | None = None
    db: str | None = None
    _stores: list[Store]

    def __init__(self) -> None:
        self._stores = []

    @property
    def project_dir(self) -> Path:
        from tuneloop.config import project_dir

        return project_dir(self.project_path)

    @property
    def db_url(self) -> str:
        from tuneloop.config import db_url

        return db_url(self.db, self.project_dir)

    @property
    def project_name(self) -> str:
        from tuneloop.config import project_name

        return project_name(self.project_dir)

    def store(self) -> Store:
        from tuneloop.store.db import open_store

        if not self._stores:
            self._stores.append(open_store(self.db_url))
        return self._stores[0]

    def close(self) -> None:
        """Release database connections (the CLI calls this after every command)."""
        while self._stores:
            self._stores.pop().dispose()


state = State()


@app.callback()
def _root(
    project: Annotated[
        Path | None,
        typer.Option(
            "--project", envvar="TUNELOOP_PROJECT", help="Project directory (default: current)."
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="TUNELOOP_DB",
            help="Database URL, e.g. postgresql://user:pw@host/db "
            "(default: SQLite file .tuneloop/tuneloop.db in the project directory).",
        ),
    ] = None,
) -> None:
    state.project_path = project
    state.db = db


@app.command()
def init(
    name: Annotated[
        str, typer.Option(help="Project name (one database can hold several).")
    ] = "default",
) -> None:
    """Create a project here: tuneloop.yaml and a migrated database."""
    from tuneloop.config import write_project_file
    from tuneloop.store.db import get_project

    path = write_project_file(state.project_dir, name)
    store = state.store()
    with store.transaction() as session:
        project = get_project(session, state.project_name)
        console.print(f"project [bold]{project.name}[/] in {state.project_dir}")
    console.print(f"config    {path}")
    console.print(f"database  {store.engine.url.render_as_string(hide_password=True)}")


def _register() -> None:
    from tuneloop.cli import (
        annotate,
        data,
        demo,
        evaluation,
        examples,
        feedback,
        metrics,
        models,
        prompt,
        protocol,
        queue,
        report,
        train,
        users,
        web,
    )

    app.add_typer(data.app, name="data")
    app.add_typer(examples.app, name="examples")
    app.add_typer(models.app, name="models")
    app.command(name="annotate")(annotate.annotate)
    app.add_typer(annotate.calls_app, name="calls")
    app.command(name="demo")(demo.demo)
    app.add_typer(prompt.app, name="prompt")
    for name in ("eyeball", "evaluate", "slices", "compare", "best", "evals"):
        prompt.app.command(name=name)(getattr(protocol, name))
    app.add_typer(protocol.judge_app, name="judge")
    app.add_typer(evaluation.app, name="eval")
    app.add_typer(metrics.app, name="metrics")
    app.add_typer(train.app, name="train")
    app.command(name="report")(report.report)
    app.add_typer(users.app, name="users")
    app.add_typer(queue.app, name="queue")
    app.add_typer(feedback.app, name="feedback")
    app.command(name="web")(web.web)


def _reflow(text: str) -> str:
    """A docstring as help text: lines of a paragraph joined (rich keeps single newlines)."""
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _reflow_help(group: typer.Typer) -> None:
    for info in group.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            info.help = _reflow(info.callback.__doc__)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _reflow_help(sub.typer_instance)


_register()
_reflow_help(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: a ``UserError`` prints one line and gives 1 (no
    traceback); usage errors give 2, as click prints them."""
    try:
        app(args=argv, prog_name="tuneloop")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except UserError as exc:
        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        return 1
    except ProviderError as exc:  # a model call failed after the provider's retries
        err_console.print(
            f"[bold red]error:[/] model call failed: {escape(str(exc))}\n"
            "Finished work is saved; run the same command again to continue.",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    finally:
        state.close()
    return 0


def run() -> None:
    sys.exit(main())
