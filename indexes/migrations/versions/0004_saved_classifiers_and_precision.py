"""Saved classifiers join the migrated schema; saved results record the precision they ran in.

saved_classifiers was made by metadata.create_all in the app (outside this chain) before: such a
table is kept with its rows and gains provenance_json; a database without it gets it created.
audit_sessions and eval_runs gain a nullable precision column (rows saved before it have none).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "saved_classifiers" not in existing:
        op.create_table(
            "saved_classifiers",
            sa.Column("name", sa.String(200), primary_key=True),
            sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("spec_json", sa.Text, nullable=False),
            sa.Column("provenance_json", sa.Text, nullable=True),
        )
    elif "provenance_json" not in _columns("saved_classifiers"):
        op.add_column("saved_classifiers", sa.Column("provenance_json", sa.Text, nullable=True))
    for table in ("audit_sessions", "eval_runs"):
        if "precision" not in _columns(table):
            op.add_column(table, sa.Column("precision", sa.String(8), nullable=True))


def downgrade() -> None:
    for table in ("eval_runs", "audit_sessions"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("precision")
    op.drop_table("saved_classifiers")
