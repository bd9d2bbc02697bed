"""prompt_verdict (eyeball verdicts) and eval_item (per-item evaluation results)

Revision ID: 0003_evaluation
Revises: 0002_record_hash_index
Create Date: 2026-11-21 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_evaluation"
down_revision = "0002_record_hash_index"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "prompt_verdict",
        sa.Column("id", ID, nullable=False),
        sa.Column("prompt_version_id", ID, nullable=False),
        sa.Column("record_id", ID, nullable=False),
        sa.Column("label_id", ID, nullable=True),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("verdict", sa.String(length=10), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("author", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["label_id"],
            ["label.id"],
            name=op.f("fk_prompt_verdict_label_id_label"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["prompt_version_id"],
            ["prompt_version.id"],
            name=op.f("fk_prompt_verdict_prompt_version_id_prompt_version"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["record.id"],
            name=op.f("fk_prompt_verdict_record_id_record"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_verdict")),
        sa.UniqueConstraint(
            "prompt_version_id",
            "record_id",
            name=op.f("uq_prompt_verdict_prompt_version_id_record_id"),
        ),
    )
    op.create_table(
        "eval_item",
        sa.Column("id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("record_id", ID, nullable=False),
        sa.Column("label_id", ID, nullable=True),
        sa.Column("prediction", sa.JSON(), nullable=True),
        sa.Column("reference", sa.JSON(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("judge_score", sa.Float(), nullable=True),
        sa.Column("judge_status", sa.String(length=20), nullable=True),
        sa.Column("judge_rationale", sa.Text(), nullable=True),
        sa.Column("judge_call_id", ID, nullable=True),
        sa.ForeignKeyConstraint(
            ["judge_call_id"],
            ["llm_call.id"],
            name=op.f("fk_eval_item_judge_call_id_llm_call"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["label_id"],
            ["label.id"],
            name=op.f("fk_eval_item_label_id_label"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["record.id"],
            name=op.f("fk_eval_item_record_id_record"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["run.id"], name=op.f("fk_eval_item_run_id_run"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_item")),
        sa.UniqueConstraint("run_id", "record_id", name=op.f("uq_eval_item_run_id_record_id")),
    )


def downgrade() -> None:
    op.drop_table("eval_item")
    op.drop_table("prompt_verdict")
