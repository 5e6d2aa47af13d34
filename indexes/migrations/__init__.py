"""Alembic migrations of the catalog, run programmatically whenever a catalog is opened.

A new schema change: add a file to versions/ (`alembic -c <ini with script_location =
indexes:migrations> revision -m "what"`, or copy the last one) that upgrades and downgrades.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the catalog at engine to revision (the newest by default)."""
    cfg = config()
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
