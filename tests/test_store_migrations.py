"""Every table of the database under the catalog's one Alembic chain: a fresh database at head is
exactly what the one metadata (catalog + indexes.records) defines, nothing missing and nothing extra;
audit sessions, evaluation runs and saved classifiers that the previous builds made with
metadata.create_all upgrade with their rows kept. SQLite always; PostgreSQL with
CLIPLAB_TEST_POSTGRES_URL, as in test_catalog.py."""

from __future__ import annotations

import json
import os
import warnings
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from cliplab.app.services import audit_store, classifiers, eval_store
from cliplab.indexes import records
from cliplab.indexes.catalog import Base, open_catalog
from cliplab.indexes.migrations import config, upgrade

POSTGRES_URL = os.environ.get("CLIPLAB_TEST_POSTGRES_URL")
NO_POSTGRES = ("CLIPLAB_TEST_POSTGRES_URL is not set, so the PostgreSQL store-migration tests did NOT run: "
               "run them with scripts/run-tests.sh (starts a server on loopback) or set the variable")
TABLES = {"audit_sessions": records.AuditSession.__table__, "eval_runs": records.EvalRun.__table__,
          "saved_classifiers": records.SavedClassifier.__table__}


def head() -> str:
    return ScriptDirectory.from_config(config()).get_current_head()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request, tmp_path, monkeypatch) -> str:
    """The URL of an empty database (also CLIPLAB_DATABASE_URL)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        if not POSTGRES_URL:
            warnings.warn(NO_POSTGRES, stacklevel=1)
            pytest.skip(NO_POSTGRES)
        url = POSTGRES_URL
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            connection.execute(sa.text("DROP SCHEMA public CASCADE"))
            connection.execute(sa.text("CREATE SCHEMA public"))
        engine.dispose()
    monkeypatch.setenv("CLIPLAB_DATABASE_URL", url)
    return url


def layout(engine: sa.Engine, table: str, schema: str | None = None) -> tuple[dict, set, tuple]:
    """Columns (type, nullable), indexed column sets and the primary key, as the database reports them."""
    inspector = sa.inspect(engine)
    columns = {c["name"]: (str(c["type"]), c["nullable"]) for c in inspector.get_columns(table, schema=schema)}
    indexes = {tuple(i["column_names"]) for i in inspector.get_indexes(table, schema=schema)}
    return columns, indexes, tuple(inspector.get_pk_constraint(table, schema=schema)["constrained_columns"])


def model_layout(url: str, table: str, tmp_path) -> tuple[dict, set, tuple]:
    """The same for the table as the store's model defines it (create_all in a scratch database, or a
    scratch schema on PostgreSQL)."""
    postgres = url.startswith("postgresql")
    scratch = sa.create_engine(url if postgres else f"sqlite:///{tmp_path / 'model.db'}")
    metadata = sa.MetaData(schema="model_layout" if postgres else None)
    with scratch.begin() as connection:
        if postgres:
            connection.execute(sa.text("DROP SCHEMA IF EXISTS model_layout CASCADE"))
            connection.execute(sa.text("CREATE SCHEMA model_layout"))
        metadata.create_all(connection, tables=[TABLES[table].to_metadata(metadata)])
    try:
        return layout(scratch, table, metadata.schema)
    finally:
        scratch.dispose()


def test_fresh_database_at_head_has_both_tables_as_the_models_define(empty_url, tmp_path):
    catalog = open_catalog(empty_url)
    with catalog.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head()
    for table in TABLES:
        assert layout(catalog.engine, table) == model_layout(empty_url, table, tmp_path), table
    columns = layout(catalog.engine, "eval_runs")[0]
    assert list(columns) == ["id", "created_at", "kind", "model_name", "model_fingerprint", "dataset",
                             "dataset_hash", "metrics_json", "precision"]
    assert columns["dataset_hash"][1] is True and columns["metrics_json"][1] is False
    with catalog.engine.begin() as connection:  # and it steps back down to the first schema
        cfg = config()
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "0001")
    assert not {"audit_sessions", "eval_runs", "saved_classifiers"} & set(sa.inspect(catalog.engine).get_table_names())
    catalog.close()


def test_one_metadata_is_exactly_the_migrated_schema(empty_url):
    """Alembic's autogenerate finds nothing to add, drop or alter: every model's table is made by the
    chain (none by create_all) and env.py sees all of them."""
    catalog = open_catalog(empty_url)
    assert {"audit_sessions", "eval_runs", "saved_classifiers", "files"} <= set(Base.metadata.tables)
    with catalog.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = [d for d in compare_metadata(context, Base.metadata)
                       if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")]
    assert differences == []
    catalog.close()


# The eval_runs table as the previous build's create_all made it (before dataset_hash).
OLD = sa.MetaData()
OLD_EVAL_RUNS = sa.Table(
    "eval_runs", OLD,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_fingerprint", sa.String(64), nullable=False, index=True),
    sa.Column("dataset", sa.Text, nullable=False),
    sa.Column("metrics_json", sa.Text, nullable=False))
OLD_AUDIT_SESSIONS = sa.Table(  # before precision
    "audit_sessions", OLD,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("rerun_of", sa.String(32)),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_fingerprint", sa.String(64), nullable=False, index=True),
    sa.Column("dataset_source", sa.Text, nullable=False),
    sa.Column("dataset_sha256", sa.String(64), nullable=False, index=True),
    sa.Column("split", sa.String(32)),
    sa.Column("n_images", sa.Integer, nullable=False),
    sa.Column("label_sets", sa.String(400), nullable=False),
    sa.Column("result_json", sa.Text, nullable=False))
# saved classifiers as app.services.app_state's own Base made them with create_all (outside the chain)
OLD_SAVED_CLASSIFIERS = sa.Table(
    "saved_classifiers", OLD,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("spec_json", sa.Text, nullable=False))


def old_build_database(url: str, catalog_revision: str | None) -> None:
    """A database as the previous build left it: the two tables from create_all, one row each, and
    the photo catalog at catalog_revision (None: the catalog was never opened)."""
    engine = sa.create_engine(url)
    if catalog_revision:
        upgrade(engine, catalog_revision)
    OLD.create_all(engine)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(OLD.tables["audit_sessions"].insert().values(
            id="a1", created_at=now, rerun_of=None, model_name="tiny", model_fingerprint="fpA",
            dataset_source="/data/fairface.csv", dataset_sha256="ab" * 32, split="val", n_images=12,
            label_sets="paper", result_json=json.dumps({"session_id": "a1", "tables": {}})))
        connection.execute(OLD_EVAL_RUNS.insert().values(
            id="e1", created_at=now, kind="zeroshot", model_name="tiny", model_fingerprint="fpE",
            dataset="pets", metrics_json=json.dumps({"top1": 0.75, "per_class": [{"label": "cat"}]})))
        connection.execute(OLD_SAVED_CLASSIFIERS.insert().values(
            name="shapes", saved_at=now, spec_json=json.dumps({"classes": ["circle", "star"],
                                                               "templates": ["a {}."], "threshold": None})))
    engine.dispose()


@pytest.mark.parametrize("catalog_revision", [None, "0001"])
def test_tables_from_create_all_upgrade_with_their_rows(empty_url, catalog_revision, tmp_path):
    old_build_database(empty_url, catalog_revision)
    catalog = open_catalog(empty_url)
    with catalog.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head()
    assert layout(catalog.engine, "eval_runs") == model_layout(empty_url, "eval_runs", tmp_path)
    assert [s["id"] for s in audit_store.list_sessions(catalog)] == ["a1"]
    assert audit_store.load_session(catalog, "a1")["session_id"] == "a1"
    (run,) = eval_store.list_eval_runs(catalog)
    assert (run["id"], run["top1"], run["dataset"], run["dataset_hash"]) == ("e1", 0.75, "pets", None)
    # new rows go in beside the old ones, with the new column
    new = eval_store.save_eval_run(catalog, "probe", "tiny", "fpE", "/data/pets", {"top1": 0.5}, dataset_hash="c" * 64)
    assert {r["id"]: r["dataset_hash"] for r in eval_store.list_eval_runs(catalog)} == {"e1": None, new: "c" * 64}
    for table in TABLES:
        assert layout(catalog.engine, table) == model_layout(empty_url, table, tmp_path), table
    # the saved classifier of the old build is still there (no provenance recorded then), and saving works
    assert classifiers.load_classifier(catalog, "shapes") == {"classes": ["circle", "star"], "templates": ["a {}."],
                                                              "threshold": None, "provenance": None}
    classifiers.save_classifier(catalog, "colours", ["red", "blue"], ["a {}."])
    assert classifiers.list_classifiers(catalog) == ["colours", "shapes"]
    assert audit_store.list_sessions(catalog)[0]["precision"] is None
    catalog.close()


# -- 0006: the dead schema goes, every photo and embedding stays ------------------------------------

def catalog_at_0005_with_a_photo(url: str) -> None:
    """A catalog as the previous build left it: a folder, a photo (with the unused full_hash), its
    embedding, a text collection and a row in the never-used text_embeddings table."""
    engine = sa.create_engine(url)
    upgrade(engine, "0005")
    with engine.begin() as connection:
        run = lambda sql, **values: connection.execute(sa.text(sql), values)  # noqa: E731
        run("INSERT INTO folders (id, path, volume, online) VALUES (1, '/p', '/', :on)", on=True)
        run("INSERT INTO files (id, folder_id, path, ext, size, mtime_ns, fingerprint, full_hash, status) "
            "VALUES (1, 1, '/p/a.jpg', 'jpg', 10, 0, :fp, :fp, 'ok')", fp="f" * 32)
        run("INSERT INTO models (id, name, fingerprint, embed_dim, version) VALUES (1, 'tiny', 'm1', 2, 1)")
        run("INSERT INTO embeddings (file_id, model_id, vector, version) VALUES (1, 1, :v, 1)", v=b"\0" * 8)
        run("INSERT INTO text_collections (id, name) VALUES (1, 'tags')")
        run("INSERT INTO texts (id, collection_id, position, text) VALUES (1, 1, 0, 'a cat')")
        run("INSERT INTO text_embeddings (text_id, model_id, vector) VALUES (1, 1, :v)", v=b"\0" * 8)
    engine.dispose()


def photo_rows(engine: sa.Engine) -> tuple:
    with engine.connect() as connection:
        return (connection.execute(sa.text("SELECT id, path, fingerprint FROM files")).all(),
                connection.execute(sa.text("SELECT file_id, model_id, vector FROM embeddings")).all(),
                connection.execute(sa.text("SELECT text FROM texts")).all())


@pytest.mark.parametrize("sqlite_drop", ["in place", "rebuilt"])
def test_0006_drops_text_embeddings_and_full_hash_and_keeps_every_embedding(empty_url, sqlite_drop, monkeypatch):
    """Rebuilding `files` (SQLite before 3.35 has no DROP COLUMN) would delete its embeddings through ON
    DELETE CASCADE: they must all be there after the upgrade, either way; the downgrade restores both."""
    if sqlite_drop == "rebuilt":
        if not empty_url.startswith("sqlite"):
            pytest.skip("PostgreSQL drops a column in place")
        import sqlite3.dbapi2  # the driver module SQLAlchemy's dialect asks
        monkeypatch.setattr(sqlite3.dbapi2, "sqlite_version_info", (3, 34, 1))  # the migration then rebuilds the table
    catalog_at_0005_with_a_photo(empty_url)
    before = photo_rows(sa.create_engine(empty_url))
    catalog = open_catalog(empty_url)
    tables = set(sa.inspect(catalog.engine).get_table_names())
    assert "text_embeddings" not in tables and "text_embeddings" not in Base.metadata.tables
    assert "full_hash" not in {c["name"] for c in sa.inspect(catalog.engine).get_columns("files")}
    assert photo_rows(catalog.engine) == before and len(before[1]) == 1
    with catalog.engine.begin() as connection:
        cfg = config()
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, "0005")
    inspector = sa.inspect(catalog.engine)
    assert "text_embeddings" in inspector.get_table_names()
    assert "full_hash" in {c["name"] for c in inspector.get_columns("files")}
    assert photo_rows(catalog.engine) == before
    catalog.close()
