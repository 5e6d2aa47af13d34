"""The library watcher (indexes.watch, app.services.watching) with real observers on real folders: native
events and, with native events off, polling; files still being written; a burst as one batch; moves
that keep their embeddings; a folder that goes away marked offline and back; a kill -9 that loses
nothing and embeds nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from library_fixtures import tiny_bundle, write_image
from sqlalchemy import select

from cliplab.app.services import library, search, watching
from cliplab.indexes.catalog import Embedding, File, Folder, open_catalog
from cliplab.indexes.scan import fingerprint
from cliplab.indexes.watch import covering_folders, needs_polling

FAST = dict(settle=0.3, quiet=0.3, reconcile=0, workers=0)
TESTS = Path(__file__).resolve().parent


def wait_for(check, timeout: float = 20.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def rows(catalog) -> dict[str, tuple[int, str, int | None]]:
    """name -> (file id, status, embedding version)"""
    with catalog.session() as session:
        found = session.execute(select(File.path, File.id, File.status, Embedding.version)
                                .outerjoin(Embedding, Embedding.file_id == File.id)).all()
    return {os.path.relpath(path, os.environ["WATCHED"]): (i, status, version) for path, i, status, version in found}


@pytest.fixture
def watched(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    for n in range(3):
        write_image(folder / f"p{n}.png", n)
    monkeypatch.setenv("WATCHED", str(folder))
    catalog = open_catalog()
    bundle = tiny_bundle()
    library.add_folders(catalog, bundle, [str(folder)], workers=0)
    return catalog, bundle, folder


def test_new_changed_moved_and_deleted_files_reach_the_catalog(watched):
    catalog, bundle, folder = watched
    before = rows(catalog)
    with watching.start_watcher(catalog, bundle, reconcile_at_start=False, **FAST) as watcher:
        assert wait_for(lambda: watcher.state.folders, what="the folders").pop().mode == "watching"
        write_image(folder / "deep" / "new.png", 10)
        os.rename(folder / "p0.png", folder / "deep" / "p0-moved.png")
        write_image(folder / "p1.png", 11)  # new content under the same name
        os.remove(folder / "p2.png")
        wait_for(lambda: {"deep/new.png", "deep/p0-moved.png"} <= rows(catalog).keys()
                 and "p2.png" not in rows(catalog) and rows(catalog)["p1.png"][2] not in (None, before["p1.png"][2])
                 and all(status == "ok" for _i, status, _v in rows(catalog).values()), what="the changes")
        after = rows(catalog)
        assert after["deep/p0-moved.png"] == before["p0.png"]  # the same row, the same embedding: not re-embedded
        assert after["p1.png"][0] == before["p1.png"][0]
        assert watcher.state.error == ""
    hits = search.search(catalog, bundle, [search.image_term(str(folder / "deep" / "new.png"))])
    assert hits.results[0].path == str(folder / "deep" / "new.png")  # searchable without a rescan


def test_a_file_being_written_is_taken_once_complete_and_a_burst_is_one_batch(watched):
    catalog, bundle, folder = watched
    source = write_image(folder.parent / "big.png", 5, size=(600, 400))
    data = source.read_bytes()
    with watching.start_watcher(catalog, bundle, reconcile_at_start=False, **FAST) as watcher:
        wait_for(lambda: watcher.state.folders)
        with open(folder / "slow.png", "wb") as out:  # written over ~1.5 s, in pieces
            for start in range(0, len(data), len(data) // 10 + 1):
                out.write(data[start:start + len(data) // 10 + 1])
                out.flush()
                time.sleep(0.15)
                assert "slow.png" not in rows(catalog) or rows(catalog)["slow.png"][1] != "skipped"
        wait_for(lambda: rows(catalog).get("slow.png", (0, ""))[1] == "ok", what="the written file")
        batches = watcher.state.batches
        burst = folder.parent / "burst"
        for n in range(150):
            write_image(burst / f"b{n:03d}.png", 100 + n)
        os.rename(burst, folder / "burst")  # 150 photos arrive at once
        wait_for(lambda: sum(name.startswith("burst/") and status == "ok"
                             for name, (_i, status, _v) in rows(catalog).items()) == 150, what="the burst")
        assert watcher.state.batches - batches <= 2  # one batch of work (two if it straddled a tick)
    with catalog.session() as session:
        row = session.scalar(select(File).where(File.path == str(folder / "slow.png")))
    assert row.fingerprint == fingerprint(source)  # the whole file, embedded once it was complete


def test_polling_without_native_events_and_a_folder_that_goes_away(watched):
    catalog, bundle, folder = watched
    with watching.start_watcher(catalog, bundle, poll_all=True, poll_interval=0.3, reconcile_at_start=False,
                                **FAST) as watcher:
        wait_for(lambda: watcher.state.folders)
        assert [f.mode for f in watcher.state.folders] == ["polling"]
        write_image(folder / "polled.png", 20)
        wait_for(lambda: rows(catalog).get("polled.png", (0, ""))[1] == "ok", what="the polled file")
        before = rows(catalog)
        away = folder.parent / "unmounted"
        os.rename(folder, away)  # the share goes away
        wait_for(lambda: [f.mode for f in watching.status(catalog, watcher).folders] == ["offline"], what="offline")
        assert rows(catalog) == before  # kept, not deleted
        assert search.search(catalog, bundle, [search.text_term("a photo")]).total == 0  # away: not shown
        os.rename(away, folder)  # and comes back
        wait_for(lambda: [f.mode for f in watching.status(catalog, watcher).folders] == ["polling"], what=f"back {watcher.state}")
        assert rows(catalog) == before  # the same ids and embeddings
        assert search.search(catalog, bundle, [search.text_term("a photo")]).total == 4


def test_a_watcher_killed_at_any_moment_loses_nothing_and_embeds_nothing_twice(watched, tmp_path):
    catalog, bundle, folder = watched
    for n in range(40):
        write_image(folder / "incoming" / f"i{n:02d}.png", 200 + n, size=(300, 200))
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from library_fixtures import tiny_bundle
        from cliplab.app.services import watching
        from cliplab.indexes.catalog import open_catalog
        watcher = watching.start_watcher(open_catalog(), tiny_bundle(), settle=0.3, quiet=0.3, reconcile=0,
                                         workers=0)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    try:
        def embedded() -> int:
            return sum(v is not None for _i, _s, v in rows(catalog).values())
        wait_for(lambda: embedded() > 3 + 5, timeout=60, what="the watcher's first batches")
    finally:
        child.send_signal(signal.SIGKILL)  # mid-run: a batch may be in flight
        child.wait()
    done = {name: version for name, (_i, _s, version) in rows(catalog).items() if version is not None}
    os.rename(folder / "p0.png", folder / "p0-renamed.png")  # changes while nothing watches
    write_image(folder / "late.png", 300)
    with watching.start_watcher(catalog, bundle, **FAST) as watcher:  # reconciles at start
        wait_for(lambda: watcher.state.last_reconcile and watcher.wait_idle(0.1), timeout=60, what="the reconcile")
    after = rows(catalog)
    assert len(after) == 3 + 40 + 1 and all(status == "ok" and v is not None for _i, status, v in after.values())
    for name, version in done.items():  # nothing embedded before the kill was embedded again
        assert after["p0-renamed.png" if name == "p0.png" else name][2] == version
    with catalog.session() as session:
        assert session.scalar(select(Folder.online)) is True


def test_which_folders_a_batch_scans_and_which_are_polled(tmp_path):
    root = tmp_path / "lib"
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    paths = [str(root / "a" / "b" / "x.jpg"), str(root / "a" / "y.jpg"), str(root / "c" / "gone" / "z.jpg"),
             str(tmp_path / "elsewhere.jpg")]
    assert covering_folders(paths, [str(root)]) == [str(root / "a"), str(root / "c")]
    assert covering_folders([str(root / "a")], [str(root)]) == [str(root / "a")]
    assert not needs_polling(str(tmp_path))  # a local disk sends events
    if os.path.isdir("/proc/self") and os.path.ismount("/proc"):
        assert not needs_polling("/proc")


def test_cliplab_watch_adds_and_indexes_its_folders_then_stops_with_once(tmp_path, capsys):
    from cli_support import run_cli

    from cliplab.engine.weights import save_model
    model = tmp_path / "tiny-model"
    save_model(tiny_bundle().model, model, meta={"name": "tiny"})
    folder = tmp_path / "cli-photos"
    for n in range(2):
        write_image(folder / f"c{n}.png", 40 + n)
    code, out, err = run_cli(capsys, "watch", folder, "--once", "--model", model, "--precision", "fp32", "--workers", "0",
                             "--settle", "0.2",
                             "--reconcile-interval", "0", modules=["watch"])
    assert code == 0, err
    assert "reconcile of every folder: 2 new" in out and "embedded 2" in out
    assert f"{folder}: watching" in out
    catalog = open_catalog()
    assert library.library_summary(catalog).indexed == 2
