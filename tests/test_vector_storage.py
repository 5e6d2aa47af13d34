"""fp16 / int8 vector storage (FAISS scalar quantizers): recall against the exact ranking, bytes per
vector, and a catalog-synced index that stays right as the library grows; the exact few-query path
ranks as numpy does."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from sqlalchemy import insert, update
from test_vectors import clustered, fill

from cliplab.indexes.catalog import Embedding, File, Model, open_catalog, to_blob
from cliplab.indexes.vectors import (
    KINDS,
    back_with_huge_pages,
    build,
    choose_kind,
    exact_small_batch,
    index_ids,
    open_index,
)


def recall_at_10(index, vectors: np.ndarray, queries: np.ndarray) -> float:
    _, found = index.search(queries, 10)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10] + 1
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))


def saved_bytes(index, tmp_path) -> int:
    path = tmp_path / "x.faiss"
    faiss.write_index(index, str(path))
    return path.stat().st_size


@pytest.mark.parametrize("kind,max_ratio", [("flat-fp16", 0.55), ("flat-int8", 0.3), ("ivf-fp16", 0.6),
                                            ("ivf-int8", 0.4)])
def test_quantized_storage_keeps_recall_in_fewer_bytes(kind, max_ratio, tmp_path):
    vectors = clustered(20_000, 64, 50)
    ids = np.arange(1, len(vectors) + 1)
    index = build(vectors, ids, kind)
    queries = clustered(200, 64, 50, seed=2)
    assert recall_at_10(index, vectors, queries) >= 0.95
    if kind.startswith("flat"):  # 4 bytes a dimension become 2 or 1, beside the 8-byte id
        assert saved_bytes(index, tmp_path) / len(vectors) <= (2 if "fp16" in kind else 1) * 64 + 8 + 1
    fp32 = build(vectors, ids, kind.split("-")[0])  # IVF also keeps ids, centroids and the direct map
    assert saved_bytes(index, tmp_path) <= max_ratio * saved_bytes(fp32, tmp_path)
    assert sorted(index_ids(index).tolist()) == ids.tolist()


def test_kinds_with_storage_resolve_like_their_base():
    assert choose_kind(1000, "auto-int8") == "flat-int8" and choose_kind(10**6, "auto-int8") == "ivf-int8"
    assert choose_kind(10, "ivf-fp16") == "ivf-fp16" and "flat-int8" in KINDS
    with pytest.raises(ValueError):
        choose_kind(10, "flat-int4")


def test_an_int8_index_follows_the_catalog_as_it_grows():
    vectors = clustered(400, 32, 8)
    catalog = open_catalog()
    model_id = fill(catalog, vectors)
    index = open_index(catalog, model_id, "flat-int8")
    assert index.kind == "flat-int8" and index.count == 400
    more = clustered(600, 32, 8, seed=5)  # more than the vectors the ranges were trained on: rebuilt
    with catalog.session() as session, session.begin():
        session.execute(update(Model).values(version=2))
        session.execute(insert(File), [dict(id=401 + i, folder_id=1, path=f"/x/m{i}.jpg", ext="jpg", size=1,
                                            mtime_ns=0, fingerprint=f"m{i}", status="ok") for i in range(600)])
        session.execute(insert(Embedding), [dict(file_id=401 + i, model_id=model_id, vector=to_blob(v), version=2)
                                            for i, v in enumerate(more)])
    grown = open_index(catalog, model_id, "flat-int8")
    assert grown.count == 1000
    everything = np.vstack([vectors, more])
    queries = clustered(50, 32, 8, seed=7)
    assert recall_at_10(grown, everything, queries) >= 0.95
    assert open_index(catalog, model_id, "flat-int8").sync()["action"] == "fresh"


def test_exact_few_query_path_ranks_as_numpy_with_ties_in_storage_order():
    vectors = clustered(1000, 16, 4)
    vectors[500] = vectors[10]  # an exact tie: storage order decides, as a stable sort does
    ids = np.arange(1, 1001)
    index = build(vectors, ids, "flat")
    for queries in (vectors[10:11], clustered(3, 16, 4, seed=3)):
        scores, found = exact_small_batch(index, index_ids(index), queries, 20)
        sims = queries @ vectors.T
        expected = np.argsort(-sims, axis=1, kind="stable")[:, :20] + 1
        np.testing.assert_array_equal(found, expected)
        np.testing.assert_allclose(scores, np.take_along_axis(sims, expected - 1, 1), atol=1e-5)
    _, everything = exact_small_batch(index, index_ids(index), vectors[:1], 1000)  # k == n
    assert len(set(everything[0].tolist())) == 1000


def _huge_kb_around(address: int) -> int:
    """AnonHugePages of the memory mapping that holds address (from /proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low <= address < high
            elif inside and line.startswith("AnonHugePages"):
                return int(line.split()[1])
    return 0


def _huge_pages_possible() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def test_flat_storage_on_huge_pages_keeps_every_result():
    """The exact scan's storage moved onto 2 MB pages (where Linux allows it) answers as before, and
    where transparent huge pages are available the storage really is on them afterwards."""
    vectors = clustered(150_000, 64, 8)  # 38 MB: a mapping of its own (over malloc's 32 MB threshold)
    index = build(vectors, np.arange(1, 150_001), "flat")
    queries = clustered(3, 64, 8, seed=5)
    before = exact_small_batch(index, index_ids(index), queries, 20)
    back_with_huge_pages(index, wait=True)
    after = exact_small_batch(index, index_ids(index), queries, 20)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])
    if _huge_pages_possible():
        storage = faiss.rev_swig_ptr(faiss.downcast_index(index.index).get_xb(), 1).ctypes.data
        first_whole_page = -(-storage // (2 << 20)) * (2 << 20)  # the advice splits the mapping there
        assert _huge_kb_around(first_whole_page) >= 16 * 1024  # most of its 18 whole 2 MB pages
    back_with_huge_pages(build(vectors[:10], np.arange(10), "flat-int8"), wait=True)  # not flat fp32: nothing
