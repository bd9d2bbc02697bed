"""Versioned prompts: create a prompt, edit it into new versions, resolve ``NAME[@VERSION]``,
list, show and diff versions; the shipped starting prompts.

A prompt version is immutable. ``create_prompt`` writes version 1 of a new name; every
``edit_prompt`` writes version latest+1 whose parent is the version it started from, copying
what the edit does not change. Templates are checked against the task's declared fields
(``tuneloop.llm.prompts.check_placeholders``) before anything is written, and each write is
one transaction.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tuneloop.errors import UserError
from tuneloop.llm import judge
from tuneloop.llm.prompts import ROLES, check_placeholders
from tuneloop.store.db import Store, get_project
from tuneloop.store.models import PromptVersion
from tuneloop.tasks import TaskType, task_spec

DEFAULT_LEVELS: tuple[str, ...] = judge.LEVELS
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@dataclass
class PromptSpec:
    """What a prompt version holds, before it is stored."""

    task: str  # the task type it is written for
    user: str  # Jinja template of the user turn
    system: str | None = None  # Jinja template of the system turn, if any
    role: str = "annotator"  # annotator | judge
    params: dict[str, Any] = field(default_factory=dict)  # judges: {"levels": [5 names]}
    note: str | None = None  # what this version is, or what changed
    author: str | None = None


# --- checking -------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UserError(
            f"bad prompt name {name!r}: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 200 characters)"
        )
    return name


def _check_task(task: str) -> str:
    try:
        return task_spec(task).type.value
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _clean(template: str | None) -> str | None:
    """Trailing whitespace dropped (editors add newlines); an empty template is no template."""
    if template is None:
        return None
    template = template.rstrip()
    return template or None


def check_levels(levels: Any) -> list[str]:
    """A judge's rating scale: exactly five distinct, non-empty level names, worst first."""
    if not isinstance(levels, list | tuple) or not all(isinstance(v, str) for v in levels):
        raise UserError(f"judge levels must be a list of 5 strings, worst first; got {levels!r}")
    try:
        return judge.check_levels(levels)
    except ValueError as exc:
        raise UserError(f"judge levels must be {exc}") from None


def _check_params(role: str, params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise UserError(f"prompt params must be a mapping, got {params!r}")
    try:
        json.dumps(params)
    except (TypeError, ValueError) as exc:
        raise UserError(f"prompt params must be plain JSON values: {exc}") from None
    clean: dict[str, Any] = dict(params)
    if role == "judge":
        clean["levels"] = check_levels(clean.get("levels", DEFAULT_LEVELS))
    elif "levels" in clean:
        raise UserError("'levels' is a judge's parameter; this is an annotator prompt")
    return clean


def checked_spec(spec: PromptSpec) -> PromptSpec:
    """The spec with its task, role, templates and params validated and normalized, or one
    ``UserError`` saying what is wrong."""
    task = _check_task(spec.task)
    if spec.role not in ROLES:
        raise UserError(f"unknown prompt role {spec.role!r}; roles: {', '.join(ROLES)}")
    user, system = _clean(spec.user), _clean(spec.system)
    if user is None:
        raise UserError("the prompt's user template is empty")
    check_placeholders(task, spec.role, system, user)
    return replace(
        spec,
        task=task,
        user=user,
        system=system,
        params=_check_params(spec.role, spec.params),
        note=_clean(spec.note),
        author=_clean(spec.author),
    )


# --- resolving ------------------------------------------------------------------------------


def parse_ref(ref: str) -> tuple[str, int | str | None]:
    """``NAME`` -> (NAME, None); ``NAME@3`` -> (NAME, 3); ``NAME@best`` -> (NAME, "best")."""
    name, at, version = ref.strip().partition("@")
    if not name or (at and not (version.isdigit() or version == "best")):
        raise UserError(
            f"bad prompt reference {ref!r}; use NAME, NAME@VERSION (a number) or NAME@best"
        )
    if not at:
        return name, None
    return name, version if version == "best" else int(version)


def best_version(session: Session, project_id: int, name: str) -> PromptVersion:
    """The best-evaluated version of a prompt (``NAME@best``), by its evaluations' main metric."""
    from tuneloop.workflows.compare import best_prompt

    return best_prompt(session, project_id, name=name).prompt


def resolve_prompt(
    session: Session,
    project_id: int,
    ref: str,
    task: str | None = None,
    *,
    role: str | None = None,
) -> PromptVersion:
    """The version ``ref`` names: ``NAME`` (the latest), ``NAME@N`` or ``NAME@best``; with
    ``task`` (and ``role``), a clear error when the prompt is written for another one."""
    name, version = parse_ref(ref)
    versions = list(
        session.scalars(
            select(PromptVersion.version)
            .where(PromptVersion.project_id == project_id, PromptVersion.name == name)
            .order_by(PromptVersion.version)
        )
    )
    if not versions:
        known = list(
            session.scalars(
                select(PromptVersion.name)
                .where(PromptVersion.project_id == project_id)
                .distinct()
                .order_by(PromptVersion.name)
            )
        )
        if not known:
            raise UserError(f"no prompt {name!r}; there are no prompts yet: `tuneloop prompt new`")
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"no prompt {name!r}{hint}; known prompts: {', '.join(known)}")
    prompt: PromptVersion | None
    if version == "best":
        # HOOK (NAME@best): evaluation decides which version is best
        prompt = best_version(session, project_id, name)
    else:
        number = versions[-1] if version is None else version
        if number not in versions:
            raise UserError(
                f"prompt {name!r} has no version {number}; versions: "
                + ", ".join(str(v) for v in versions)
            )
        prompt = session.scalar(
            select(PromptVersion).where(
                PromptVersion.project_id == project_id,
                PromptVersion.name == name,
                PromptVersion.version == number,
            )
        )
        assert prompt is not None
    label = f"{prompt.name}@{prompt.version}"
    if task is not None and prompt.task_type != task:
        raise UserError(f"prompt {label} is written for {prompt.task_type}, not {task}")
    if role is not None and prompt.role != role:
        raise UserError(f"prompt {label} is for the {prompt.role} role; this needs a {role} prompt")
    return prompt


# --- writing --------------------------------------------------------------------------------


def _flush(session: Session, name: str) -> None:
    try:
        session.flush()
    except IntegrityError:
        raise UserError(
            f"prompt {name!r} changed while this was being saved (another edit?); try again"
        ) from None


def create_prompt(store: Store, project: str, name: str, spec: PromptSpec) -> PromptVersion:
    """Version 1 of a new prompt."""
    _check_name(name)
    spec = checked_spec(spec)
    with store.transaction() as session:
        project_id = get_project(session, project).id
        latest = session.scalar(
            select(func.max(PromptVersion.version)).where(
                PromptVersion.project_id == project_id, PromptVersion.name == name
            )
        )
        if latest is not None:
            raise UserError(
                f"prompt {name!r} exists (latest {name}@{latest}); "
                f"make a new version with `tuneloop prompt edit {name}`"
            )
        prompt = PromptVersion(
            project_id=project_id,
            name=name,
            version=1,
            task_type=spec.task,
            role=spec.role,
            system_template=spec.system,
            user_template=spec.user,
            params=spec.params,
            parent_id=None,
            author=spec.author,
            note=spec.note,
        )
        session.add(prompt)
        _flush(session, name)
    return prompt


def edit_prompt(
    store: Store,
    project: str,
    ref: str,
    *,
    user: str | None = None,
    system: str | None = None,
    params: dict[str, Any] | None = None,
    note: str | None = None,
    author: str | None = None,
) -> PromptVersion:
    """A new version (latest+1) whose parent is the version ``ref`` names. Templates and params
    not given are copied from the parent (``system=""`` removes the system template); the note
    and author describe this version and are not copied. An edit that changes neither template
    nor params is refused."""
    with store.transaction() as session:
        project_id = get_project(session, project).id
        parent = resolve_prompt(session, project_id, ref)
        spec = checked_spec(
            PromptSpec(
                task=parent.task_type,
                role=parent.role,
                user=parent.user_template if user is None else user,
                system=parent.system_template if system is None else system,
                params=parent.params if params is None else params,
                note=note,
                author=author,
            )
        )
        if (spec.user, spec.system, spec.params) == (
            parent.user_template,
            parent.system_template,
            parent.params,
        ):
            raise UserError(
                f"nothing changed: the edit's templates and params are those of "
                f"{parent.name}@{parent.version}"
            )
        latest = session.scalar(
            select(func.max(PromptVersion.version)).where(
                PromptVersion.project_id == project_id, PromptVersion.name == parent.name
            )
        )
        prompt = PromptVersion(
            project_id=project_id,
            name=parent.name,
            version=(latest or 0) + 1,
            task_type=parent.task_type,
            role=parent.role,
            system_template=spec.system,
            user_template=spec.user,
            params=spec.params,
            parent_id=parent.id,
            author=spec.author,
            note=spec.note,
        )
        session.add(prompt)
        _flush(session, parent.name)
    return prompt


# --- reading --------------------------------------------------------------------------------


def list_prompts(store: Store, project: str) -> list[PromptVersion]:
    """The latest version of every prompt of the project, by name."""
    with store.transaction() as session:
        project_id = get_project(session, project).id
        latest = (
            select(PromptVersion.name, func.max(PromptVersion.version).label("version"))
            .where(PromptVersion.project_id == project_id)
            .group_by(PromptVersion.name)
            .subquery()
        )
        query = (
            select(PromptVersion)
            .join(
                latest,
                (PromptVersion.name == latest.c.name) & (PromptVersion.version == latest.c.version),
            )
            .where(PromptVersion.project_id == project_id)
            .order_by(PromptVersion.name)
        )
        return list(session.scalars(query))


def prompt_history(store: Store, project: str, name: str) -> list[PromptVersion]:
    """Every version of one prompt, oldest first."""
    with store.transaction() as session:
        project_id = get_project(session, project).id
        resolve_prompt(session, project_id, name)  # a clear error for an unknown name
        query = (
            select(PromptVersion)
            .where(PromptVersion.project_id == project_id, PromptVersion.name == name)
            .order_by(PromptVersion.version)
        )
        return list(session.scalars(query))


def get_prompt(store: Store, project: str, ref: str) -> PromptVersion:
    """The version ``ref`` (``NAME``, ``NAME@N``) names."""
    with store.transaction() as session:
        return resolve_prompt(session, get_project(session, project).id, ref)


def get_parent(store: Store, prompt: PromptVersion) -> PromptVersion | None:
    if prompt.parent_id is None:
        return None
    with store.transaction() as session:
        return session.get(PromptVersion, prompt.parent_id)


def _section(text: str | None) -> list[str]:
    return [] if text is None else [line + "\n" for line in text.splitlines()]


def diff_prompts(a: PromptVersion, b: PromptVersion) -> str:
    """A unified diff of ``a`` -> ``b``: task and role (when they differ), the system and user
    templates and the params. Empty when the two say the same."""
    name_a, name_b = f"{a.name}@{a.version}", f"{b.name}@{b.version}"
    parts = [
        ("kind", f"{a.task_type} {a.role}", f"{b.task_type} {b.role}"),
        ("system", a.system_template, b.system_template),
        ("user", a.user_template, b.user_template),
        (
            "params",
            json.dumps(a.params, indent=2, sort_keys=True, ensure_ascii=False),
            json.dumps(b.params, indent=2, sort_keys=True, ensure_ascii=False),
        ),
    ]
    out: list[str] = []
    for part, old, new in parts:
        lines = difflib.unified_diff(
            _section(old), _section(new), f"{name_a} {part}", f"{name_b} {part}", lineterm="\n"
        )
        out.extend(line if line.endswith("\n") else line + "\n" for line in lines)
    return "".join(out)


# --- shipped starting prompts ---------------------------------------------------------------

_STARTER_KEYS = {"task", "role", "system", "user", "note", "params"}


@cache
def _load_starters() -> dict[str, PromptSpec]:
    text = resources.files("tuneloop.starters").joinpath("prompts.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    out: dict[str, PromptSpec] = {}
    for name, entry in data.items():
        extra = set(entry) - _STARTER_KEYS
        if extra:
            raise ValueError(f"starter {name}: unknown keys {sorted(extra)}")
        out[name] = PromptSpec(
            task=entry["task"],
            role=entry.get("role", "annotator"),
            system=entry.get("system"),
            user=entry["user"],
            params=entry.get("params", {}),
            note=entry.get("note"),
        )
    return out


def starters() -> dict[str, PromptSpec]:
    """The shipped starting prompts by name (one annotator per task type, named after it;
    sentiment, conversation-summary and judge prompts)."""
    return copy.deepcopy(_load_starters())


def starter(name: str) -> PromptSpec:
    """One shipped starting prompt."""
    known = starters()
    if name not in known:
        raise UserError(f"no starter prompt {name!r}; starters: {', '.join(sorted(known))}")
    return known[name]


def default_starter(task: str, role: str = "annotator") -> str:
    """The starter a new prompt of this task and role begins from: the task's own for an
    annotator, the one judge starter written for the task for a judge."""
    task = _check_task(task)
    if role == "annotator":
        return TaskType(task).value
    found = sorted(n for n, s in starters().items() if s.task == task and s.role == role)
    if len(found) != 1:
        raise UserError(
            f"no {role} starter for {task}; give the templates (--user/--user-file)"
            if not found
            else f"several {role} starters for {task} ({', '.join(found)}); pick one with --from"
        )
    return found[0]
