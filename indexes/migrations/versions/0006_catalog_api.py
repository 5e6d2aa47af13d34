"""Dead schema out: the text_embeddings table (never written: image -> text search embeds texts
through the prompt cache) and files.full_hash (unused since 0003 made the fingerprint a full hash).

Dropping a column on SQLite before 3.35 means rebuilding the table (batch mode), and dropping the old
`files` table then deletes every embedding through ON DELETE CASCADE; so where SQLite can drop the
column in place it does, and otherwise the embeddings are kept aside and put back after the rebuild.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NATIVE_DROP_COLUMN = (3, 35, 0)  # the first SQLite with ALTER TABLE ... DROP COLUMN


def _drops_columns_in_place(bind) -> bool:
    return bind.dialect.name != "sqlite" or bind.dialect.dbapi.sqlite_version_info >= NATIVE_DROP_COLUMN


def upgrade() -> None:
    op.drop_table("text_embeddings")
    if _drops_columns_in_place(op.get_bind()):
        op.drop_column("files", "full_hash")
        return
    op.execute("CREATE TEMPORARY TABLE kept_embeddings AS SELECT * FROM embeddings")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("full_hash")
    op.execute("INSERT OR IGNORE INTO embeddings SELECT * FROM kept_embeddings")
    op.execute("DROP TABLE kept_embeddings")


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:  # adding a nullable column never rebuilds the table
        batch.add_column(sa.Column("full_hash", sa.String(32), nullable=True))
    op.create_table(
        "text_embeddings",
        sa.Column("text_id", sa.Integer, sa.ForeignKey("texts.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
