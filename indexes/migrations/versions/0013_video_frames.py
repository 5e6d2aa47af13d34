"""Video in the library: each chosen frame of a video is an embedding row of its own.

embeddings gains `frame` (0 for a photo; 0, 1, ... in time order for a video's frames), part of the
primary key (file_id, model_id, frame), and `at_ms` (the frame's time from the video's start; NULL
for photos). files gains the video facts `duration_ms`, `fps` and `rotation` (NULL for photos).
Every existing embedding becomes frame 0 with its vector untouched.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _embeddings_table(name: str, frames: bool) -> None:
    columns = [
        sa.Column("file_id", sa.Integer, sa.ForeignKey("files.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    ]
    key = ["file_id", "model_id"]
    if frames:
        columns[2:2] = [sa.Column("frame", sa.Integer, nullable=False, server_default="0"),
                        sa.Column("at_ms", sa.BigInteger, nullable=True)]
        key.append("frame")
    op.create_table(name, *columns, sa.PrimaryKeyConstraint(*key))


def _swap_embeddings(frames: bool) -> None:
    """Rebuild embeddings with (or without) the frame key, keeping every row (a video's frames beyond
    the first cannot live in the old key: those are dropped on downgrade, and the video is embedded
    again by a later build's index run)."""
    shared = "file_id, model_id, vector, version"
    op.execute("DROP TABLE IF EXISTS embeddings_swap")
    _embeddings_table("embeddings_swap", frames)
    if frames:
        op.execute(f"INSERT INTO embeddings_swap ({shared}, frame) SELECT {shared}, 0 FROM embeddings")
    else:
        op.execute(f"INSERT INTO embeddings_swap ({shared}) SELECT {shared} FROM embeddings WHERE frame = 0")
    op.drop_index("ix_embeddings_model_id", table_name="embeddings")
    op.drop_table("embeddings")
    op.rename_table("embeddings_swap", "embeddings")
    op.create_index("ix_embeddings_model_id", "embeddings", ["model_id"])
    if op.get_bind().dialect.name == "postgresql":  # the key keeps the name a fresh table gets
        op.execute("ALTER TABLE embeddings RENAME CONSTRAINT embeddings_swap_pkey TO embeddings_pkey")
        op.execute("ALTER INDEX IF EXISTS embeddings_swap_pkey RENAME TO embeddings_pkey")


def upgrade() -> None:
    _swap_embeddings(frames=True)
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("duration_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("fps", sa.Float(), nullable=True))
        batch.add_column(sa.Column("rotation", sa.Integer(), nullable=True))


def downgrade() -> None:
    _swap_embeddings(frames=False)
    for column in ("rotation", "fps", "duration_ms"):
        op.drop_column("files", column)
