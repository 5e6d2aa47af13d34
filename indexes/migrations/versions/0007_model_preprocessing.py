"""models.preprocessing: the image preprocessing (engine.images.Preprocess.record(): resolution, resize
size, mean/std, resize mode, interpolation) a model's library embeddings were made under, so that a
library made under other preprocessing is re-embedded, never mixed. Nullable: libraries indexed before
it was recorded were made with the reference transform, and say so on the next `cliplab index`.

Revision ID: 0007
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("preprocessing", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("preprocessing")
