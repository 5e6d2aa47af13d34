"""FAISS indexes: exact equals brute force, approximate recall, sync with the catalog, atomic files."""

from __future__ import annotations

import numpy as np
from sqlalchemy import delete, insert, update

from cliplab.indexes.catalog import Embedding, File, Folder, Model, open_catalog, to_blob
from cliplab.indexes.vectors import build, choose_kind, index_ids, open_index


def clustered(n: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def fill(catalog, vectors: np.ndarray) -> int:
    """Catalog rows for vectors (ids 1..n) under one model; returns the model id."""
    with catalog.session() as session, session.begin():
        session.add(Folder(id=1, path="/x", volume="/", online=True))
        model = Model(name="m", fingerprint="fp", embed_dim=vectors.shape[1], version=1)
        session.add(model)
        session.flush()
        session.execute(insert(File), [dict(id=i + 1, folder_id=1, path=f"/x/{i}.jpg", ext="jpg", size=1, mtime_ns=0,
                                            fingerprint=str(i), status="ok") for i in range(len(vectors))])
        session.execute(insert(Embedding), [dict(file_id=i + 1, model_id=model.id, vector=to_blob(v), version=1)
                                            for i, v in enumerate(vectors)])
        return model.id


def test_exact_search_equals_numpy_ranking():
    vectors = clustered(500, 32, 10)
    catalog = open_catalog()
    index = open_index(catalog, fill(catalog, vectors))
    assert index.kind == "flat"
    queries = clustered(5, 32, 10, seed=1)
    scores, ids = index.search(queries, 20)
    sims = queries @ vectors.T
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :20] + 1
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, expected - 1, 1), atol=1e-5)
    allowed = np.arange(1, 501, 7)
    _, ids = index.search(queries, 5, allowed)
    sub = sims[:, allowed - 1]
    np.testing.assert_array_equal(ids, allowed[np.argsort(-sub, axis=1, kind="stable")[:, :5]])


def test_approximate_recall_at_10():
    vectors = clustered(20_000, 32, 50)
    ids = np.arange(1, len(vectors) + 1)
    index = build(vectors, ids, "ivf")
    queries = clustered(200, 32, 50, seed=2)
    _, found = index.search(queries, 10)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10] + 1
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.95, recall
    assert choose_kind(1000) == "flat" and choose_kind(10**6) == "ivf" and choose_kind(10, "ivf") == "ivf"


def test_sync_follows_the_catalog_and_survives_reopen():
    vectors = clustered(300, 16, 5)
    catalog = open_catalog()
    model_id = fill(catalog, vectors)
    index = open_index(catalog, model_id)
    assert index.count == 300 and index.path.exists()
    assert open_index(catalog, model_id).sync()["action"] == "fresh"
    new = clustered(1, 16, 5, seed=9)[0]
    with catalog.session() as session, session.begin():  # remove two, re-embed one
        session.execute(delete(File).where(File.id.in_([1, 2])))
        session.execute(update(Model).values(version=2))
        session.execute(update(Embedding).where(Embedding.file_id == 3).values(vector=to_blob(new), version=2))
    reopened = open_index(catalog, model_id)
    assert sorted(index_ids(reopened.index).tolist()) == list(range(3, 301))
    np.testing.assert_array_equal(reopened.reconstruct(3), new)
    remaining = np.vstack([new[None], vectors[3:]])
    queries = clustered(3, 16, 5, seed=4)
    _, ids = reopened.search(queries, 10)  # the few-query numpy path over faiss's storage
    np.testing.assert_array_equal(ids, np.argsort(-(queries @ remaining.T), axis=1, kind="stable")[:, :10] + 3)
    _, ids_faiss = reopened.index.search(queries, 10)
    np.testing.assert_array_equal(ids, ids_faiss)
    assert not list(reopened.path.parent.glob("*.tmp"))


def test_damaged_index_file_is_rebuilt():
    vectors = clustered(50, 8, 3)
    catalog = open_catalog()
    model_id = fill(catalog, vectors)
    index = open_index(catalog, model_id)
    index.path.write_bytes(b"garbage")
    again = open_index(catalog, model_id)
    assert again.count == 50


def test_5_any_damage_or_mismatch_rebuilds_from_the_catalog_never_wrong_scores(caplog, tmp_path):
    """Issue 11, case 5: flipped bytes, a wrong dimension, another kind, a folder in the file's place."""
    import faiss
    from sqlalchemy import select

    from cliplab.indexes.catalog import VectorIndexState
    from cliplab.indexes.vectors import checksum, save_atomically
    vectors = clustered(200, 16, 4)
    catalog = open_catalog()
    model_id = fill(catalog, vectors)
    path = open_index(catalog, model_id).path
    queries = clustered(3, 16, 4, seed=7)
    truth = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10] + 1

    def flip_vector_bytes():
        data = bytearray(path.read_bytes())
        for at in range(len(data) // 3, len(data) // 3 + 400, 7):  # inside the stored vectors
            data[at] ^= 0xFF
        path.write_bytes(bytes(data))

    def replace_with(index, keep_checksum: bool):
        digest = save_atomically(index, path)
        if keep_checksum:  # the state agrees with the file: only the dimension / kind check can tell
            with catalog.session() as session, session.begin():
                session.get(VectorIndexState, model_id).checksum = digest

    other = faiss.IndexIDMap2(faiss.IndexFlatIP(8))
    other.add_with_ids(clustered(200, 8, 4), np.arange(1, 201))
    ivf = build(vectors, np.arange(1, 201), "ivf")
    damages = {
        "does not match its recorded checksum": flip_vector_bytes,
        "has dimension 8, the model's embeddings have 16": lambda: replace_with(other, True),
        "is a IndexIVFFlat, not a flat index": lambda: replace_with(ivf, True),
        "is not a file": lambda: (path.unlink(), path.mkdir(), (path / "x").write_text("x")),
        "is missing": path.unlink,
    }
    for why, damage in damages.items():
        damage()
        caplog.clear()
        index = open_index(catalog, model_id)
        assert any(why in r.getMessage() and "rebuilding it from the catalog" in r.getMessage()
                   for r in caplog.records), (why, [r.getMessage() for r in caplog.records])
        scores, ids = index.search(queries, 10)
        np.testing.assert_array_equal(ids, truth)
        np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, truth - 1, 1), atol=1e-5)
        assert path.is_file() and open_index(catalog, model_id).sync()["action"] == "fresh"
        with catalog.session() as session:
            state = session.scalar(select(VectorIndexState))
        assert (state.kind, state.dim, state.count, state.checksum) == ("flat", 16, 200, checksum(path.read_bytes()))
    assert len(list(path.parent.glob(path.name + ".damaged-*"))) == 1  # the folder was moved aside, not deleted
