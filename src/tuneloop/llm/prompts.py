"""Rendering prompt templates (Jinja) into chat messages, and checking their placeholders
against the task. Pure.

The contract (what a template may use):

- an **annotator** prompt: the task's input fields (``None`` when a record lacks an optional
  one, so ``{% if context %}`` works) and ``labels`` (the dataset's declared label list). Never
  an output field: the annotator must not see the answer.
- a **judge** prompt: the task's input fields, ``output`` (the answer being judged),
  ``reference`` (the reference output, may be ``None``) and ``levels`` (the rating scale, five
  level names, worst first).

Templates run in Jinja's sandbox with ``StrictUndefined`` (a misspelt name is an error, not an
empty string), ``trim_blocks`` and ``lstrip_blocks`` (a line holding only a ``{% ... %}`` tag
leaves no blank line behind).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from tuneloop.errors import UserError
from tuneloop.llm.types import Message
from tuneloop.tasks import TaskSpec, task_spec

_ENV = SandboxedEnvironment(
    undefined=StrictUndefined, keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True
)

ROLES = ("annotator", "judge")
ANNOTATOR_VARIABLES = ("labels",)
JUDGE_VARIABLES = ("output", "reference", "levels")


def render(template: str, fields: Mapping[str, Any], labels: Sequence[str]) -> str:
    """Render one template with the record's fields and ``labels`` (the declared label set)."""
    try:
        return _ENV.from_string(template).render({**fields, "labels": list(labels)})
    except TemplateError as exc:
        raise UserError(f"prompt template: {exc}") from None


def render_messages(
    system_template: str | None,
    user_template: str,
    fields: Mapping[str, Any],
    labels: Sequence[str] = (),
    *,
    task: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[Message]:
    """The chat messages (system, if any, then user) for one record.

    With ``task``, the templates see exactly the task's declared inputs (``None`` where the
    record lacks one), never its outputs; without it, every field of ``fields``. ``extra`` adds
    variables beyond the record (a judge's ``output``, ``reference`` and ``levels``).
    """
    if task is None:
        values = dict(fields)
    else:
        values = {name: fields.get(name) for name in _spec(task).inputs}
    values.update(extra or {})
    messages: list[Message] = []
    if system_template:
        messages.append({"role": "system", "content": render(system_template, values, labels)})
    messages.append({"role": "user", "content": render(user_template, values, labels)})
    return messages


def _spec(task: str) -> TaskSpec:
    try:
        return task_spec(task)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _variables(template: str, where: str) -> set[str]:
    try:
        parsed = _ENV.parse(template)
    except TemplateSyntaxError as exc:
        raise UserError(f"{where}, line {exc.lineno}: {exc.message}") from None
    return set(meta.find_undeclared_variables(parsed)) - set(_ENV.globals)


def template_variables(template: str) -> set[str]:
    """The variables a template reads from its context (loop variables and Jinja's own globals
    such as ``range`` excluded). A syntax error is a ``UserError`` naming the line."""
    return _variables(template, "prompt template")


def allowed_placeholders(task: str, role: str) -> set[str]:
    """The variables a template of this task and role may use (see the module docstring)."""
    spec = _spec(task)
    if role == "annotator":
        return set(spec.inputs) | set(ANNOTATOR_VARIABLES)
    if role == "judge":
        return set(spec.inputs) | set(JUDGE_VARIABLES)
    raise UserError(f"unknown prompt role {role!r}; roles: {', '.join(ROLES)}")


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"'{n}'" for n in sorted(names))


def check_placeholders(task: str, role: str, system: str | None, user: str) -> None:
    """Raise one ``UserError`` for the first template (system, then user) that has a syntax
    error or uses a variable the task and role do not provide; also when the prompt never
    shows the record (an annotator using no input field, a judge not using ``output``)."""
    spec = _spec(task)
    allowed = allowed_placeholders(task, role)
    listing = ", ".join(sorted(allowed))
    used: set[str] = set()
    for part, template in (("system", system), ("user", user)):
        if not template:
            continue
        where = f"prompt {part} template"
        found = _variables(template, where)
        used |= found
        outputs = sorted(found & set(spec.outputs))
        if outputs:
            what = "field" if len(outputs) == 1 else "fields"
            if role == "annotator":
                why = "an annotator prompt must not see the answer it is asked for"
            else:
                why = "a judge prompt gets the answer being judged as 'output' and the "
                why += "reference answer as 'reference'"
            raise UserError(
                f"{where}: {_names(outputs)} is the task's output {what}; {why}; allowed: {listing}"
            )
        unknown = sorted(found - allowed)
        if unknown:
            noun = "placeholder" if len(unknown) == 1 else "placeholders"
            message = f"{where}: unknown {noun} {_names(unknown)}; allowed: {listing}"
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, sorted(allowed), n=1, cutoff=0.6)
                if close:
                    hints.append((name, close[0]))
            if len(unknown) == 1 and hints:
                message += f"; did you mean '{hints[0][1]}'?"
            elif hints:
                message += "; did you mean " + ", ".join(f"'{b}' for '{a}'" for a, b in hints)
                message += "?"
            raise UserError(message)
    if role == "annotator" and not used & set(spec.inputs):
        shown = ", ".join("{{ " + name + " }}" for name in spec.inputs)
        raise UserError(f"the prompt never shows the record: use at least one of {shown}")
    if role == "judge" and "output" not in used:
        raise UserError("a judge prompt must show the answer being judged: use {{ output }}")
