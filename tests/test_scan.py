"""Incremental scans: each case checked against the exact catalog contents it must leave."""

from __future__ import annotations

import os
import shutil

import numpy as np
from library_fixtures import set_mtime, write_image
from sqlalchemy import select

from cliplab.indexes.catalog import Embedding, File, Folder, Model, open_catalog, to_blob
from cliplab.indexes.scan import fingerprint, scan


def contents(catalog, root) -> dict[str, tuple[int, str]]:
    """relative path -> (file id, status) for the whole catalog."""
    with catalog.session() as session:
        return {os.path.relpath(f.path, root): (f.id, f.status) for f in session.scalars(select(File))}


def fake_embed(catalog) -> None:
    """Give every file an embedding (what the indexer would do), to see them reused or dropped."""
    with catalog.session() as session, session.begin():
        model = session.scalar(select(Model)) or Model(name="m", fingerprint="f", embed_dim=2, version=1)
        session.add(model)
        session.flush()
        for f in session.scalars(select(File)):
            if session.get(Embedding, (f.id, model.id, 0)) is None:
                session.add(Embedding(file_id=f.id, model_id=model.id, vector=to_blob(np.array([f.id, 0.0])), version=1))
                f.status = "ok"


def embedded(catalog) -> dict[int, float]:
    with catalog.session() as session:
        return {e.file_id: float(np.frombuffer(e.vector, np.float32)[0]) for e in session.scalars(select(Embedding))}


def test_walk_filters_extensions_hidden_and_appledouble(tmp_path):
    root = tmp_path / "photos"
    for name in ["a.JPG", "b.jpeg", "c.Png", "d.webp", "e.bmp", "f.gif", "g.TIF", "h.tiff", "i.heic", "j.HEIF",
                 "._a.jpg", ".DS_Store", ".hidden.jpg", "notes.txt", "noext", ".dir/x.jpg", "sub/k.jpg"]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    catalog = open_catalog()
    report = scan(catalog, [root])
    assert sorted(contents(catalog, root)) == sorted(
        ["a.JPG", "b.jpeg", "c.Png", "d.webp", "e.bmp", "f.gif", "g.TIF", "h.tiff", "i.heic", "j.HEIF", "sub/k.jpg"])
    assert len(report.added) == 11


def test_add_change_remove_move_and_unchanged_not_read(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    for i in range(4):
        write_image(root / f"p{i}.jpg", i)
    write_image(root / "deep/q.png", 9)
    catalog = open_catalog()
    scan(catalog, [root])
    fake_embed(catalog)
    before = contents(catalog, root)
    assert set(before) == {"p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "deep/q.png"}

    # unchanged: nothing is opened
    import cliplab.indexes.scan as scan_module
    opened = []
    monkeypatch.setattr(scan_module, "fingerprint", lambda p: opened.append(p) or fingerprint(p))
    report = scan(catalog, [root])
    assert opened == [] and report.unchanged == 5 and contents(catalog, root) == before

    # add one, change one, remove one, move one, rename one; touch one (same bytes, new mtime)
    write_image(root / "new.jpg", 20)
    write_image(root / "p1.jpg", 21)
    set_mtime(root / "p1.jpg", 1_000_000)
    os.remove(root / "p2.jpg")
    (root / "moved").mkdir()
    shutil.move(root / "p3.jpg", root / "moved/p3.jpg")
    os.rename(root / "deep/q.png", root / "deep/renamed.png")
    set_mtime(root / "p0.jpg", 2_000_000)
    report = scan(catalog, [root])
    after = contents(catalog, root)
    assert report.added == [str(root / "new.jpg")]
    assert report.changed == [str(root / "p1.jpg")]
    assert report.removed == [str(root / "p2.jpg")]
    assert sorted(report.moved) == sorted([(str(root / "p3.jpg"), str(root / "moved/p3.jpg")),
                                           (str(root / "deep/q.png"), str(root / "deep/renamed.png"))])
    assert set(after) == {"p0.jpg", "p1.jpg", "new.jpg", "moved/p3.jpg", "deep/renamed.png"}
    # ids kept across moves, renames, touches and changes; embeddings kept except for changed content
    assert after["moved/p3.jpg"][0] == before["p3.jpg"][0]
    assert after["deep/renamed.png"][0] == before["deep/q.png"][0]
    assert after["p0.jpg"] == before["p0.jpg"]
    assert after["p1.jpg"] == (before["p1.jpg"][0], "pending")
    assert after["new.jpg"][1] == "pending"
    emb = embedded(catalog)
    assert set(emb) == {before["p0.jpg"][0], before["p3.jpg"][0], before["deep/q.png"][0]}
    assert emb[before["p3.jpg"][0]] == before["p3.jpg"][0]  # the very same vector


def test_copy_of_known_content_reuses_embedding(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "a.jpg", 1)
    catalog = open_catalog()
    scan(catalog, [root])
    fake_embed(catalog)
    shutil.copy2(root / "a.jpg", root / "copy.jpg")
    scan(catalog, [root])
    after = contents(catalog, root)
    assert after["copy.jpg"][1] == "ok"
    emb = embedded(catalog)
    assert emb[after["copy.jpg"][0]] == emb[after["a.jpg"][0]]


def test_offline_volume_keeps_files_and_comes_back(tmp_path):
    root = tmp_path / "usb"
    for i in range(3):
        write_image(root / f"{i}.jpg", i)
    catalog = open_catalog()
    scan(catalog, [root])
    fake_embed(catalog)
    before = contents(catalog, root)
    os.rename(root, tmp_path / "unplugged")  # the mount point is gone
    report = scan(catalog, [root])
    assert report.offline == [str(root)] and report.removed == []
    assert contents(catalog, root) == before and len(embedded(catalog)) == 3
    with catalog.session() as session:
        assert session.scalar(select(Folder.online)) is False
    os.rename(tmp_path / "unplugged", root)
    report = scan(catalog, [root])
    assert report.unchanged == 3 and report.offline == [] and contents(catalog, root) == before
    with catalog.session() as session:
        assert session.scalar(select(Folder.online)) is True


def test_subfolder_then_parent_share_one_folder(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "a/1.jpg", 1)
    write_image(root / "b/2.jpg", 2)
    catalog = open_catalog()
    scan(catalog, [root / "a"])
    first = contents(catalog, root)
    scan(catalog, [root])
    after = contents(catalog, root)
    assert after["a/1.jpg"] == first["a/1.jpg"] and set(after) == {"a/1.jpg", "b/2.jpg"}
    with catalog.session() as session:
        assert [f.path for f in session.scalars(select(Folder))] == [str(root)]
