"""The CLI end to end, duplicates, export, text collections and captioned datasets, torchrun sharding."""

from __future__ import annotations

import csv
import shutil
from datetime import datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest
from library_fixtures import tiny_bundle, write_image
from PIL import Image
from sqlalchemy import select, update

from cliplab.app.cli import main
from cliplab.app.services import copy_detectors
from cliplab.engine.weights import save_model
from cliplab.indexes.catalog import Embedding, File, from_blobs, open_catalog
from cliplab.indexes.duplicates import exact_duplicates, near_duplicates
from cliplab.indexes.export import export
from cliplab.indexes.indexer import index_pending
from cliplab.indexes.scan import scan
from cliplab.indexes.search import image_embedding
from cliplab.indexes.texts import add_collection, read_texts


def test_cli_index_search_skipped_export(tmp_path, capsys):
    model_dir = save_model(tiny_bundle().model, tmp_path / "tiny-model")
    photos = tmp_path / "photos"
    for i in range(6):
        write_image(photos / f"{i}.jpg", i)
    (photos / "broken.jpg").write_bytes(b"")
    assert main(["index", str(photos), "--model", str(model_dir), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "7 new" in out and "embedded 6, skipped 1" in out and "flat, 6 vectors" in out
    assert main(["index", "--skipped"]) == 0
    out = capsys.readouterr().out
    assert "broken.jpg\tempty file" in out and "1 file(s) skipped" in out
    assert main(["search", "a red square", "--model", str(model_dir), "--limit", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[0].strip().startswith("1")
    assert main(["export", str(tmp_path / "e.parquet"), "--model", str(model_dir)]) == 0
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.num_rows == 6 and len(table.column("embedding")[0]) == 64
    assert main(["search", "x", "--model", str(model_dir), "--after", "yesterday"]) == 2  # a sentence, no trace


def test_export_npz_matches_catalog(tmp_path):
    for i in range(3):
        write_image(tmp_path / "p" / f"{i}.png", i, fmt="PNG")
    catalog, bundle = open_catalog(), tiny_bundle()
    scan(catalog, [tmp_path / "p"])
    index_pending(catalog, bundle, workers=0, progress=False)
    assert export(catalog, bundle.register(catalog), tmp_path / "e.npz") == 3
    data = np.load(tmp_path / "e.npz")
    with catalog.session() as session:
        rows = session.execute(select(Embedding.file_id, Embedding.vector).order_by(Embedding.file_id)).all()
    np.testing.assert_array_equal(data["embeddings"], from_blobs([r[1] for r in rows], 64))
    assert data["file_id"].tolist() == [r[0] for r in rows] and data["path"][0].endswith("0.png")


def test_duplicates_exact_near_bursts_and_keeper(tmp_path):
    root = tmp_path / "p"
    write_image(root / "orig.jpg", 1, size=(64, 48))
    shutil.copy(root / "orig.jpg", root / "copy.jpg")
    Image.open(root / "orig.jpg").resize((128, 96)).save(root / "big.jpg")  # same picture, bigger
    Image.open(root / "orig.jpg").resize((128, 96)).save(root / "later.jpg", quality=80)
    write_image(root / "other.jpg", 50)
    catalog, bundle = open_catalog(), tiny_bundle()
    scan(catalog, [root])
    index_pending(catalog, bundle, workers=0, progress=False)
    exact = exact_duplicates(catalog)
    assert [sorted(m.path.rsplit("/", 1)[1] for m in g.members) for g in exact] == [["copy.jpg", "orig.jpg"]]
    t0 = datetime(2024, 5, 1, 12)
    times = {"orig.jpg": t0, "copy.jpg": t0 + timedelta(seconds=5), "big.jpg": t0 + timedelta(seconds=30),
             "later.jpg": t0 + timedelta(days=3), "other.jpg": t0}
    with catalog.session() as session, session.begin():
        for f in session.scalars(select(File)):
            session.execute(update(File).where(File.id == f.id).values(captured_at=times[f.path.rsplit("/", 1)[1]]))
    groups = near_duplicates(catalog, copy_detectors.get_detector(), burst_seconds=60)
    names = [sorted(m.path.rsplit("/", 1)[1] for m in g.members) for g in groups]
    # copy.jpg is orig.jpg's exact copy: that pair is an exact group, and takes part here as its keeper
    # (orig.jpg, captured first) alone; later.jpg: same picture, another day
    assert names == [["big.jpg", "orig.jpg"]]
    assert groups[0].kind == "similar" and groups[0].keeper is None  # alike, not copies: nothing to delete
    assert exact[0].keeper.path.endswith("orig.jpg")  # equal resolution: the earliest date wins


def test_text_collection_and_captioned_dataset(tmp_path):
    root = tmp_path / "ds"
    for i in range(4):
        write_image(root / "img" / f"{i}.jpg", i)
    with open(root / "captions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        for i in range(4):
            writer.writerow([f"img/{i}.jpg", f"picture number {i}"])
            writer.writerow([f"img/{i}.jpg", f"another caption {i}"])
    texts, images = read_texts(root / "captions.csv")
    assert len(texts) == 8 and images[0] == str(root / "img" / "0.jpg")
    catalog, bundle = open_catalog(), tiny_bundle()
    add_collection(catalog, "ds", texts, images)
    scan(catalog, [root / "img"])
    index_pending(catalog, bundle, workers=0, progress=False)
    from cliplab.app.services.captions import image_to_texts
    picture = str(root / "img" / "2.jpg")
    hits = image_to_texts(bundle, picture, "collection:ds", k=8, catalog=catalog)
    from cliplab.engine.features import encode_texts
    brute = np.argsort(-(encode_texts(bundle.model, bundle.tokenizer, texts) @ image_embedding(bundle, picture)),
                       kind="stable")
    assert [h.text for h in hits] == [texts[i] for i in brute]
    assert sorted(h.text for h in hits if h.true_pair) == ["another caption 2", "picture number 2"]
    words = tmp_path / "tags.txt"
    words.write_text("cat\ndog\n\nboat\n")
    assert read_texts(words)[0] == ["cat", "dog", "boat"]
    with pytest.raises(Exception, match="missing"):
        image_to_texts(bundle, picture, "collection:missing", catalog=catalog)


TORCHRUN_SCRIPT = """
import sys
sys.path.insert(0, "tests")
from library_fixtures import tiny_bundle
from cliplab.indexes.distributed import main
if __name__ == "__main__":
    main(sys.argv[1:], bundle=tiny_bundle())
"""


@pytest.mark.slow  # a real subprocess / process pool: ~15-20 s on 2 cores
def test_torchrun_two_cpu_processes_shard_and_merge(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from cliplab.engine.features import encode_images
    from cliplab.engine.images import load_image

    root = Path(__file__).resolve().parents[1]
    photos = tmp_path / "p"
    for i in range(11):
        write_image(photos / f"{i:02d}.jpg", i)
    (photos / "bad.jpg").write_text("no")
    script = tmp_path / "run.py"
    script.write_text(TORCHRUN_SCRIPT)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), str(photos), "--catalog", url, "--batch-size", "2", "--workers", "0"],
                            cwd=root, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "embedded 11, skipped 1 in 3 steps on 2 processes" in result.stdout
    catalog = open_catalog(url)
    with catalog.session() as session:
        rows = session.execute(select(File.path, Embedding.vector).join(Embedding, Embedding.file_id == File.id)
                               .order_by(File.path)).all()
        assert session.scalar(select(File.skip_reason).where(File.status == "skipped")).startswith("not an image")
    assert len(rows) == 11
    bundle = tiny_bundle()
    direct = encode_images(bundle.model, bundle.preprocess, [load_image(p) for p, _ in rows])
    np.testing.assert_allclose(from_blobs([v for _, v in rows], 64), direct, atol=1e-5)
