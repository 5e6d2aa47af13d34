"""models.mode: the inference mode (fp32, onnx-int8, ...) a model's library embeddings were computed
in, so that queries are embedded the same way. Nullable: catalogs from before record it on next use.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("mode", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("mode")
