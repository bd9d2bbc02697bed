"""Shared setup for the people, queue and web tests: small datasets whose reference outputs
are easy to spot, people of each role, and a queue or two."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.conftest import CLI
from tuneloop.store.db import Store
from tuneloop.store.models import Answer, Dataset, Label, QueueItem, Record
from tuneloop.workflows.users import Actor, add_user, list_users

PASSWORD = "correct horse battery"


@pytest.fixture
def fast_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with tiny costs, so that tests that sign in often stay fast."""
    from argon2 import PasswordHasher

    from tuneloop.workflows import users

    hasher = PasswordHasher(time_cost=1, memory_cost=256, parallelism=1)
    monkeypatch.setattr(users, "_hasher", lambda: hasher)
    monkeypatch.setattr(users, "_dummy_hash", lambda: hasher.hash("dummy password"))


GOLD = "GOLD-REFERENCE"  # in every reference output: must never reach an annotator


def import_reviews(cli: CLI, tmp_path: Path, n: int = 12) -> None:
    """``reviews``: classification (pos/neg) with gold labels, splits and a 2-record gold slice."""
    path = tmp_path / "reviews.jsonl"
    with path.open("w") as f:
        for i in range(n):
            label = "pos" if i % 2 else "neg"
            f.write(json.dumps({"id": f"r{i}", "text": f"review number {i}", "label": label}))
            f.write("\n")
    code, _, err = cli(
        "data",
        "import",
        str(path),
        "--task",
        "classification",
        "--labels",
        "pos,neg",
        "--dedupe",
        "none",
        "--split",
        "0.5,0.25,0.25",
        "--gold",
        "2",
    )
    assert code == 0, err


def import_answers(cli: CLI, tmp_path: Path, n: int = 6) -> None:
    """``answers``: open QA whose reference answers all contain GOLD."""
    path = tmp_path / "answers.jsonl"
    with path.open("w") as f:
        for i in range(n):
            row = {"id": f"q{i}", "question": f"question {i}?", "answer": f"{GOLD} {i}"}
            f.write(json.dumps(row) + "\n")
    code, _, err = cli("data", "import", str(path), "--task", "open_qa", "--dedupe", "none")
    assert code == 0, err


def add_people(store: Store) -> dict[str, Actor]:
    """admin ada, reviewer rita, annotators alice, bob and carol."""
    for name, role in (
        ("ada", "admin"),
        ("rita", "reviewer"),
        ("alice", "annotator"),
        ("bob", "annotator"),
        ("carol", "annotator"),
    ):
        add_user(store, name, role, PASSWORD)
    return {u.username: Actor(u.id, u.username, u.role) for u in list_users(store)}


def record_ids(store: Store, dataset: str) -> list[int]:
    with store.transaction() as session:
        ds_id = session.scalar(select(Dataset.id).where(Dataset.name == dataset))
        return list(
            session.scalars(
                select(Record.id).where(Record.dataset_id == ds_id).order_by(Record.position)
            )
        )


def add_llm_labels(store: Store, ids: list[int], value: str = "pos") -> None:
    with store.transaction() as session:
        for rid in ids:
            session.add(Label(record_id=rid, value=value, source="llm", status="accepted"))


def answer_counts_agree(store: Store) -> int:
    """Every queue item's stored ``answer_count`` equals its answers; how many answers there
    are in all (so that a caller can tell that something was counted)."""
    with store.transaction() as session:
        stored = {i: n for i, n in session.execute(select(QueueItem.id, QueueItem.answer_count))}
        per_item = select(Answer.queue_item_id, func.count()).group_by(Answer.queue_item_id)
        real = {i: n for i, n in session.execute(per_item)}
    wrong = {i: (n, real.get(i, 0)) for i, n in stored.items() if n != real.get(i, 0)}
    assert not wrong, f"item: (stored answer_count, answers) {wrong}"
    return sum(real.values())
