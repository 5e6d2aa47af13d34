"""models.preprocessing: the image preprocessing (engine.images.Preprocess.record(): resolution, resize
size, mean/std, resize mode, interpolation) a model's library embeddings were made under, so that a
library made under other preprocessing is re-embedded, never mixed. Nullable: libraries indexed before
it was recorded were made with the reference transform, and say so on the next `cliplab index`.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("preprocessing", sa.Text(), nullable=True))


NATIVE_DROP_COLUMN = (3, 35, 0)  # the first SQLite with ALTER TABLE ... DROP COLUMN
REFERRING = ("embeddings", "vector_indexes")  # tables whose rows ON DELETE CASCADE would take with `models`


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite" or bind.dialect.dbapi.sqlite_version_info >= NATIVE_DROP_COLUMN:
        op.drop_column("models", "preprocessing")
        return
    # An older SQLite rebuilds the table, and dropping the old one would delete the rows that refer to
    # it (as in 0006): keep them aside and put them back.
    for table in REFERRING:
        op.execute(f"CREATE TEMPORARY TABLE kept_{table} AS SELECT * FROM {table}")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("preprocessing")
    for table in REFERRING:
        op.execute(f"INSERT OR IGNORE INTO {table} SELECT * FROM kept_{table}")
        op.execute(f"DROP TABLE kept_{table}")
