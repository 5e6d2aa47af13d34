"""Search through the one path users take (app.services.search.search, behind the app, the CLI and the
Map): the query grammar, combined query vectors, filters, pagination, cut-off, more-like-this, and
queries embedded in the library's recorded mode and preprocessing."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from library_fixtures import tiny_bundle, write_image
from sqlalchemy import select, update

from cliplab.app.services.search import embed_query, file_term, parse_terms, search
from cliplab.engine.errors import CliplabError
from cliplab.engine.features import encode_texts
from cliplab.indexes.catalog import Embedding, File, from_blobs, open_catalog
from cliplab.indexes.indexer import index_pending
from cliplab.indexes.scan import scan
from cliplab.indexes.search import Filters, parse_query


def run(catalog, bundle, query: str, limit: int = 20, offset: int = 0, **options):
    """A page of the service's search for a typed query, by limit and offset."""
    return search(catalog, bundle, parse_terms(query), page=offset // limit + 1, per_page=limit, **options)


def test_grammar(tmp_path, monkeypatch):
    write_image(tmp_path / "ref.jpg", 1)
    monkeypatch.chdir(tmp_path)
    terms = parse_query('"2:dog on a beach" + ./ref.jpg - people')
    assert [(t.sign, t.weight, t.kind, t.value) for t in terms] == [
        (1, 2.0, "text", "dog on a beach"), (1, 1.0, "image", "./ref.jpg"), (-1, 1.0, "text", "people")]
    terms = parse_query("red t-shirt + 0.5:@12 - ref.jpg")
    assert [(t.sign, t.weight, t.kind, t.value) for t in terms] == [
        (1, 1.0, "text", "red t-shirt"), (1, 0.5, "file", "12"), (-1, 1.0, "image", "ref.jpg")]
    assert parse_query("- snow + mountains")[0].sign == -1
    assert parse_query('"a + b"')[0].value == "a + b"
    for bad in ["", "dog +", "dog + - cat", '"unclosed', "2:"]:
        with pytest.raises(CliplabError):
            parse_query(bad)


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "photos"
    for i in range(30):
        sub = "a" if i < 15 else "b"
        write_image(root / sub / f"{i:02d}.{'png' if i % 3 == 0 else 'jpg'}", i, fmt="PNG" if i % 3 == 0 else None)
    catalog = open_catalog()
    bundle = tiny_bundle()
    scan(catalog, [root])
    index_pending(catalog, bundle, workers=0, progress=False)
    with catalog.session() as session, session.begin():
        for f in session.scalars(select(File)):
            session.execute(update(File).where(File.id == f.id).values(captured_at=datetime(2020, 1, 1 + f.id % 28)))
    model_id = bundle.register(catalog)
    with catalog.session() as session:
        rows = session.execute(select(Embedding.file_id, Embedding.vector)).all()
    ids = np.array([r[0] for r in rows])
    vectors = from_blobs([r[1] for r in rows], 64)
    return catalog, bundle, model_id, root, ids, vectors


def brute_force(vector, ids, vectors, allowed=None):
    scores = vectors @ vector
    order = np.argsort(-scores, kind="stable")
    ranked = [int(ids[i]) for i in order]
    return [i for i in ranked if allowed is None or i in allowed]


def test_text_search_equals_brute_force_and_pages(library):
    catalog, bundle, _model_id, root, ids, vectors = library
    page = run(catalog, bundle, "a photo of a dog", limit=10)
    text = encode_texts(bundle.model, bundle.tokenizer, ["a photo of a dog"])[0]
    expected = brute_force(text, ids, vectors)
    assert [r.file_id for r in page.results] == expected[:10]
    assert page.results[0].score == pytest.approx(float(vectors[list(ids).index(expected[0])] @ text), abs=1e-5)
    second = run(catalog, bundle, "a photo of a dog", limit=10, offset=10)
    assert [r.file_id for r in second.results] == expected[10:20]


def test_combined_query_is_weighted_sum_of_normalised_embeddings(library, tmp_path):
    catalog, bundle, _model_id, root, ids, vectors = library
    ref = root / "a" / "01.jpg"
    terms = parse_query(f'"2:dog on a beach" + {ref} - people')
    got = embed_query(catalog, bundle, terms)
    t = encode_texts(bundle.model, bundle.tokenizer, ["dog on a beach", "people"])
    with catalog.session() as session:
        ref_id = session.scalar(select(File.id).where(File.path == str(ref)))
    image = vectors[list(ids).index(ref_id)]
    expected = 2 * t[0] + image / np.linalg.norm(image) - t[1]
    np.testing.assert_allclose(got, expected / np.linalg.norm(expected), atol=1e-5)
    page = run(catalog, bundle, f'"2:dog on a beach" + {ref} - people', limit=30)
    assert [r.file_id for r in page.results] == brute_force(got, ids, vectors)


def test_filters_folder_dates_types(library):
    catalog, bundle, _model_id, root, ids, vectors = library
    text = encode_texts(bundle.model, bundle.tokenizer, ["sunset"])[0]
    with catalog.session() as session:
        files = {f.id: f for f in session.scalars(select(File))}
    cases = [
        (Filters(folder=str(root / "a")), {i for i, f in files.items() if "/a/" in f.path}),
        (Filters(types=("PNG",)), {i for i, f in files.items() if f.ext == "png"}),
        (Filters(after=datetime(2020, 1, 5), before=datetime(2020, 1, 10)),
         {i for i, f in files.items() if datetime(2020, 1, 5) <= f.captured_at < datetime(2020, 1, 10)}),
    ]
    for filters, allowed in cases:
        page = run(catalog, bundle, "sunset", limit=50, filters=filters)
        assert [r.file_id for r in page.results] == brute_force(text, ids, vectors, allowed)


def test_cutoff_more_like_this_and_date_sort(library):
    catalog, bundle, _model_id, root, ids, vectors = library
    target = int(ids[4])
    similar = search(catalog, bundle, [file_term(target)], per_page=30)
    assert target not in [r.file_id for r in similar.results] and len(similar.results) == 29
    assert [r.file_id for r in similar.results] == [i for i in brute_force(vectors[4], ids, vectors) if i != target]
    cut = run(catalog, bundle, f"@{target}", limit=30, cutoff=1.0)
    sample = vectors @ vectors[4]
    assert cut.threshold == pytest.approx(sample.mean() + sample.std(), abs=1e-4)
    assert all(r.score >= cut.threshold for r in cut.results)
    assert len(cut.results) == int((np.delete(sample, 4) >= cut.threshold).sum())
    by_date = run(catalog, bundle, f"@{target}", limit=30, cutoff=1.0, sort="date")
    assert {r.file_id for r in by_date.results} == {r.file_id for r in cut.results}
    dates = [r.captured_at for r in by_date.results]
    assert dates == sorted(dates)
