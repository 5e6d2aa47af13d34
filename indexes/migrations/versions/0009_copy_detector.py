"""copy_descriptors: the copy detector's descriptors of library photos (engine.copydetect), made once
per content for the near-duplicate finder and overlap runs against a library; overlap_decisions: the
pairs (evaluation image, reference image) a person confirmed as copies or rejected.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "copy_descriptors",
        sa.Column("file_id", sa.Integer(), sa.ForeignKey("files.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("detector", sa.String(40), nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("descriptor", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "overlap_decisions",
        sa.Column("eval_key", sa.String(32), primary_key=True),
        sa.Column("reference_key", sa.String(32), primary_key=True),
        sa.Column("is_copy", sa.Integer(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("overlap_decisions")
    op.drop_table("copy_descriptors")
