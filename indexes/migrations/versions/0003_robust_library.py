"""A library that survives real folders: bytes-safe names, full-content fingerprints, unavailable
subfolders, scan skips, one writer at a time, checked vector-index files.

- files.raw_path: the exact bytes of a name that is not UTF-8 (files.path shows it readably);
- files.device: st_dev when last seen (an empty mount point is told from an emptied folder);
- files.unavailable: why a file cannot be reached now (kept, not removed);
- files.fingerprint becomes the full-content blake2b-128: rows whose full hash was computed
  before (files.full_hash, by the duplicate finder) take it, the others get "" (unknown), and the
  next scan reads each of them once. files.full_hash is no longer used; it stays in the table
  because dropping a column on SQLite copies the table, which would cascade-delete embeddings;
- scan_skips, writer_lock: new tables; vector_indexes.dim, .checksum: what the saved file must match.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("files", sa.Column("raw_path", sa.LargeBinary, nullable=True))
    op.add_column("files", sa.Column("device", sa.BigInteger, nullable=True))
    op.add_column("files", sa.Column("unavailable", sa.Text, nullable=True))
    op.execute("UPDATE files SET fingerprint = full_hash WHERE full_hash IS NOT NULL")
    op.execute("UPDATE files SET fingerprint = '' WHERE full_hash IS NULL")
    op.add_column("vector_indexes", sa.Column("dim", sa.Integer, nullable=True))
    op.add_column("vector_indexes", sa.Column("checksum", sa.String(64), nullable=True))
    op.create_table(
        "scan_skips",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("folder_id", sa.Integer, sa.ForeignKey("folders.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("path", sa.Text, nullable=False, unique=True),
        sa.Column("raw_path", sa.LargeBinary, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_table(
        "writer_lock",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("writer_lock")
    op.drop_table("scan_skips")
    for column in ("checksum", "dim"):
        op.drop_column("vector_indexes", column)
    for column in ("unavailable", "device", "raw_path"):
        op.drop_column("files", column)
