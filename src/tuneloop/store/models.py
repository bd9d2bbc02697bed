"""The tables, designed for the whole loop: data, labels, prompts, LLM calls, runs and models.

Schema changes go through Alembic migrations in ``store/migrations/versions`` (named and
ordered); ``tests/test_schema.py`` pins the migrated schema on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


_ID = BigInteger().with_variant(Integer, "sqlite")


class Project(Base):
    __tablename__ = "project"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    """A person who labels, rates or reviews (the web app adds passwords and sessions)."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(20))  # admin | reviewer | annotator
    password_hash: Mapped[str | None] = mapped_column(String(400))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Dataset(Base):
    """One immutable version of a named dataset: its records never change after import,
    except that splits may be assigned once. Re-splitting or de-duplicating makes a new
    version whose ``parent_id`` points here."""

    __tablename__ = "dataset"
    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    task_type: Mapped[str] = mapped_column(String(40))
    labels: Mapped[list[Any] | None] = mapped_column(JSON)
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    licence: Mapped[str | None] = mapped_column(String(400))
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    split_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("dataset.id", ondelete="SET NULL"))
    record_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    project: Mapped[Project] = relationship()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class Record(Base):
    """One task record: the task's fields (inputs and, when known, the reference output)."""

    __tablename__ = "record"
    __table_args__ = (
        # content hash first: the import's duplicate check looks hashes up without dataset_id,
        # so no planner (PostgreSQL with no statistics yet) can pick the split index instead
        Index(None, "content_hash", "dataset_id"),
        Index(None, "dataset_id", "split"),
        UniqueConstraint("dataset_id", "position"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("dataset.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # order within the dataset version
    external_id: Mapped[str | None] = mapped_column(String(400))
    fields: Mapped[dict[str, Any]] = mapped_column()
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    split: Mapped[str | None] = mapped_column(String(20))
    content_hash: Mapped[str] = mapped_column(String(64))
    input_chars: Mapped[int] = mapped_column(Integer, default=0)
    source_location: Mapped[str | None] = mapped_column(Text)


class PromptVersion(Base):
    """A versioned prompt (Jinja templates) for a task; edits make children."""

    __tablename__ = "prompt_version"
    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    task_type: Mapped[str] = mapped_column(String(40))
    role: Mapped[str] = mapped_column(String(20), default="annotator")  # annotator | judge
    system_template: Mapped[str | None] = mapped_column(Text)
    user_template: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompt_version.id", ondelete="SET NULL")
    )
    author: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Run(Base):
    """Any workflow run (import, annotate, evaluate, train, ...): what, how, and how it went."""

    __tablename__ = "run"

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="running")
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("dataset.id", ondelete="SET NULL"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("run.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LLMCall(Base):
    """Every LLM call: the audit trail, the cache (by ``cache_key``) and data."""

    __tablename__ = "llm_call"
    __table_args__ = (Index(None, "cache_key"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    family: Mapped[str] = mapped_column(String(40))
    messages: Mapped[list[Any]] = mapped_column(JSON)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output: Mapped[str | None] = mapped_column(Text)
    output_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # logprobs, label scores
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelEntry(Base):
    """A model tuneloop knows, with its lineage: base, data, prompt, config and parent."""

    __tablename__ = "model"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # base | sft | reward | dpo | guard
    family: Mapped[str] = mapped_column(String(40))
    base_model: Mapped[str | None] = mapped_column(String(400))
    path: Mapped[str | None] = mapped_column(Text)
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("dataset.id", ondelete="SET NULL"))
    prompt_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompt_version.id", ondelete="SET NULL")
    )
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id", ondelete="SET NULL"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model.id", ondelete="SET NULL"))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    label_sources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Label(Base):
    """An annotation of a record: from a person (``user_id``), an LLM (``llm_call_id``), a
    model, or an import. ``status`` says whether it counts: accepted, suggested (an LLM
    suggestion shown to a person), needs_review (an answer outside the label set), rejected."""

    __tablename__ = "label"
    __table_args__ = (
        Index(None, "record_id"),
        Index(None, "run_id"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("record.id", ondelete="CASCADE"))
    value: Mapped[Any] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(20))  # human | llm | model | import
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    llm_call_id: Mapped[int | None] = mapped_column(ForeignKey("llm_call.id", ondelete="SET NULL"))
    prompt_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("prompt_version.id", ondelete="SET NULL")
    )
    model_id: Mapped[int | None] = mapped_column(ForeignKey("model.id", ondelete="SET NULL"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(20), default="accepted")
    confidence: Mapped[float | None] = mapped_column(Float)
    raw_output: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class PromptVerdict(Base):
    """A reviewer's eyeball verdict on one output of a prompt version: good or bad, a note."""

    __tablename__ = "prompt_verdict"
    __table_args__ = (UniqueConstraint("prompt_version_id", "record_id"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    prompt_version_id: Mapped[int] = mapped_column(
        ForeignKey("prompt_version.id", ondelete="CASCADE")
    )
    record_id: Mapped[int] = mapped_column(ForeignKey("record.id", ondelete="CASCADE"))
    label_id: Mapped[int | None] = mapped_column(ForeignKey("label.id", ondelete="SET NULL"))
    output: Mapped[Any] = mapped_column(JSON, nullable=True)
    verdict: Mapped[str] = mapped_column(String(10))  # good | bad
    note: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EvalItem(Base):
    """One item of an evaluation run: the prediction, the reference, its scores and, for
    generative tasks, the judge's rating (0..4) with its rationale."""

    __tablename__ = "eval_item"
    __table_args__ = (UniqueConstraint("run_id", "record_id"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    record_id: Mapped[int] = mapped_column(ForeignKey("record.id", ondelete="CASCADE"))
    label_id: Mapped[int | None] = mapped_column(ForeignKey("label.id", ondelete="SET NULL"))
    prediction: Mapped[Any] = mapped_column(JSON, nullable=True)
    reference: Mapped[Any] = mapped_column(JSON, nullable=True)
    score: Mapped[float | None] = mapped_column(Float)  # the item's primary score
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    confidence: Mapped[float | None] = mapped_column(Float)
    judge_score: Mapped[float | None] = mapped_column(Float)
    judge_status: Mapped[str | None] = mapped_column(String(20))  # accepted | needs_review
    judge_rationale: Mapped[str | None] = mapped_column(Text)
    judge_call_id: Mapped[int | None] = mapped_column(
        ForeignKey("llm_call.id", ondelete="SET NULL")
    )


class TrainStep(Base):
    """One optimizer step of a training run: its loss, learning rate and speed."""

    __tablename__ = "train_step"
    __table_args__ = (UniqueConstraint("run_id", "step"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)
    tokens_per_second: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Queue(Base):
    """A human annotation queue: items (records, optionally with model responses), one question
    type with its options and guidelines, and an assignment policy: how many distinct people
    answer each item (``annotators_per_item``) and who may (``queue_member``)."""

    __tablename__ = "queue"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    # label | multilabel | rating | pairwise | ranking | feedback | correction
    question: Mapped[str] = mapped_column(String(20))
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)  # labels, rubric, ...
    guidelines: Mapped[str | None] = mapped_column(Text)
    annotators_per_item: Mapped[int] = mapped_column(Integer, default=1)
    show_suggestions: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | closed
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("dataset.id", ondelete="SET NULL"))
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class QueueMember(Base):
    """A person assigned to a queue (only members see and answer it)."""

    __tablename__ = "queue_member"
    __table_args__ = (UniqueConstraint("queue_id", "user_id"), Index(None, "user_id"))

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queue.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class QueueItem(Base):
    """One thing to answer: a record, optionally with model responses (``[{"model", "text"}]``,
    shown to people without the model names) and an LLM suggestion (shown only where the queue
    enables suggestions; never counted as an answer)."""

    __tablename__ = "queue_item"
    __table_args__ = (UniqueConstraint("queue_id", "position"), Index(None, "record_id"))

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queue.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    record_id: Mapped[int | None] = mapped_column(ForeignKey("record.id", ondelete="CASCADE"))
    responses: Mapped[list[Any] | None] = mapped_column(JSON)
    suggestion: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # how many answers the item has: kept by every write of an answer (under the queue's lock),
    # so that finding the next open item reads one column instead of counting answers per item
    answer_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Answer(Base):
    """One person's answer to a queue item, as a structured value (e.g. ``{"label": "pos"}``,
    ``{"rating": 4}``, ``{"choice": "A"}``), from the web app or an import (``source``)."""

    __tablename__ = "answer"
    __table_args__ = (UniqueConstraint("queue_item_id", "user_id"), Index(None, "user_id"))

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    queue_item_id: Mapped[int] = mapped_column(ForeignKey("queue_item.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    value: Mapped[Any] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(40), default="web")  # web | api | import:<tool>
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. the suggestion shown
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Adjudication(Base):
    """A reviewer's final answer for a queue item where annotators disagreed."""

    __tablename__ = "adjudication"
    __table_args__ = (UniqueConstraint("queue_item_id"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    queue_item_id: Mapped[int] = mapped_column(ForeignKey("queue_item.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    value: Mapped[Any] = mapped_column(JSON)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class QueueClaim(Base):
    """A person's hold on an item: ``working`` (served to them until ``expires_at``, so no more
    than the policy's number of people work on it at once; ``draft`` keeps an undone answer) or
    ``skipped`` (not served to them again until they reset their skips)."""

    __tablename__ = "queue_claim"
    __table_args__ = (UniqueConstraint("queue_item_id", "user_id"), Index(None, "user_id"))

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    queue_item_id: Mapped[int] = mapped_column(ForeignKey("queue_item.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20))  # working | skipped
    draft: Mapped[Any] = mapped_column(JSON, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebSession(Base):
    """A signed-in browser: the cookie holds a random token, the table only its sha256."""

    __tablename__ = "web_session"
    __table_args__ = (UniqueConstraint("token_hash"), Index(None, "user_id"))

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LoginAttempt(Base):
    """A sign-in attempt, kept for rate limiting per username and client address."""

    __tablename__ = "login_attempt"
    __table_args__ = (Index(None, "username", "ip", "created_at"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True)
    username: Mapped[str] = mapped_column(String(200))
    ip: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
