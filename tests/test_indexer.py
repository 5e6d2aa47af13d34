"""The indexer: bad files recorded with reasons, worker processes, kill -9 safety, skipped listing."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from library_fixtures import tiny_bundle, write_image
from PIL import Image
from sqlalchemy import func, select

from cliplab.indexes.catalog import Embedding, File, open_catalog
from cliplab.indexes.indexer import index_pending
from cliplab.indexes.scan import scan

ROOT = Path(__file__).resolve().parents[1]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_bad_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    write_image(folder / "good.jpg", 1)
    data = (folder / "good.jpg").read_bytes()
    write_image(folder / "big.jpg", 2, size=(400, 300), quality=95)
    big = (folder / "big.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(big[: len(big) // 2])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not a photo\n" * 20)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b""))
    Image.new("CMYK", (40, 40), (10, 200, 30, 0)).save(folder / "cmyk.jpg")
    Image.fromarray((np.arange(48 * 40).reshape(40, 48) * 30).astype(np.uint16)).save(folder / "sixteen.png")
    palette = Image.new("P", (40, 40), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(folder / "palette.png", transparency=0)
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "green", "blue")]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.open(folder / "good.jpg").resize((60, 30)).save(folder / "rotated.jpg", exif=exif)
    assert data


@pytest.mark.slow  # a real subprocess / process pool: ~15-20 s on 2 cores
def test_bad_files_are_indexed_or_recorded_with_reasons(tmp_path):
    folder = tmp_path / "bad"
    make_bad_folder(folder)
    catalog = open_catalog()
    scan(catalog, [folder])
    report = index_pending(catalog, tiny_bundle(), batch_size=4, workers=2, time_limit=20, progress=False)
    with catalog.session() as session:
        files = {Path(f.path).name: f for f in session.scalars(select(File))}
        embedded = {Path(p).name for p in session.scalars(select(File.path).join(Embedding, Embedding.file_id == File.id))}
    ok = {"good.jpg", "big.jpg", "cmyk.jpg", "sixteen.png", "palette.png", "anim.gif", "rotated.jpg"}
    assert embedded == ok
    assert {n for n, f in files.items() if f.status == "ok"} == ok
    reasons = {n: f.skip_reason.split(":")[0] for n, f in files.items() if f.status == "skipped"}
    assert reasons == {"truncated.jpg": "truncated", "zero.jpg": "empty file", "text.jpg": "not an image",
                       "huge.png": "too large"}
    assert (report.embedded, report.skipped) == (7, 4)
    assert (files["rotated.jpg"].width, files["rotated.jpg"].height) == (30, 60)  # EXIF orientation applied
    # a rerun has nothing left to do: skipped files stay skipped until they change
    assert index_pending(catalog, tiny_bundle(), workers=0, progress=False).embedded == 0


def test_decoded_embedding_matches_direct_encoding(tmp_path):
    from cliplab.engine.features import encode_images
    from cliplab.engine.images import load_image
    write_image(tmp_path / "p/a.jpg", 3)
    bundle = tiny_bundle()
    catalog = open_catalog()
    scan(catalog, [tmp_path / "p"])
    index_pending(catalog, bundle, workers=1, progress=False)
    with catalog.session() as session:
        blob = session.scalar(select(Embedding.vector))
    direct = encode_images(bundle.model, bundle.preprocess, [load_image(tmp_path / "p/a.jpg")])[0]
    np.testing.assert_allclose(np.frombuffer(blob, np.float32), direct, atol=1e-6)


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, "tests")
from library_fixtures import tiny_bundle
from cliplab.indexes.catalog import open_catalog
from cliplab.indexes.indexer import index_pending
from cliplab.indexes.scan import scan
catalog = open_catalog(sys.argv[1])
scan(catalog, [sys.argv[2]])
def on_batch(n, report):
    print(f"committed batch {n}", flush=True)
    time.sleep(0.3)
index_pending(catalog, tiny_bundle(), batch_size=4, workers=0, progress=False, on_batch=on_batch)
print("finished", flush=True)
"""


@pytest.mark.slow  # a real subprocess / process pool: ~15-20 s on 2 cores
def test_kill_9_loses_at_most_the_batch_in_flight(tmp_path):
    photos = tmp_path / "photos"
    for i in range(40):
        write_image(photos / f"{i:02d}.jpg", i)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, url, str(photos)], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen = []
    for line in process.stdout:
        seen.append(line.strip())
        if line.startswith("committed batch 3"):
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL and "finished" not in seen
    catalog = open_catalog(url)
    with catalog.session() as session:
        done = session.scalar(select(func.count()).select_from(Embedding))
        ok = session.scalar(select(func.count()).select_from(File).where(File.status == "ok"))
    assert 12 <= done < 40 and done % 4 == 0 and ok == done  # whole batches only
    from cliplab.indexes.writer import holder
    assert holder(catalog).pid == process.pid  # the killed run's writer lock is left behind...
    rerun = index_pending(catalog, tiny_bundle(), batch_size=4, workers=0, progress=False)  # ...and taken over
    assert holder(catalog) is None
    assert rerun.embedded == 40 - done
    with catalog.session() as session:
        per_file = session.execute(select(Embedding.file_id, func.count()).group_by(Embedding.file_id)).all()
        assert len(per_file) == 40 and all(count == 1 for _, count in per_file)
        assert session.scalar(select(func.count()).select_from(File).where(File.status != "ok")) == 0
