"""A photo library on real folders (issue 11): every case checked against the exact catalog contents.

Each test names the numbered case of the issue it covers. Tests that need a folder root cannot
read (`chmod 000` does not stop root) scan as user `nobody` when the suite runs as root.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from library_fixtures import (
    disk_elsewhere,
    open_tree,
    set_mtime,
    tiny_bundle,
    without_root_privileges,
    write_image,
)
from PIL import Image
from sqlalchemy import func, select, update

from cliplab.app.cli import main
from cliplab.app.services import copy_detectors
from cliplab.app.services.search import parse_terms, search
from cliplab.engine.errors import CliplabError
from cliplab.engine.features import encode_images
from cliplab.engine.images import load_image
from cliplab.engine.weights import save_model
from cliplab.indexes.catalog import Embedding, File, Folder, WriterLock, from_blobs, open_catalog
from cliplab.indexes.duplicates import exact_duplicates, near_duplicates
from cliplab.indexes.indexer import index_pending
from cliplab.indexes.scan import scan, skipped
from cliplab.indexes.search import Filters

ROOT = Path(__file__).resolve().parents[1]


def catalog_files(catalog, root) -> dict[str, tuple]:
    """relative path -> (id, status, unavailable reason or None, raw path bytes or None)."""
    with catalog.session() as session:
        return {os.path.relpath(f.path, root): (f.id, f.status, f.unavailable, f.raw_path)
                for f in session.scalars(select(File))}


def vectors_by_id(catalog) -> dict[int, np.ndarray]:
    with catalog.session() as session:
        rows = session.execute(select(Embedding.file_id, Embedding.vector)).all()
    return {i: from_blobs([v], len(v) // 4)[0] for i, v in rows}


def direct(bundle, path) -> np.ndarray:
    return encode_images(bundle.model, bundle.preprocess, [load_image(path)])[0]


def index(catalog, bundle=None):
    return index_pending(catalog, bundle or tiny_bundle(), batch_size=4, workers=0, progress=False)


# 1 ------------------------------------------------------------------------------------------------

def test_1_names_that_are_not_utf8_are_catalogued_shown_and_followed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLIPLAB_INFERENCE_MODE", "fp32")  # embeddings compared with a direct fp32 encode
    root = tmp_path / "photos"
    write_image(root / "ok.jpg", 1)
    raw_root = os.fsencode(root)
    write_image(tmp_path / "x.jpg", 2)
    os.rename(tmp_path / "x.jpg", raw_root + b"/caf\xe9.jpg")  # Latin-1 from an old camera
    os.mkdir(raw_root + b"/\xff\xfe album")
    write_image(tmp_path / "y.jpg", 3)
    os.rename(tmp_path / "y.jpg", raw_root + b"/\xff\xfe album/y.jpg")
    model_dir = save_model(tiny_bundle().model, tmp_path / "tiny-model")
    assert main(["index", str(root), "--model", str(model_dir), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "3 new" in out and "embedded 3, skipped 0" in out
    catalog = open_catalog()
    files = catalog_files(catalog, root)
    assert {name: (status, unavailable, raw) for name, (_id, status, unavailable, raw) in files.items()} == {
        "ok.jpg": ("ok", None, None),
        "caf\\xe9.jpg": ("ok", None, raw_root + b"/caf\xe9.jpg"),
        "\\xff\\xfe album/y.jpg": ("ok", None, raw_root + b"/\xff\xfe album/y.jpg"),
    }
    bundle = tiny_bundle()
    vectors = vectors_by_id(catalog)
    np.testing.assert_allclose(vectors[files["caf\\xe9.jpg"][0]], direct(bundle, os.fsdecode(raw_root + b"/caf\xe9.jpg")),
                               atol=1e-5)
    # the folder keeps being scanned: a new file is added, a deleted one removed, the odd names kept
    os.remove(root / "ok.jpg")
    write_image(root / "new.jpg", 4)
    report = scan(catalog, [root])
    assert report.added == [str(root / "new.jpg")] and report.removed == [str(root / "ok.jpg")]
    after = catalog_files(catalog, root)
    assert set(after) == {"new.jpg", "caf\\xe9.jpg", "\\xff\\xfe album/y.jpg"}
    assert after["caf\\xe9.jpg"] == files["caf\\xe9.jpg"]
    assert main(["search", "a photo", "--model", str(model_dir), "--limit", "5"]) == 0
    assert "caf\\xe9.jpg" in capsys.readouterr().out


# 2 ------------------------------------------------------------------------------------------------

def _bmp(path: Path, seed: int) -> Path:
    return write_image(path, seed, size=(400, 300), fmt="BMP")  # 360 KB: more than head + tail


def test_2_a_same_size_middle_edit_is_a_change(tmp_path):
    root = tmp_path / "photos"
    photo = _bmp(root / "retouched.bmp", 1)
    catalog, bundle = open_catalog(), tiny_bundle()
    scan(catalog, [root])
    index(catalog, bundle)
    before = catalog_files(catalog, root)["retouched.bmp"]
    data = bytearray(photo.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 60_000] = np.random.default_rng(5).integers(0, 256, 60_000, dtype=np.uint8).tobytes()
    photo.write_bytes(bytes(data))  # same size, same first and last 64 KiB
    set_mtime(photo, 1_700_000_000)
    report = scan(catalog, [root])
    assert report.changed == [str(photo)] and report.unchanged == 0
    assert catalog_files(catalog, root) == {"retouched.bmp": (before[0], "pending", None, None)}
    assert index(catalog, bundle).embedded == 1
    np.testing.assert_allclose(vectors_by_id(catalog)[before[0]], direct(bundle, photo), atol=1e-5)


def test_2_a_file_with_the_same_head_and_tail_is_not_a_move(tmp_path):
    root = tmp_path / "photos"
    original = _bmp(root / "a.bmp", 1)
    catalog, bundle = open_catalog(), tiny_bundle()
    scan(catalog, [root])
    index(catalog, bundle)
    old_id = catalog_files(catalog, root)["a.bmp"][0]
    data = bytearray(original.read_bytes())
    data[100_000:250_000] = np.random.default_rng(9).integers(0, 256, 150_000, dtype=np.uint8).tobytes()
    os.remove(original)
    impostor = root / "b.bmp"
    impostor.write_bytes(bytes(data))
    report = scan(catalog, [root])
    assert report.moved == [] and report.added == [str(impostor)] and report.removed == [str(original)]
    files = catalog_files(catalog, root)
    assert set(files) == {"b.bmp"} and files["b.bmp"][0] != old_id and files["b.bmp"][1] == "pending"
    index(catalog, bundle)
    assert set(vectors_by_id(catalog)) == {files["b.bmp"][0]}
    np.testing.assert_allclose(vectors_by_id(catalog)[files["b.bmp"][0]], direct(bundle, impostor), atol=1e-5)


def test_2_unchanged_files_are_not_read_and_legacy_rows_are_fingerprinted_once(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    for i in range(3):
        write_image(root / f"{i}.jpg", i)
    catalog = open_catalog()
    scan(catalog, [root])
    index(catalog)
    with catalog.session() as session, session.begin():  # a catalog from before full fingerprints
        session.execute(update(File).where(File.path == str(root / "0.jpg")).values(fingerprint=""))
    import cliplab.indexes.scan as scan_module
    opened = []
    real = scan_module.fingerprint
    monkeypatch.setattr(scan_module, "fingerprint", lambda p: opened.append(p) or real(p))
    report = scan(catalog, [root])
    assert opened == [str(root / "0.jpg")] and report.unchanged == 3 and report.changed == []
    assert len(vectors_by_id(catalog)) == 3  # kept: same size and mtime, now with its full fingerprint
    opened.clear()
    assert scan(catalog, [root]).unchanged == 3 and opened == []


# 3 ------------------------------------------------------------------------------------------------

def test_3_an_unreadable_subfolder_is_unavailable_not_deleted(tmp_path):
    root = open_tree(tmp_path) / "photos"
    for name, seed in [("a/1.jpg", 1), ("locked/2.jpg", 2), ("locked/deep/3.jpg", 3), ("gone/4.jpg", 4)]:
        write_image(root / name, seed)
    catalog = open_catalog()
    scan(catalog, [root])
    index(catalog)
    before = catalog_files(catalog, root)
    vectors = vectors_by_id(catalog)
    (root / "locked").chmod(0)
    shutil.rmtree(root / "gone")  # really deleted: its parent is readable and the entry is gone
    try:
        with without_root_privileges():
            report = scan(catalog, [root])
    finally:
        (root / "locked").chmod(0o755)
    assert report.removed == [str(root / "gone/4.jpg")]
    why = f"the folder {root / 'locked'} cannot be read (Permission denied)"
    assert report.unavailable == {why: 2}
    assert catalog_files(catalog, root) == {
        "a/1.jpg": before["a/1.jpg"],
        "locked/2.jpg": (before["locked/2.jpg"][0], "ok", why, None),
        "locked/deep/3.jpg": (before["locked/deep/3.jpg"][0], "ok", why, None),
    }
    assert (str(root / "locked"), f"unreadable folder: {why}") in skipped(catalog)
    report = scan(catalog, [root])  # the permission is fixed: same ids, same embeddings, nothing re-read
    assert report.unchanged == 3 and report.removed == [] and report.added == [] and report.fingerprinted == 0
    assert catalog_files(catalog, root) == {k: v for k, v in before.items() if k != "gone/4.jpg"}
    assert {i: v.tolist() for i, v in vectors_by_id(catalog).items()} == {
        i: v.tolist() for i, v in vectors.items() if i != before["gone/4.jpg"][0]}
    assert skipped(catalog) == []


def test_3_an_unmounted_disk_leaves_its_files_unavailable(tmp_path):
    with disk_elsewhere(tmp_path, "disk") as disk:
        write_image(disk / "1.jpg", 1)
        write_image(disk / "sub/2.jpg", 2)
        root = tmp_path / "photos"
        write_image(root / "here.jpg", 3)
        write_image(root / "emptied/4.jpg", 4)
        catalog = open_catalog()
        scan(catalog, [disk])
        os.symlink(disk, root / "nas")  # "mounted" at photos/nas: a link into the library, followed
        scan(catalog, [root])
        index(catalog)
        before = catalog_files(catalog, root)
        assert {"nas/1.jpg", "nas/sub/2.jpg", "here.jpg", "emptied/4.jpg"} <= set(before)
        os.remove(root / "nas")
        os.mkdir(root / "nas")  # unmounted: the empty mount point is left, on the parent's device
        os.remove(root / "emptied/4.jpg")  # the user emptied a folder on the same disk: really gone
        report = scan(catalog, [root])
        why = (f"the folder {root / 'nas'} is empty and on another disk than its photos were: its disk is "
               "probably not mounted")
        assert report.unavailable == {why: 2} and report.removed == [str(root / "emptied/4.jpg")]
        after = catalog_files(catalog, root)
        assert after["nas/1.jpg"] == (before["nas/1.jpg"][0], "ok", why, None)
        assert after["nas/sub/2.jpg"] == (before["nas/sub/2.jpg"][0], "ok", why, None)
        assert "emptied/4.jpg" not in after
        os.rmdir(root / "nas")
        os.symlink(disk, root / "nas")  # mounted again
        report = scan(catalog, [root])
        assert report.added == [] and report.unavailable == {}
        again = catalog_files(catalog, root)
        assert again["nas/1.jpg"] == before["nas/1.jpg"] and again["nas/sub/2.jpg"] == before["nas/sub/2.jpg"]


# 4 ------------------------------------------------------------------------------------------------

HELD_INDEXER = """
import os, sys, time
sys.path.insert(0, "tests")
from library_fixtures import tiny_bundle
from cliplab.indexes.catalog import open_catalog
from cliplab.indexes.indexer import index_pending
from cliplab.indexes.scan import scan
catalog = open_catalog(sys.argv[1])
scan(catalog, [sys.argv[2]])
def on_batch(n, report):
    print(f"committed batch {n}", flush=True)
    deadline = time.time() + 120
    while n == 1 and not os.path.exists(sys.argv[3]) and time.time() < deadline:  # held until told
        time.sleep(0.1)
index_pending(catalog, tiny_bundle(), batch_size=4, workers=0, progress=False, on_batch=on_batch)
print("finished", flush=True)
"""


@pytest.mark.slow  # real processes: ~20 s on 2 cores
def test_4_two_indexers_on_one_catalog(tmp_path):
    photos = tmp_path / "photos"
    for i in range(24):
        write_image(photos / f"{i:02d}.jpg", i)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    model_dir = save_model(tiny_bundle().model, tmp_path / "tiny-model")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLIPLAB_DATABASE_URL": url}
    go = tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", HELD_INDEXER, url, str(photos), str(go)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, env=env)
    assert first.stdout.readline().startswith("committed batch 1")
    second = subprocess.run([sys.executable, "-m", "cliplab.app.cli", "index", str(photos), "--model", str(model_dir),
                             "--workers", "0"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 2, second.stderr
    assert re.search(rf"another indexer is running \(pid {first.pid} since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
                     second.stderr), second.stderr
    assert "Traceback" not in second.stderr
    catalog = open_catalog(url)
    with catalog.session() as session:  # readers are never blocked
        assert session.scalar(select(func.count()).select_from(File)) == 24
    go.touch()
    assert first.stdout.read().strip().endswith("finished") and first.wait() == 0
    rerun = subprocess.run([sys.executable, "-c", HELD_INDEXER, url, str(photos), str(go)], cwd=ROOT,
                           capture_output=True, text=True, env=env, timeout=300)  # the same model again
    assert rerun.returncode == 0 and rerun.stdout.split() == ["finished"], rerun.stderr
    with catalog.session() as session:
        assert session.scalar(select(func.count()).select_from(Folder)) == 1
        assert session.scalar(select(func.count()).select_from(WriterLock)) == 0
        per_file = session.execute(select(Embedding.file_id, func.count()).group_by(Embedding.file_id)).all()
        assert len(per_file) == 24 and all(n == 1 for _, n in per_file)
        assert session.scalar(select(func.count()).select_from(File).where(File.status != "ok")) == 0


def test_4_the_lock_is_reentrant_and_a_dead_holder_is_taken_over(tmp_path, caplog):
    from cliplab.indexes.writer import holder, writer_lock
    catalog = open_catalog()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    now = datetime.utcnow()
    with catalog.session() as session, session.begin():  # what a `kill -9`ed indexer leaves behind
        session.add(WriterLock(id=1, token="x" * 32, pid=int(dead.stdout), host=os.uname().nodename,
                               started_at=now, heartbeat_at=now))
    with caplog.at_level(logging.WARNING, logger="cliplab.indexes.writer"), writer_lock(catalog):
        # the log names the dead holder, not the process taking over
        taken = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
        assert len(taken) == 1 and f"left by pid {int(dead.stdout)} on" in taken[0], taken
        assert f"pid {os.getpid()} " not in taken[0]
        with writer_lock(catalog):
            assert holder(catalog).pid == os.getpid()
        write_image(tmp_path / "p/a.jpg", 1)
        scan(catalog, [tmp_path / "p"])  # scan takes the same lock: re-entrant in one thread
    assert holder(catalog) is None


# 7 ------------------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_7_skip_records_cover_everything_and_a_fixed_permission_is_retried(tmp_path):
    root = open_tree(tmp_path) / "photos"
    write_image(root / "good.jpg", 1)
    locked = write_image(root / "locked.jpg", 2)
    write_image(root / "private/x.jpg", 3)
    big = write_image(tmp_path / "big.jpg", 4, size=(400, 300), quality=95).read_bytes()
    (root / "header-cut.jpg").write_bytes(big[:300])
    Image.new("RGB", (20, 20), "red").save(tmp_path / "p.png")
    png = (tmp_path / "p.png").read_bytes()
    text = _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"a" * 50_000_000))
    (root / "metadata.png").write_bytes(png[:33] + text + png[33:])
    (root / "notes.jpg").write_text("not a photo\n")
    os.mkfifo(root / "pipe.jpg")
    os.symlink("missing.jpg", root / "dangling.jpg")
    os.symlink("self.jpg", root / "self.jpg")
    os.symlink(root, root / "private2")  # a folder link back to its own parent
    mtime = locked.stat().st_mtime_ns
    locked.chmod(0)
    (root / "private").chmod(0)
    try:
        catalog = open_catalog()
        with without_root_privileges():
            scan(catalog, [root])
        index(catalog)
        listed = {os.path.relpath(path, root): reason for path, reason in skipped(catalog)}
        assert listed == {
            "dangling.jpg": f"dangling symlink: {root / 'dangling.jpg'} points to missing.jpg, which does not exist",
            "header-cut.jpg": f"truncated: Cannot read {root / 'header-cut.jpg'}: the image data is cut short (the "
                              "file is incomplete, or still being copied).",
            "locked.jpg": f"unreadable: {root / 'locked.jpg'} cannot be read (Permission denied)",
            "metadata.png": f"too large: Cannot read {root / 'metadata.png'}: its metadata is over the decoder's "
                            "safety limit (Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK).",
            "notes.jpg": f"not an image: Cannot read {root / 'notes.jpg'}: it is not an image in a format this "
                         "program reads (JPEG, PNG, GIF, WebP, TIFF, BMP, HEIC, ...).",
            "pipe.jpg": f"not a photo file: {root / 'pipe.jpg'} is a FIFO (named pipe)",
            "private": f"unreadable folder: the folder {root / 'private'} cannot be read (Permission denied)",
            "private2": f"symlink loop: {root / 'private2'} points back to {root}, a folder above it",
            "self.jpg": f"symlink loop: {root / 'self.jpg'} points back to itself",
        }
        shutil.copy(root / "notes.jpg", root / "notes copy.jpg")  # a copy's reason names the copy
        locked.chmod(0o644)  # both fixed; chmod leaves the mtime as it was
        (root / "private").chmod(0o755)
        assert locked.stat().st_mtime_ns == mtime
        with without_root_privileges():
            scan(catalog, [root])
        assert index(catalog).embedded == 2
        files = catalog_files(catalog, root)
        assert files["locked.jpg"][1] == files["private/x.jpg"][1] == "ok"
        listed = dict(skipped(catalog))
        assert listed[str(root / "notes copy.jpg")].startswith(f"not an image: Cannot read {root / 'notes copy.jpg'}:")
        assert str(root / "locked.jpg") not in listed
    finally:
        (root / "private").chmod(0o755)


# 8 ------------------------------------------------------------------------------------------------

def test_8_symlinks_inside_the_library_are_followed_the_rest_recorded(tmp_path):
    outside = write_image(tmp_path / "elsewhere/secret.jpg", 9)
    root = tmp_path / "photos"
    write_image(root / "a.jpg", 1)
    write_image(root / "sub/b.jpg", 2)
    os.symlink(outside, root / "out.jpg")
    os.symlink(tmp_path / "elsewhere", root / "outdir")
    os.symlink(root / "a.jpg", root / "alias.jpg")
    os.symlink(root / "sub", root / "album")
    catalog, bundle = open_catalog(), tiny_bundle()
    scan(catalog, [root])
    index(catalog, bundle)
    assert sorted(catalog_files(catalog, root)) == ["a.jpg", "album/b.jpg", "alias.jpg", "sub/b.jpg"]
    assert skipped(catalog) == [
        (str(root / "out.jpg"), f"symlink outside the library: {root / 'out.jpg'} points to {outside}; only links "
                                "inside the library's folders are followed"),
        (str(root / "outdir"), f"symlink outside the library: {root / 'outdir'} points to {outside.parent}; only "
                               "links inside the library's folders are followed")]
    assert exact_duplicates(catalog) == []  # a link and its target are one file, not two copies
    alias_id = catalog_files(catalog, root)["alias.jpg"][0]
    assert alias_id in [r.file_id for r in search(catalog, bundle, parse_terms("a photo"), per_page=10).results]
    os.remove(root / "alias.jpg")
    os.symlink(outside, root / "alias.jpg")  # retargeted outside after the scan: never served
    page = search(catalog, bundle, parse_terms("a photo"), per_page=10)
    assert alias_id not in [r.file_id for r in page.results] and len(page.results) == 3
    report = scan(catalog, [root])
    assert report.removed == [str(root / "alias.jpg")]
    assert str(root / "alias.jpg") in dict(skipped(catalog))


# 9 ------------------------------------------------------------------------------------------------

def test_9_query_edge_cases_are_refused_with_a_sentence(tmp_path, capsys):
    from cliplab.indexes.search import check_page, parse_query
    cases = {
        "@999999999999999999999999999999": "There is no catalog file @999999999999999999999",
        "1" * 400 + ":dog": "is not usable: give a number above 0 and at most 100",
        "1e400:dog": "The weight 1e400 in the query",
        "0:dog": "The weight 0 in the query",
        "x" * 100_000: "A search text of 100,000 characters is too long",
    }
    for query, message in cases.items():
        with pytest.raises(CliplabError, match=re.escape(message)):
            parse_query(query)
    assert parse_query("2.5e-1:dog")[0].weight == 0.25
    for limit, offset, cutoff in [(-5, 0, None), (0, 0, None), (10, -1, None), (10, 0, float("nan")),
                                  (10, 0, float("inf"))]:
        with pytest.raises(CliplabError):
            check_page(limit, offset, cutoff)
    model_dir = save_model(tiny_bundle().model, tmp_path / "tiny-model")
    write_image(tmp_path / "p/a.jpg", 1)
    assert main(["index", str(tmp_path / "p"), "--model", str(model_dir), "--workers", "0"]) == 0
    capsys.readouterr()
    for args in (["--limit", "-5"], ["--cutoff", "nan"], ["--page", "0"]):
        with pytest.raises(SystemExit) as exit_:
            main(["search", "dog", "--model", str(model_dir), *args])
        assert exit_.value.code == 2
        assert "Traceback" not in capsys.readouterr().err
    assert main(["search", "@99999999999999999999999999", "--model", str(model_dir)]) == 2
    assert "There is no catalog file" in capsys.readouterr().err


def test_9_tokenizer_context_length_one_and_long_texts():
    from oracles import import_open_clip

    from cliplab.engine.tokenizer import MAX_TEXT_CHARS, Tokenizer, tokenize
    open_clip = import_open_clip()
    ours = tokenize(["a photo", "a"], context_length=1, truncate=True)
    assert ours.tolist() == open_clip.tokenize(["a photo", "a"], context_length=1).tolist() == [[49407], [49407]]
    with pytest.raises(CliplabError, match="at least 1 token"):
        tokenize(["a"], context_length=0)
    long_text = " ".join(["a photo of a cat on the beach"] * 2000)  # 60,000 characters
    np.testing.assert_array_equal(tokenize([long_text], truncate=True),
                                  open_clip.tokenize([long_text]))  # cut before tokenizing, same tokens
    with pytest.raises(CliplabError, match="characters long, over the 2,000"):
        tokenize(["x" * 100_000], truncate=True)  # one giant "word": refused at once, not 39 s of BPE
    with pytest.raises(CliplabError, match="characters long"):
        tokenize([long_text])
    assert len(Tokenizer().encode("dog " * (MAX_TEXT_CHARS // 4))) == MAX_TEXT_CHARS // 4


# 10 -----------------------------------------------------------------------------------------------

def test_10_the_date_is_the_capture_time_else_the_file_time_and_says_which(tmp_path):
    root = tmp_path / "photos"
    for name in ("captured.jpg", "scan2021.jpg", "scan2019.jpg"):
        write_image(root / name, len(name))
    set_mtime(root / "scan2021.jpg", datetime(2021, 3, 1, 12).timestamp())
    set_mtime(root / "scan2019.jpg", datetime(2019, 6, 1, 12).timestamp())
    set_mtime(root / "captured.jpg", datetime(2024, 1, 1).timestamp())
    catalog, bundle = open_catalog(), tiny_bundle()
    scan(catalog, [root])
    index(catalog, bundle)
    with catalog.session() as session, session.begin():
        session.execute(update(File).where(File.path == str(root / "captured.jpg"))
                        .values(captured_at=datetime(2020, 1, 5, 9)))
    page = search(catalog, bundle, parse_terms("a photo"), per_page=10, filters=Filters(after=datetime(2020, 1, 1)))
    assert sorted((os.path.basename(r.path), r.date, r.date_source) for r in page.results) == [
        ("captured.jpg", datetime(2020, 1, 5, 9), "capture"), ("scan2021.jpg", datetime(2021, 3, 1, 12), "file")]
    page = search(catalog, bundle, parse_terms("a photo"), per_page=10, filters=Filters(before=datetime(2020, 1, 1)))
    assert [(os.path.basename(r.path), r.date_source) for r in page.results] == [("scan2019.jpg", "file")]
    page = search(catalog, bundle, parse_terms("a photo"), per_page=10, sort="date")
    assert [os.path.basename(r.path) for r in page.results] == ["scan2019.jpg", "captured.jpg", "scan2021.jpg"]


# 11 -----------------------------------------------------------------------------------------------

def photo_like(seed: int) -> Image.Image:
    """A smooth random colour field with three discs: a picture the demo model never saw."""
    from cliplab.trainer.copy_detector import photo_like as drawn
    return drawn(1, seed)[0]


@pytest.mark.slow  # the demo model on 14 pictures: ~10 s
def test_11_duplicates_exact_near_and_never_empty_or_damaged(tmp_path):
    from cliplab.indexes.indexer import ModelBundle
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(10):
        photo_like(i).save(root / f"photo{i}.jpg", quality=90)
    photo_like(0).save(root / "photo0 re-saved.jpg", quality=60)
    photo_like(1).resize((160, 120)).save(root / "photo1 small.jpg", quality=90)
    shutil.copy(root / "photo2.jpg", root / "photo2 copy.jpg")
    (root / "empty1.jpg").write_bytes(b"")
    (root / "empty2.jpg").write_bytes(b"")
    cut = (root / "photo3.jpg").read_bytes()[:2000]
    (root / "cut1.jpg").write_bytes(cut)
    (root / "cut2.jpg").write_bytes(cut)
    catalog, bundle = open_catalog(), ModelBundle.load("demo", precision="fp32")
    scan(catalog, [root])
    index(catalog, bundle)
    exact = exact_duplicates(catalog)
    assert [[os.path.basename(m.path) for m in g.members] for g in exact] == [["photo2 copy.jpg", "photo2.jpg"]]
    detector = copy_detectors.get_detector()  # the learned one (the tests' quick one)
    groups = near_duplicates(catalog, detector)
    assert sorted(sorted(os.path.basename(m.path) for m in g.members) for g in groups) == [
        ["photo0 re-saved.jpg", "photo0.jpg"], ["photo1 small.jpg", "photo1.jpg"]]
    # The copy detector's cut is the same for every library and model: the different pictures stay apart.
    from cliplab.engine import copydetect
    from cliplab.engine.images import load_image
    different = detector.describe([load_image(root / f"photo{i}.jpg") for i in range(10)])
    assert max(copydetect.score(a, b) for i, a in enumerate(different) for b in different[i + 1:]) < groups[0].threshold
    assert all(g.kind == "similar" and g.keeper is None for g in groups)  # no delete advice for similar pictures
