"""Humans in the loop: annotation queues (items, members, answers, claims, adjudications) and
the web app's sessions and login attempts

Revision ID: 0005_annotation_queues
Revises: 0004_train_step
Create Date: 2026-11-22 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_annotation_queues"
down_revision = "0004_train_step"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _fk(table: str, column: str, target: str, ondelete: str | None) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [f"{target}.id"],
        name=op.f(f"fk_{table}_{column}_{target}"),
        ondelete=ondelete,
    )


def upgrade() -> None:
    op.create_table(
        "login_attempt",
        sa.Column("id", ID, nullable=False),
        sa.Column("username", sa.String(length=200), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempt")),
    )
    op.create_index(
        op.f("ix_login_attempt_username_ip_created_at"),
        "login_attempt",
        ["username", "ip", "created_at"],
    )
    op.create_table(
        "web_session",
        sa.Column("id", ID, nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        _fk("web_session", "user_id", "user_account", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_web_session_token_hash")),
    )
    op.create_index(op.f("ix_web_session_user_id"), "web_session", ["user_id"])
    op.create_table(
        "queue",
        sa.Column("id", ID, nullable=False),
        sa.Column("project_id", ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("question", sa.String(length=20), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("guidelines", sa.Text(), nullable=True),
        sa.Column("annotators_per_item", sa.Integer(), nullable=False),
        sa.Column("show_suggestions", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("dataset_id", ID, nullable=True),
        sa.Column("created_by", ID, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _fk("queue", "created_by", "user_account", "SET NULL"),
        _fk("queue", "dataset_id", "dataset", "SET NULL"),
        _fk("queue", "project_id", "project", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_queue_project_id_name")),
    )
    op.create_table(
        "queue_item",
        sa.Column("id", ID, nullable=False),
        sa.Column("queue_id", ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("record_id", ID, nullable=True),
        sa.Column("responses", sa.JSON(), nullable=True),
        sa.Column("suggestion", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _fk("queue_item", "queue_id", "queue", "CASCADE"),
        _fk("queue_item", "record_id", "record", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_item")),
        sa.UniqueConstraint("queue_id", "position", name=op.f("uq_queue_item_queue_id_position")),
    )
    op.create_index(op.f("ix_queue_item_record_id"), "queue_item", ["record_id"])
    op.create_table(
        "queue_member",
        sa.Column("id", ID, nullable=False),
        sa.Column("queue_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _fk("queue_member", "queue_id", "queue", "CASCADE"),
        _fk("queue_member", "user_id", "user_account", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_member")),
        sa.UniqueConstraint("queue_id", "user_id", name=op.f("uq_queue_member_queue_id_user_id")),
    )
    op.create_index(op.f("ix_queue_member_user_id"), "queue_member", ["user_id"])
    op.create_table(
        "adjudication",
        sa.Column("id", ID, nullable=False),
        sa.Column("queue_item_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _fk("adjudication", "queue_item_id", "queue_item", "CASCADE"),
        _fk("adjudication", "user_id", "user_account", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjudication")),
        sa.UniqueConstraint("queue_item_id", name=op.f("uq_adjudication_queue_item_id")),
    )
    op.create_table(
        "answer",
        sa.Column("id", ID, nullable=False),
        sa.Column("queue_item_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _fk("answer", "queue_item_id", "queue_item", "CASCADE"),
        _fk("answer", "user_id", "user_account", None),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_answer")),
        sa.UniqueConstraint(
            "queue_item_id", "user_id", name=op.f("uq_answer_queue_item_id_user_id")
        ),
    )
    op.create_index(op.f("ix_answer_user_id"), "answer", ["user_id"])
    op.create_table(
        "queue_claim",
        sa.Column("id", ID, nullable=False),
        sa.Column("queue_item_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("draft", sa.JSON(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _fk("queue_claim", "queue_item_id", "queue_item", "CASCADE"),
        _fk("queue_claim", "user_id", "user_account", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_claim")),
        sa.UniqueConstraint(
            "queue_item_id", "user_id", name=op.f("uq_queue_claim_queue_item_id_user_id")
        ),
    )
    op.create_index(op.f("ix_queue_claim_user_id"), "queue_claim", ["user_id"])


def downgrade() -> None:
    for table in (
        "queue_claim",
        "answer",
        "adjudication",
        "queue_member",
        "queue_item",
        "queue",
        "web_session",
        "login_attempt",
    ):
        op.drop_table(table)
