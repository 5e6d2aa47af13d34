"""Audit sessions and evaluation runs join the migrated schema (they were made by create_all before).

A catalog from the previous build may already hold either table, made by metadata.create_all with
this same layout: such a table is kept with its rows, not created again. eval_runs gains
dataset_hash (nullable: runs saved before it have none).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "audit_sessions" not in existing:
        op.create_table(
            "audit_sessions",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
            sa.Column("rerun_of", sa.String(32), nullable=True),
            sa.Column("model_name", sa.String(200), nullable=False),
            sa.Column("model_fingerprint", sa.String(64), nullable=False, index=True),
            sa.Column("dataset_source", sa.Text, nullable=False),
            sa.Column("dataset_sha256", sa.String(64), nullable=False, index=True),
            sa.Column("split", sa.String(32), nullable=True),
            sa.Column("n_images", sa.Integer, nullable=False),
            sa.Column("label_sets", sa.String(400), nullable=False),
            sa.Column("result_json", sa.Text, nullable=False),
        )
    if "eval_runs" not in existing:
        op.create_table(
            "eval_runs",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
            sa.Column("kind", sa.String(32), nullable=False),
            sa.Column("model_name", sa.String(200), nullable=False),
            sa.Column("model_fingerprint", sa.String(64), nullable=False, index=True),
            sa.Column("dataset", sa.Text, nullable=False),
            sa.Column("dataset_hash", sa.String(64), nullable=True, index=True),
            sa.Column("metrics_json", sa.Text, nullable=False),
        )
    elif "dataset_hash" not in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("eval_runs")}:
        op.add_column("eval_runs", sa.Column("dataset_hash", sa.String(64), nullable=True))
        op.create_index("ix_eval_runs_dataset_hash", "eval_runs", ["dataset_hash"])


def downgrade() -> None:
    op.drop_table("eval_runs")
    op.drop_table("audit_sessions")
