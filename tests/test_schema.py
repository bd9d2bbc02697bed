"""The migrated schema is pinned: on SQLite and PostgreSQL it equals tests/data/schema.json,
and the SQLAlchemy models agree with the migrations (autogenerate finds nothing to do).

After a deliberate schema change (a new migration), refresh the pin with
``TUNELOOP_UPDATE_SCHEMA=1 pytest tests/test_schema.py -k sqlite`` and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, types

from tests.people import fast_hashing  # noqa: F401
from tuneloop.store.db import Store, current_revision, head_revision
from tuneloop.store.models import Base

SNAPSHOT = Path(__file__).parent / "data" / "schema.json"


def _kind(t: Any) -> str:
    for cls, name in (
        (types.Boolean, "boolean"),
        (types.BigInteger, "integer"),
        (types.Integer, "integer"),
        (types.Float, "float"),
        (types.DateTime, "datetime"),
        (types.JSON, "json"),
        (types.Text, "text"),
        (types.String, "string"),
    ):
        if isinstance(t, cls):
            if name == "string" and getattr(t, "length", None):
                return f"string({t.length})"
            return name
    return type(t).__name__.lower()


def describe(engine: Engine) -> dict[str, Any]:
    insp = inspect(engine)
    tables: dict[str, Any] = {}
    for name in sorted(insp.get_table_names()):
        if name == "alembic_version":
            continue
        tables[name] = {
            "columns": {
                c["name"]: f"{_kind(c['type'])}{'' if c['nullable'] else ' not null'}"
                for c in insp.get_columns(name)
            },
            "primary_key": insp.get_pk_constraint(name)["constrained_columns"],
            "foreign_keys": sorted(
                f"{','.join(fk['constrained_columns'])} -> {fk['referred_table']}"
                f"({','.join(fk['referred_columns'])}) on delete "
                f"{(fk.get('options') or {}).get('ondelete', 'NO ACTION').upper()}"
                for fk in insp.get_foreign_keys(name)
            ),
            "unique": sorted(
                ",".join(u["column_names"]) for u in insp.get_unique_constraints(name)
            ),
            "indexes": sorted(
                ",".join(str(c) for c in ix["column_names"])
                for ix in insp.get_indexes(name)
                if not ix.get("unique")
            ),
        }
    return tables


def test_migrated_schema_is_pinned(store: Store) -> None:
    assert current_revision(store.engine) == head_revision()
    actual = describe(store.engine)
    if os.environ.get("TUNELOOP_UPDATE_SCHEMA") == "1" and store.engine.dialect.name == "sqlite":
        SNAPSHOT.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(SNAPSHOT.read_text())


def test_models_match_migrations(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_opening_twice_is_a_no_op(store: Store, db_url: str) -> None:
    from tuneloop.store.db import open_store

    again = open_store(db_url)
    assert current_revision(again.engine) == head_revision()
    again.dispose()


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    from tuneloop.store.db import open_store

    s = open_store(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    s.dispose()


@pytest.mark.usefixtures("fast_hashing")
def test_answer_counts_are_filled_in_by_the_migration(store: Store) -> None:
    """A database from before ``queue_item.answer_count`` gets each item's count of answers."""
    from alembic import command
    from sqlalchemy import select, update

    from tests.people import add_people, answer_counts_agree
    from tuneloop.store.db import alembic_config
    from tuneloop.store.models import QueueItem
    from tuneloop.workflows.answering import submit
    from tuneloop.workflows.queue_items import NewItem
    from tuneloop.workflows.queues import QueueSpec, create_queue

    people = add_people(store)
    labels = {"labels": ["a", "b"]}
    spec = QueueSpec("q", "label", options=labels, annotators_per_item=2, members=["alice", "bob"])
    queue = create_queue(store, spec, [NewItem(None, [{"model": "m", "text": "t"}])] * 3)
    with store.transaction() as session:
        items = list(session.scalars(select(QueueItem.id).order_by(QueueItem.position)))
    for who, item in (("alice", items[0]), ("bob", items[0]), ("alice", items[1])):
        submit(store, people[who], queue.id, item, {"label": "a"})
    with store.transaction() as session:
        session.execute(update(QueueItem).values(answer_count=0))  # as if never counted
    config = alembic_config(store.engine)
    command.downgrade(config, "0005_annotation_queues")
    command.upgrade(config, "head")
    assert answer_counts_agree(store) == 3
    with store.transaction() as session:
        counts = session.scalars(select(QueueItem.answer_count).order_by(QueueItem.position))
        assert list(counts) == [2, 1, 0]
