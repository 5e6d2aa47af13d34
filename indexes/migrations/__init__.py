"""Alembic migrations of the catalog, run programmatically whenever a catalog is opened.

A new schema change: add a file to versions/ (`alembic -c <ini with script_location =
indexes:migrations> revision -m "what"`, or copy the last one) that upgrades and downgrades.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Engine

from cliplab.engine.paths import exclusive_lock


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    return cfg


MIGRATION_LOCK = 0x636C69706C6162  # PostgreSQL advisory lock key ("cliplab")


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine):
    """Processes that open one new SQLite catalog at once (torchrun ranks, two commands) migrate one
    after the other; the others then find the schema at head and do nothing."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with exclusive_lock(f"{database}.migrate-lock"):
        yield


def upgrade(engine: Engine, revision: str = "head", check: Callable[[], None] | None = None) -> None:
    """Bring the catalog at engine to revision (the newest by default), one process at a time. check:
    called first under the same lock (so a file another process is creating is never half-seen)."""
    cfg = config()
    with _sqlite_file_lock(engine):
        if check is not None:
            check()
        _upgrade(engine, cfg, revision)


def _upgrade(engine: Engine, cfg: Config, revision: str) -> None:
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
