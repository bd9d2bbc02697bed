"""queue_item.answer_count: each item's number of answers, filled in from the answers there are

Revision ID: 0006_queue_item_answer_count
Revises: 0005_annotation_queues
Create Date: 2026-11-22 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_queue_item_answer_count"
down_revision = "0005_annotation_queues"
branch_labels = None
depends_on = None


# Plain ALTER TABLE on every database: a batch rebuild on SQLite would drop the old table, and
# with foreign keys on that deletes every answer (ON DELETE CASCADE).


def upgrade() -> None:
    op.add_column(
        "queue_item", sa.Column("answer_count", sa.Integer(), server_default="0", nullable=False)
    )
    op.execute(
        "UPDATE queue_item SET answer_count = "
        "(SELECT count(*) FROM answer WHERE answer.queue_item_id = queue_item.id)"
    )


def downgrade() -> None:
    op.drop_column("queue_item", "answer_count")
