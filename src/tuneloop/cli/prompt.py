"""``tuneloop prompt ...``: versioned prompts (new, edit, list, show, diff) and the shipped
starting prompts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tuneloop.cli.main import console, state
from tuneloop.errors import UserError

if TYPE_CHECKING:
    from tuneloop.store.models import PromptVersion
    from tuneloop.workflows.prompts import PromptSpec

app = typer.Typer(
    help="Versioned prompts for LLM annotators and judges: write, revise, compare.",
    no_args_is_help=True,
)

SystemFile = Annotated[
    Path | None, typer.Option("--system-file", help="Read the system template from this file.")
]
UserFile = Annotated[
    Path | None, typer.Option("--user-file", help="Read the user template from this file.")
]
SystemText = Annotated[
    str | None, typer.Option("--system", help="The system template (Jinja); '' for none.")
]
UserText = Annotated[str | None, typer.Option("--user", help="The user template (Jinja).")]
Note = Annotated[str | None, typer.Option(help="What this version is, or what changed.")]
Author = Annotated[
    str | None,
    typer.Option(envvar="TUNELOOP_USER", help="Who wrote it (default: the OS user name)."),
]


def _author(given: str | None) -> str | None:
    if given:
        return given
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment
        return None


def _template(text: str | None, path: Path | None, what: str) -> str | None:
    """A template given inline or as a file (not both)."""
    if text is not None and path is not None:
        raise UserError(f"give --{what} or --{what}-file, not both")
    if path is None:
        return text
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the {what} template {path}: {exc}") from None


def open_editor(text: str) -> str | None:
    """Let the user edit ``text`` in $VISUAL / $EDITOR; None when it was not saved."""
    import click

    return click.edit(text, extension=".yaml", require_save=True)


def _ref(p: PromptVersion) -> str:
    return f"{p.name}@{p.version}"


@app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="Name of the new prompt.")],
    task: Annotated[
        str | None,
        typer.Option(help="Task type it is for (default: the task of --from's starter)."),
    ] = None,
    from_: Annotated[
        str | None,
        typer.Option("--from", help="Start from this shipped starter (tuneloop prompt starters)."),
    ] = None,
    system_file: SystemFile = None,
    user_file: UserFile = None,
    user: UserText = None,
    system: SystemText = None,
    role: Annotated[
        str | None,
        typer.Option(help="annotator or judge (default: the starter's role, else annotator)."),
    ] = None,
    note: Note = None,
    author: Author = None,
) -> None:
    """Create version 1 of a prompt. Without templates it starts from --from or the task's own
    starter; templates given replace the starter's."""
    from dataclasses import replace

    from tuneloop.workflows.prompts import PromptSpec, create_prompt, default_starter, starter

    user_t = _template(user, user_file, "user")
    system_t = _template(system, system_file, "system")
    base: PromptSpec | None = None
    if from_ is not None:
        base = starter(from_)
        if task is not None and base.task != task:
            raise UserError(f"starter {from_!r} is for {base.task}, not {task}")
        if role is not None and base.role != role:
            raise UserError(f"starter {from_!r} is a {base.role} prompt, not {role}")
    if task is None and base is None:
        raise UserError("give --task (or --from STARTER)")
    task = task or (base.task if base else None)
    assert task is not None
    if base is None and user_t is None and system_t is None:
        base = starter(default_starter(task, role or "annotator"))
    if base is None:
        if user_t is None:
            raise UserError("give the user template: --user or --user-file")
        spec = PromptSpec(task=task, user=user_t, system=system_t, role=role or "annotator")
    else:
        spec = replace(
            base,
            user=base.user if user_t is None else user_t,
            system=base.system if system_t is None else system_t,
        )
    spec = replace(spec, note=note or spec.note, author=_author(author))
    prompt = create_prompt(state.store(), state.project_name, name, spec)
    console.print(
        f"prompt [bold]{escape(_ref(prompt))}[/] ({prompt.task_type}, {prompt.role})",
        highlight=False,
    )


def _document(p: PromptVersion, note: str | None) -> str:
    """The YAML document the editor shows: note, system, user (and params, when there are)."""
    import yaml

    class BlockDumper(yaml.SafeDumper):
        """Multi-line text as '|' blocks, the way people write templates."""

    def block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    BlockDumper.add_representer(str, block)
    doc: dict[str, Any] = {
        "note": note or "",
        "system": p.system_template + "\n" if p.system_template else "",
        "user": p.user_template + "\n",
    }
    if p.params:
        doc["params"] = p.params
    head = (
        f"# Editing prompt {_ref(p)} ({p.task_type}, {p.role}). Save and close to create a new\n"
        "# version; close without changes to cancel. Keep the templates as YAML block text\n"
        "# ('|' followed by indented lines). note: what this version changes.\n"
    )
    body = yaml.dump(
        doc, Dumper=BlockDumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return head + body


def _parse_document(text: str) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"edited prompt document{where}: {exc}") from None
    if not isinstance(doc, dict):
        raise UserError("edited prompt document: expected a mapping with note, system, user")
    unknown = set(doc) - {"note", "system", "user", "params"}
    if unknown:
        raise UserError(
            f"edited prompt document: unknown keys {', '.join(sorted(map(str, unknown)))}; "
            "keys: note, system, user, params"
        )
    for key in ("note", "system", "user"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise UserError(f"edited prompt document: {key} must be text")
    if not doc.get("user"):
        raise UserError("edited prompt document: the user template is empty")
    return doc


@app.command("edit")
def edit(
    ref: Annotated[str, typer.Argument(help="NAME (the latest) or NAME@VERSION to start from.")],
    system_file: SystemFile = None,
    user_file: UserFile = None,
    user: UserText = None,
    system: SystemText = None,
    note: Note = None,
    author: Author = None,
    from_starter: Annotated[
        str | None,
        typer.Option("--from", help="Take the templates of this shipped starter prompt."),
    ] = None,
) -> None:
    """Save a new version of a prompt. Without template options, opens $VISUAL / $EDITOR on
    the version's note, system and user templates."""
    from tuneloop.workflows.prompts import edit_prompt, get_prompt, starter

    store = state.store()
    user_t = _template(user, user_file, "user")
    system_t = _template(system, system_file, "system")
    params: dict[str, Any] | None = None
    if from_starter is not None:
        if user_t is not None or system_t is not None:
            raise UserError("--from takes the templates from a starter; drop --user/--system")
        spec = starter(from_starter)
        user_t, system_t = spec.user, spec.system or ""
        note = note or spec.note
    if user_t is None and system_t is None:
        parent = get_prompt(store, state.project_name, ref)
        original = _document(parent, note)
        edited = open_editor(original)
        if edited is None or edited == original:
            raise UserError("nothing changed; no new version")
        doc = _parse_document(edited)
        user_t, system_t = doc["user"], doc.get("system") or ""
        note = doc.get("note") or None
        if "params" in doc:
            params = doc["params"] if doc["params"] is not None else {}
    prompt = edit_prompt(
        store,
        state.project_name,
        ref,
        user=user_t,
        system=system_t,
        params=params,
        note=note,
        author=_author(author),
    )
    console.print(
        f"prompt [bold]{escape(_ref(prompt))}[/] ({prompt.task_type}, {prompt.role}), "
        f"edited from {escape(ref)}",
        highlight=False,
    )


@app.command("list")
def list_(
    name: Annotated[
        str | None, typer.Argument(help="A prompt's name: list its versions instead.")
    ] = None,
) -> None:
    """The prompts (latest version of each), or one prompt's history."""
    from tuneloop.workflows.prompts import list_prompts, prompt_history

    store = state.store()
    if name is None:
        prompts = list_prompts(store, state.project_name)
        if not prompts:
            console.print("no prompts yet; create one with `tuneloop prompt new NAME --task ...`")
            return
        table = Table("name", "latest", "task", "role", "versions", "note")
        for p in prompts:
            table.add_row(
                Text(p.name),
                f"@{p.version}",
                p.task_type,
                p.role,
                str(p.version),
                Text(p.note or ""),
            )
        console.print(table)
        return
    history = prompt_history(store, state.project_name, name)
    by_id = {p.id: p for p in history}
    table = Table("version", "parent", "author", "note", "created")
    for p in history:
        parent = by_id.get(p.parent_id) if p.parent_id is not None else None
        table.add_row(
            f"@{p.version}",
            "" if parent is None else f"@{parent.version}",
            Text(p.author or ""),
            Text(p.note or ""),
            p.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(Text(f"{name} ({history[-1].task_type}, {history[-1].role})"))
    console.print(table)


def _print_templates(system: str | None, user: str, params: dict[str, Any]) -> None:
    from rich.rule import Rule

    for title, text in (("system", system), ("user", user)):
        if text:
            console.print(Rule(title, align="left"))
            console.print(Text(text), soft_wrap=True)  # as written: no line breaks added
    if params:
        console.print(Rule("params", align="left"))
        console.print(Text(json.dumps(params, indent=2, ensure_ascii=False)), soft_wrap=True)


@app.command("show")
def show(ref: Annotated[str, typer.Argument(help="NAME (the latest) or NAME@VERSION.")]) -> None:
    """One prompt version: its metadata and templates."""
    from tuneloop.workflows.prompts import get_parent, get_prompt

    store = state.store()
    p = get_prompt(store, state.project_name, ref)
    parent = get_parent(store, p)
    rows = [
        ("prompt", _ref(p)),
        ("task", p.task_type),
        ("role", p.role),
        ("parent", _ref(parent) if parent else "-"),
        ("author", p.author or "-"),
        ("created", p.created_at.strftime("%Y-%m-%d %H:%M:%S")),
        ("note", p.note or "-"),
    ]
    for key, value in rows:
        console.print(Text.assemble((f"{key:<8}", "bold"), value))
    _print_templates(p.system_template, p.user_template, p.params)


@app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="NAME@VERSION (or NAME, the latest).")],
    b: Annotated[
        str | None,
        typer.Argument(help="NAME@VERSION to compare with (default: A's parent, A being new)."),
    ] = None,
) -> None:
    """A unified diff of two prompt versions (system, user, params)."""
    from tuneloop.workflows.prompts import diff_prompts, get_parent, get_prompt

    store = state.store()
    first = get_prompt(store, state.project_name, a)
    if b is None:
        parent = get_parent(store, first)
        if parent is None:
            raise UserError(f"{_ref(first)} has no parent; name two versions to compare")
        first, second = parent, first
    else:
        second = get_prompt(store, state.project_name, b)
    text = diff_prompts(first, second)
    if not text:
        console.print(f"{_ref(first)} and {_ref(second)} are the same", highlight=False)
        return
    styles = {"+++": "bold", "---": "bold", "@@": "cyan", "+": "green", "-": "red"}
    for line in text.splitlines():
        style = next((s for prefix, s in styles.items() if line.startswith(prefix)), "")
        console.print(Text(line, style=style), soft_wrap=True)


@app.command("starters")
def list_starters(
    show: Annotated[str | None, typer.Option("--show", help="Print this starter.")] = None,
) -> None:
    """The starting prompts shipped with tuneloop (use one with `prompt new NAME --from`)."""
    from tuneloop.workflows.prompts import starter, starters

    if show is not None:
        spec: PromptSpec = starter(show)
        console.print(Text.assemble(("starter ", "bold"), show))
        console.print(Text.assemble(("task    ", "bold"), spec.task))
        console.print(Text.assemble(("role    ", "bold"), spec.role))
        console.print(Text.assemble(("note    ", "bold"), spec.note or "-"))
        _print_templates(spec.system, spec.user, spec.params)
        return
    table = Table("name", "task", "role", "note")
    for name, s in starters().items():
        table.add_row(name, s.task, s.role, Text(s.note or ""))
    console.print(table)
