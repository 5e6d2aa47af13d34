"""Saved classifiers applied to the library: their labels per stored embedding row (applied_labels: a
photo's, or each frame of a video), what each
application is up to date with (classifier_runs), and the labels people confirmed or corrected
(labelled_examples, which keep the embedding so an example outlives its photo).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _keys() -> list[sa.Column]:
    return [sa.Column("classifier", sa.String(200), sa.ForeignKey("saved_classifiers.name", ondelete="CASCADE"),
                      primary_key=True),
            sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)]


def upgrade() -> None:
    op.create_table(
        "classifier_runs", *_keys(),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("model_version", sa.BigInteger, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "applied_labels", *_keys(),
        sa.Column("file_id", sa.Integer, sa.ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
        # the embedding row's frame (0 for a photo; a video's frames are rows of their own, migration 0013)
        sa.Column("frame", sa.Integer, primary_key=True, server_default="0"),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("label1", sa.Text, nullable=False),
        sa.Column("p1", sa.Float, nullable=False),
        sa.Column("label2", sa.Text, nullable=True),
        sa.Column("p2", sa.Float, nullable=True),
        sa.Column("label3", sa.Text, nullable=True),
        sa.Column("p3", sa.Float, nullable=True),
    )
    op.create_index("ix_applied_labels_label1", "applied_labels", ["classifier", "model_id", "label1", "p1"])
    op.create_table(
        "labelled_examples",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("classifier", sa.String(200), sa.ForeignKey("saved_classifiers.name", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("file_id", sa.Integer, sa.ForeignKey("files.id", ondelete="SET NULL"), nullable=True),
        sa.Column("frame", sa.Integer, nullable=False, server_default="0"),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("person", sa.Text, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("classifier", "model_id", "file_id", "frame"),
    )
    op.create_index("ix_labelled_examples_classifier", "labelled_examples", ["classifier"])


def downgrade() -> None:
    op.drop_index("ix_labelled_examples_classifier", table_name="labelled_examples")
    op.drop_table("labelled_examples")
    op.drop_index("ix_applied_labels_label1", table_name="applied_labels")
    op.drop_table("applied_labels")
    op.drop_table("classifier_runs")
