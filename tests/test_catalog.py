"""The catalog on SQLite and on a real PostgreSQL server: migrations, scans, embeddings, FAISS agreement.

The PostgreSQL half needs CLIPLAB_TEST_POSTGRES_URL (scripts/run-tests.sh starts a throwaway
server on loopback and sets it); without it those tests are skipped with the reason printed.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from library_fixtures import tiny_bundle, write_image
from sqlalchemy import select

from cliplab.indexes import migrations
from cliplab.indexes.catalog import Embedding, File, Folder, default_url, from_blobs, open_catalog
from cliplab.indexes.indexer import index_pending
from cliplab.indexes.scan import scan
from cliplab.indexes.vectors import index_ids, open_index

POSTGRES_URL = os.environ.get("CLIPLAB_TEST_POSTGRES_URL")
NO_POSTGRES = ("CLIPLAB_TEST_POSTGRES_URL is not set, so the PostgreSQL catalog tests did NOT run: "
               "run them with scripts/run-tests.sh (starts a server on loopback) or set the variable")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog(request, tmp_path):
    if request.param == "sqlite":
        cat = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    else:
        if not POSTGRES_URL:
            warnings.warn(NO_POSTGRES, stacklevel=1)
            pytest.skip(NO_POSTGRES)
        engine = sa.create_engine(POSTGRES_URL)
        with engine.begin() as connection:  # each test starts from an empty database
            connection.execute(sa.text("DROP SCHEMA public CASCADE"))
            connection.execute(sa.text("CREATE SCHEMA public"))
        engine.dispose()
        cat = open_catalog(POSTGRES_URL)
    yield cat
    cat.close()


def assert_faiss_agrees(catalog, model_id):
    index = open_index(catalog, model_id)
    with catalog.session() as session:
        rows = session.execute(select(Embedding.file_id, Embedding.vector).where(Embedding.model_id == model_id)).all()
    ids = sorted(r[0] for r in rows)
    assert sorted(index_ids(index.index).tolist()) == ids
    for file_id, blob in rows:
        np.testing.assert_array_equal(index.reconstruct(file_id), from_blobs([blob], 64)[0])
    return index


def test_default_is_sqlite_in_data_dir(cliplab_home, monkeypatch):
    monkeypatch.delenv("CLIPLAB_DATABASE_URL", raising=False)
    assert default_url() == f"sqlite:///{cliplab_home / 'catalog.db'}"
    cat = open_catalog()
    with cat.engine.connect() as connection:
        assert connection.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    monkeypatch.setenv("CLIPLAB_DATABASE_URL", "sqlite:///elsewhere.db")
    assert default_url() == "sqlite:///elsewhere.db"


def test_migrations_reach_head_and_reopen(catalog):
    with catalog.engine.connect() as connection:
        head = ScriptDirectory.from_config(migrations.config()).get_current_head()
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head
        tables = set(sa.inspect(connection).get_table_names())
    assert {"folders", "files", "models", "embeddings", "vector_indexes", "text_collections", "texts",
            "scan_skips", "writer_lock"} <= tables
    assert "text_embeddings" not in tables  # never written; dropped by 0006
    again = open_catalog(catalog.url)  # idempotent upgrade
    assert again.model("m", "fp", 64) == again.model("m", "fp", 64)


def test_scan_index_and_incremental_changes(catalog, tmp_path):
    root = tmp_path / "photos"
    for i in range(6):
        write_image(root / f"{i}.jpg", i)
    bundle = tiny_bundle()
    scan(catalog, [root])
    report = index_pending(catalog, bundle, batch_size=4, workers=0, progress=False)
    assert (report.embedded, report.skipped, report.batches) == (6, 0, 2)
    model_id = bundle.register(catalog)
    assert_faiss_agrees(catalog, model_id)

    os.remove(root / "0.jpg")
    shutil.move(root / "1.jpg", root / "one.jpg")
    write_image(root / "2.jpg", 99)
    write_image(root / "7.jpg", 7)
    rescan = scan(catalog, [root])
    assert (len(rescan.removed), len(rescan.moved), len(rescan.changed), len(rescan.added)) == (1, 1, 1, 1)
    again = index_pending(catalog, bundle, batch_size=4, workers=0, progress=False)
    assert again.embedded == 2  # the changed and the new file only
    with catalog.session() as session:
        paths = {os.path.basename(f.path): f.status for f in session.scalars(select(File))}
        assert session.scalar(select(sa.func.count()).select_from(Embedding)) == 6
    assert paths == {"one.jpg": "ok", "2.jpg": "ok", "3.jpg": "ok", "4.jpg": "ok", "5.jpg": "ok", "7.jpg": "ok"}
    assert_faiss_agrees(catalog, model_id)


def test_two_models_side_by_side(catalog, tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        write_image(root / f"{i}.png", i, fmt="PNG")
    scan(catalog, [root])
    a, b = tiny_bundle(0, "a"), tiny_bundle(1, "b")
    index_pending(catalog, a, workers=0, progress=False)
    index_pending(catalog, b, workers=0, progress=False)
    assert index_pending(catalog, a, workers=0, progress=False).embedded == 0
    ida, idb = a.register(catalog), b.register(catalog)
    assert ida != idb
    with catalog.session() as session:
        counts = dict(session.execute(select(Embedding.model_id, sa.func.count()).group_by(Embedding.model_id)).all())
    assert counts == {ida: 3, idb: 3}
    assert_faiss_agrees(catalog, ida)
    assert_faiss_agrees(catalog, idb)


def test_offline_folder_in_catalog(catalog, tmp_path):
    root = tmp_path / "disk"
    write_image(root / "x.jpg", 1)
    scan(catalog, [root])
    os.rename(root, tmp_path / "gone")
    assert scan(catalog, [root]).offline == [str(root)]
    with catalog.session() as session:
        assert session.scalar(select(Folder.online)) is False
        assert session.scalar(select(sa.func.count()).select_from(File)) == 1


OUTAGE_INDEXER = """
import sys, time
sys.path.insert(0, "tests")
from library_fixtures import tiny_bundle
from cliplab.app.cli import main
from cliplab.indexes.catalog import open_catalog
from cliplab.indexes.indexer import index_pending
from cliplab.indexes.scan import scan
from cliplab.engine.errors import CliplabError
catalog = open_catalog(sys.argv[1])
scan(catalog, [sys.argv[2]])
def on_batch(n, report):
    print(f"committed batch {n}", flush=True)
    time.sleep(0.4)
try:
    index_pending(catalog, tiny_bundle(), batch_size=4, workers=0, progress=False, on_batch=on_batch)
except CliplabError as error:
    print(f"error: {error}", flush=True)
    raise SystemExit(2)
print("finished", flush=True)
"""


def _pg_ctl(*args: str) -> None:
    """pg_ctl on the test server (as its owner when the tests run as root)."""
    import glob
    import subprocess
    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(run_as + [f"{bindir}/pg_ctl", "-D", os.environ["CLIPLAB_TEST_PGDATA"], "-w", *args],
                   check=True, capture_output=True, timeout=60)


def _server_options() -> str:
    """The options the test server was started with (postmaster.opts), to start it again the same way."""
    import shlex
    words = shlex.split(open(os.path.join(os.environ["CLIPLAB_TEST_PGDATA"], "postmaster.opts")).read())
    return shlex.join(words[1:])


@pytest.mark.postgres
@pytest.mark.slow  # a real server stopped and started, real indexer processes: ~30 s
def test_6_postgres_outage_mid_run_is_ridden_out_then_stops_with_a_sentence(catalog, tmp_path):
    import subprocess
    import sys
    import time
    if catalog.engine.dialect.name != "postgresql" or not os.environ.get("CLIPLAB_TEST_PGDATA"):
        pytest.skip("the outage test stops and starts the PostgreSQL test server itself")
    root = Path(__file__).resolve().parents[1]
    photos = tmp_path / "photos"
    for i in range(24):
        write_image(photos / f"{i:02d}.jpg", i)
    options = _server_options()
    env = {**os.environ, "PYTHONPATH": str(root), "CLIPLAB_DB_RETRY_SECONDS": "30"}

    def start_indexer():
        return subprocess.Popen([sys.executable, "-c", OUTAGE_INDEXER, catalog.url, str(photos)], cwd=root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    # 1. down for ~3 s in the middle of the run: retried, and the run completes exactly
    process = start_indexer()
    assert process.stdout.readline().startswith("committed batch 1")
    _pg_ctl("stop", "-m", "fast")
    time.sleep(3)
    _pg_ctl("start", "-o", options, "-l", os.path.join(os.environ["CLIPLAB_TEST_PGDATA"], "..", "server.log"))
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0 and out.strip().endswith("finished"), err[-3000:]
    catalog.engine.dispose()
    with catalog.session() as session:
        per_file = session.execute(select(Embedding.file_id, sa.func.count()).group_by(Embedding.file_id)).all()
        assert len(per_file) == 24 and all(n == 1 for _, n in per_file)
        assert session.scalar(select(sa.func.count()).select_from(File).where(File.status != "ok")) == 0

    # 2. down for longer than the retry bound: a sentence that says to run it again, then a rerun finishes
    for i in range(24, 36):
        write_image(photos / f"{i:02d}.jpg", i)
    env["CLIPLAB_DB_RETRY_SECONDS"] = "3"
    process = start_indexer()
    assert process.stdout.readline().startswith("committed batch 1")
    _pg_ctl("stop", "-m", "fast")
    try:
        out, err = process.communicate(timeout=120)
    finally:
        _pg_ctl("start", "-o", options, "-l", os.path.join(os.environ["CLIPLAB_TEST_PGDATA"], "..", "server.log"))
    assert process.returncode == 2, err[-3000:]
    assert "did not come back within 3 s" in out and "simply run the same command again" in out, out
    assert "Traceback" not in err
    process = start_indexer()
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err[-3000:]
    catalog.engine.dispose()
    with catalog.session() as session:
        per_file = session.execute(select(Embedding.file_id, sa.func.count()).group_by(Embedding.file_id)).all()
        assert len(per_file) == 36 and all(n == 1 for _, n in per_file)


def test_upgrade_to_full_fingerprints_keeps_known_hashes_and_marks_the_rest_unknown(tmp_path):
    """A catalog from before issue 11 (revision 0002): head-and-tail fingerprints are not trusted."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    migrations.upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO folders (id, path, volume, online) VALUES (1, '/p', '/', 1)"))
        for i, full in [(1, "f" * 32), (2, None)]:
            connection.execute(sa.text(
                "INSERT INTO files (id, folder_id, path, ext, size, mtime_ns, fingerprint, full_hash, status) "
                "VALUES (:i, 1, :path, 'jpg', 10, 0, :partial, :full, 'ok')"),
                dict(i=i, path=f"/p/{i}.jpg", partial="a" * 32, full=full))
    engine.dispose()
    catalog = open_catalog(url)
    with catalog.session() as session:
        rows = {f.id: (f.fingerprint, f.raw_path, f.unavailable) for f in session.scalars(select(File))}
    assert rows == {1: ("f" * 32, None, None), 2: ("", None, None)}


def _open_catalog_at(url: str) -> None:
    open_catalog(url)


def test_processes_opening_one_new_sqlite_catalog_at_once_migrate_it_once(tmp_path):
    """torchrun ranks open the same new catalog together; they used to race ("table folders already exists")."""
    import multiprocessing

    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'race{attempt}.db'}"
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_open_catalog_at, args=(url,)) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert [worker.exitcode for worker in workers] == [0, 0, 0]
