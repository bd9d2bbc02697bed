"""``tuneloop users ...``: the people of the web app (admin, reviewer, annotator).

Passwords come from a hidden prompt, a file (--password-file) or TUNELOOP_PASSWORD; they are
never echoed or accepted on the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tuneloop.cli.main import console, state
from tuneloop.errors import UserError

app = typer.Typer(
    help="People of the web app and their roles: admin (everything), reviewer (agreement, "
    "adjudication), annotator (assigned queues only).",
    no_args_is_help=True,
)

PasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="Read the password from the first line of this file "
        "(else TUNELOOP_PASSWORD, else a hidden prompt).",
    ),
]


def read_password(path: Path | None, username: str) -> str:
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the password file {path}: {exc}") from None
        if not lines or not lines[0]:
            raise UserError(f"password file {path}: the first line is empty")
        return lines[0]
    from_env = os.environ.get("TUNELOOP_PASSWORD")
    if from_env:
        return from_env
    password: str = typer.prompt(
        f"password for {username}", hide_input=True, confirmation_prompt=True
    )
    return password


@app.command("add")
def add(
    username: Annotated[str, typer.Argument(help="Login name (lower case).")],
    role: Annotated[str, typer.Option(help="admin, reviewer or annotator.")] = "annotator",
    password_file: PasswordFile = None,
) -> None:
    """Add a person with a role and a password (argon2-hashed; at least 10 characters)."""
    from tuneloop.workflows.users import add_user, check_role, check_username

    name = check_username(username)
    check_role(role)
    info = add_user(state.store(), name, role, read_password(password_file, name))
    console.print(f"added {info.username} ({info.role})")


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """People, their roles and whether they may sign in."""
    from tuneloop.workflows.users import list_users

    users = list_users(state.store())
    if as_json:
        console.print_json(json.dumps([u.to_dict() for u in users]))
        return
    table = Table("user", "role", "active", "created")
    for u in users:
        table.add_row(u.username, u.role, "yes" if u.active else "no", f"{u.created_at:%Y-%m-%d}")
    console.print(table)


@app.command("disable")
def disable(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Stop a person from signing in and end their sessions (their answers stay)."""
    from tuneloop.workflows.users import set_active

    info = set_active(state.store(), username, False)
    console.print(f"disabled {info.username}")


@app.command("enable")
def enable(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Let a disabled person sign in again."""
    from tuneloop.workflows.users import set_active

    info = set_active(state.store(), username, True)
    console.print(f"enabled {info.username}")


@app.command("password")
def password(
    username: Annotated[str, typer.Argument(help="Login name.")],
    password_file: PasswordFile = None,
) -> None:
    """Set a new password (every session of that person ends)."""
    from tuneloop.workflows.users import set_password

    set_password(state.store(), username, read_password(password_file, username))
    console.print(f"new password set for {username}")
