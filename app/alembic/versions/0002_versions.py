"""Versions of a song: a job's parent job, its family's root and its version number.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The foreign key is written into the column itself (inline_references): SQLite cannot add a constraint
    # to an existing table, and a batch-mode copy of ``jobs`` would drop the table, which (foreign keys on)
    # deletes every job's events through their ON DELETE CASCADE.
    op.add_column("jobs", sa.Column("parent_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="SET NULL"),
                                    nullable=True), inline_references=True)
    op.add_column("jobs", sa.Column("root_id", sa.String(36), nullable=True))
    op.add_column("jobs", sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    # Every job so far is an original: the root of its own family.
    op.execute("UPDATE jobs SET root_id = id WHERE root_id IS NULL")
    op.create_index("ix_jobs_parent_id", "jobs", ["parent_id"])
    op.create_index("ix_jobs_root_id", "jobs", ["root_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_root_id", table_name="jobs")
    op.drop_index("ix_jobs_parent_id", table_name="jobs")
    if op.get_bind().dialect.name != "sqlite":
        for column in ("version", "root_id", "parent_id"):  # parent_id's foreign key goes with it
            op.drop_column("jobs", column)
        return
    # SQLite cannot drop a column that has a foreign key: the table is copied without them (batch mode).
    # Dropping the old table fires job_events' ON DELETE CASCADE, so the events are kept aside and put back.
    op.execute("CREATE TEMPORARY TABLE job_events_kept AS SELECT * FROM job_events")
    with op.batch_alter_table("jobs", recreate="always") as batch:
        for column in ("version", "root_id", "parent_id"):
            batch.drop_column(column)
    op.execute("DELETE FROM job_events")
    op.execute("INSERT INTO job_events SELECT * FROM job_events_kept")
    op.execute("DROP TABLE job_events_kept")
