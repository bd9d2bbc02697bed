"""The demo's review stage: people for the web app and a queue of the student's hardest items.

Reads top to bottom: make the demo's admin and annotator once (random passwords, written to a
file only the owner can read, never printed again) -> the student scores every validation record
(the same label scoring as evaluation; the calls are cached) -> the records it is least sure
about (lowest margin between its two likeliest labels) become a label queue assigned to the
annotator. A second demo reuses the people and the selection (same options, same queue).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.config import STATE_DIR
from tuneloop.llm.engine import Engine
from tuneloop.llm.factory import open_model
from tuneloop.store.db import Store
from tuneloop.workflows.evaluate import ModelRef
from tuneloop.workflows.feedback import SelectOptions, select_hard
from tuneloop.workflows.users import add_user, list_users

ADMIN = "demo-admin"
ANNOTATOR = "demo-annotator"
PASSWORDS_FILE = "demo-passwords.txt"
GUIDELINES = (
    "Is this movie review snippet fresh (the critic liked the film) or rotten (did not)? "
    "Judge the text alone; mixed reviews go by the overall verdict."
)


@dataclass
class ReviewStage:
    queue: str
    queue_id: int
    run_id: int
    reused: bool
    items: int
    scored: int
    people: dict[str, str]  # username -> role
    passwords: Path  # where the demo people's passwords are
    new_people: list[str]


def review_stage(
    store: Store,
    *,
    dataset: str,
    student: str,
    n: int,
    candidates: int | None,
    seed: int,
    project: str,
    project_dir: Path,
    say: Callable[[str], None],
    on_progress: Callable[[Any], None] | None = None,
) -> ReviewStage:
    """People and a review queue of the student's ``n`` hardest validation records (of a seeded
    sample of ``candidates``)."""
    passwords = project_dir / STATE_DIR / PASSWORDS_FILE
    new_people = _ensure_people(store, passwords)
    handle = open_model(student, project_dir, store=store)
    try:
        model = ModelRef(
            student,
            handle.family,
            lambda run_id: Engine(store, handle.provider, family=handle.family, run_id=run_id),
        )
        opts = SelectOptions(
            dataset=dataset,
            split="validation",
            strategy="uncertainty",
            n=n,
            candidates=candidates,
            question="label",
            queue=f"{dataset.split('@')[0]}-hard",
            seed=seed,
            members=[ANNOTATOR],
            guidelines=GUIDELINES,
            project=project,
        )
        selected = select_hard(store, opts, [model], on_progress=on_progress)
    finally:
        handle.close()
    verb = "reused" if selected.reused else "made"
    say(
        f"{verb} queue {selected.queue}: the {len(selected.chosen)} validation records "
        f"{student} is least sure about (of {selected.scored}), assigned to {ANNOTATOR}"
    )
    return ReviewStage(
        selected.queue,
        selected.queue_id,
        selected.run_id,
        selected.reused,
        len(selected.chosen),
        selected.scored,
        {ADMIN: "admin", ANNOTATOR: "annotator"},
        passwords,
        new_people,
    )


def _ensure_people(store: Store, passwords: Path) -> list[str]:
    """The demo's admin and annotator, made once; their passwords go to ``passwords`` (0600)."""
    have = {u.username for u in list_users(store)}
    made: list[str] = []
    lines: list[str] = []
    for username, role in ((ADMIN, "admin"), (ANNOTATOR, "annotator")):
        if username in have:
            continue
        password = secrets.token_urlsafe(12)
        add_user(store, username, role, password)
        made.append(username)
        lines.append(f"{username} ({role}): {password}\n")
    if lines:
        passwords.parent.mkdir(parents=True, exist_ok=True)
        passwords.touch(mode=0o600, exist_ok=True)
        passwords.chmod(0o600)
        with passwords.open("a", encoding="utf-8") as out:
            out.writelines(lines)
    return made
