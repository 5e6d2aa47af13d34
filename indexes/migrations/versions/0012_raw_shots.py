"""files.shot_of: a camera RAW and the JPEG (or other picture) beside it from the same shot (same name
stem, same capture time) are one photo: the RAW's row names the file that stands for the shot
(indexes.shots), and search shows that one with both files listed. No foreign key: adding one on
SQLite rebuilds the files table (whose embeddings would go with it); indexes.shots clears a name
whose file is gone.

Revision ID: 0012
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("files", sa.Column("shot_of", sa.Integer(), nullable=True))
    op.create_index("ix_files_shot_of", "files", ["shot_of"])


def downgrade() -> None:
    op.drop_index("ix_files_shot_of", "files")
    op.drop_column("files", "shot_of")  # SQLite >= 3.35 drops it in place (no table rebuild)
