"""Opening the database: SQLite (WAL) by default, PostgreSQL for teams; migrated on open."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from tuneloop.errors import UserError
from tuneloop.store.models import Project

MIGRATIONS = Path(__file__).parent / "migrations"


def normalize_url(url: str) -> str:
    """Plain ``postgresql://`` URLs use the psycopg (v3) driver that tuneloop installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise UserError(f"cannot parse database URL {url!r}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is there already)."""
    try:
        if current_revision(engine) == head_revision():
            return
    except Exception as exc:  # a server that is down, a wrong password, ...
        raise UserError(f"cannot open database {engine.url!r}: {exc}") from None
    command.upgrade(alembic_config(engine), "head")


@dataclass
class Store:
    """An open, migrated database."""

    engine: Engine
    sessions: sessionmaker[Session]

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commits at the end, rolls everything back on any error."""
        with self.sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, migrate_schema: bool = True) -> Store:
    engine = make_engine(url)
    if migrate_schema:
        migrate(engine)
    return Store(engine, sessionmaker(engine, expire_on_commit=False))


def lock_row(session: Session, id_column: InstrumentedAttribute[int], row_id: int) -> None:
    """Serialize this transaction with every other that locks the same row, until it ends:
    the reads that follow see everything committed before, and no other such transaction
    writes in between (check, then write, without a race). Call it before the transaction
    writes anything.

    PostgreSQL locks the row (``SELECT ... FOR UPDATE``). SQLite has one writer at a time for
    the whole database, so it takes the write lock now (``BEGIN IMMEDIATE``; the driver would
    otherwise begin the transaction only at its first write, after the reads)."""
    if session.get_bind().dialect.name == "sqlite":
        driver = session.connection().connection.dbapi_connection
        if driver is not None and not getattr(driver, "in_transaction", True):
            session.execute(text("BEGIN IMMEDIATE"))
        return
    session.execute(select(id_column).where(id_column == row_id).with_for_update())


def get_project(session: Session, name: str) -> Project:
    """The project of that name, created on first use."""
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name, settings={})
        session.add(project)
        session.flush()
    return project
