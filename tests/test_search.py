"""Search through the one path users take (app.services.search.search, behind the app, the CLI and the
Map): the query grammar, combined query vectors, filters, pagination, cut-off, more-like-this, and
queries embedded in the library's recorded mode and preprocessing."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
import torch
from library_fixtures import tiny_bundle, write_image
from sqlalchemy import select, update

from cliplab.app.services.search import embed_query, file_term, image_term, parse_terms, search, text_term
from cliplab.engine.errors import CliplabError
from cliplab.engine.features import encode_texts
from cliplab.engine.handle import ModelBundle
from cliplab.engine.images import Preprocess, load_image
from cliplab.indexes.catalog import Embedding, File, Model, from_blobs, open_catalog
from cliplab.indexes.indexer import PreprocessingChanged, index_pending
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


# -- queries are embedded as the library was ---------------------------------------------------------

def _small_library(tmp_path, bundle, count: int = 8):
    root = tmp_path / "photos"
    for i in range(count):
        write_image(root / f"{i}.png", 100 + i, size=(48 + 4 * i, 40), fmt="PNG")
    catalog = open_catalog()
    scan(catalog, [root])
    report = index_pending(catalog, bundle, workers=0, progress=False)
    return catalog, root, report


def _vectors(catalog, model_id: int) -> tuple[np.ndarray, np.ndarray]:
    with catalog.session() as session:
        rows = session.execute(select(Embedding.file_id, Embedding.vector).where(Embedding.model_id == model_id)
                               .order_by(Embedding.file_id)).all()
    return np.array([r[0] for r in rows]), from_blobs([r[1] for r in rows], 64)


@pytest.mark.parametrize("library_mode", ["bf16", "onnx-fp32"])
def test_queries_are_embedded_in_the_librarys_recorded_mode_whatever_the_handle(tmp_path, library_mode):
    """The library was indexed in one mode; the handle the app or CLI holds runs another (fp32 here,
    whatever 'auto' would pick): texts and images are embedded in the library's mode."""
    bundle = tiny_bundle()
    catalog, root, _ = _small_library(tmp_path, bundle.using(library_mode))
    assert catalog.recorded_mode(bundle.fingerprint) == library_mode
    held = bundle.using("fp32")
    in_library_mode = bundle.using(library_mode)
    text = [text_term("a red square")]
    got = embed_query(catalog, held, text)
    np.testing.assert_allclose(got, in_library_mode.encode_texts(["a red square"])[0], atol=1e-6)
    if library_mode == "bf16":  # the modes differ measurably, so the test can tell which one embedded
        assert np.abs(got - held.encode_texts(["a red square"])[0]).max() > 1e-4
    picture = root / "3.png"
    pixels = torch.from_numpy(np.array(bundle.preprocess(load_image(picture))))[None]
    np.testing.assert_allclose(embed_query(catalog, held, [image_term(picture)]),
                               in_library_mode.encode_pixels(pixels)[0], atol=1e-6)
    ids, vectors = _vectors(catalog, bundle.register(catalog))
    view = search(catalog, held, text, per_page=8)
    expected = vectors @ in_library_mode.encode_texts(["a red square"])[0]
    assert [r.file_id for r in view.results] == [int(ids[i]) for i in np.argsort(-expected, kind="stable")]
    np.testing.assert_allclose([r.score for r in view.results], np.sort(expected)[::-1], atol=1e-5)


def test_query_images_use_the_librarys_preprocessing_and_a_changed_one_is_refused_then_reembedded(tmp_path):
    """A release preprocessing otherwise than the reference (mean/std 0.5, squash): a library photo used as
    the query image finds itself at cosine 1 (decoded and preprocessed as the library was). The same
    weights with other preprocessing are refused by search with a sentence, and the next index run
    re-embeds the library and says why."""
    base = tiny_bundle()
    release = ModelBundle(base.model, Preprocess(32, mean=(0.5,) * 3, std=(0.5,) * 3, resize_mode="squash"),
                          base.tokenizer, "release")
    catalog, root, _ = _small_library(tmp_path, release)
    model_id = release.register(catalog)
    ids, vectors = _vectors(catalog, model_id)
    picture = root / "5.png"
    view = search(catalog, release, [image_term(picture)], per_page=3)
    assert view.results[0].path == str(picture) and view.results[0].score == pytest.approx(1.0, abs=1e-5)
    pixels = torch.from_numpy(np.array(release.preprocess(load_image(picture))))[None]
    np.testing.assert_allclose(embed_query(catalog, release, [image_term(picture)]),
                               release.encode_pixels(pixels)[0], atol=1e-6)

    reference = ModelBundle(base.model, Preprocess(32), base.tokenizer, "release")  # the same weights
    with pytest.raises(PreprocessingChanged, match="cliplab index"):
        search(catalog, reference, [text_term("a dog")])
    report = index_pending(catalog, reference, workers=0, progress=False)
    assert report.embedded == len(ids) and "Re-embedding" in report.notes[0]
    _, again = _vectors(catalog, model_id)
    assert np.abs(again - vectors).max() > 1e-3  # made under the other preprocessing now
    view = search(catalog, reference, [image_term(picture)], per_page=3)
    assert view.results[0].path == str(picture) and view.results[0].score == pytest.approx(1.0, abs=1e-5)
    assert index_pending(catalog, reference, workers=0, progress=False).notes == []  # recorded: nothing to redo


def test_a_library_indexed_before_preprocessing_was_recorded(tmp_path):
    """NULL preprocessing: those builds used the reference transform. A reference release just records
    it; a release with other preprocessing re-embeds everything on the next index run."""
    bundle = tiny_bundle()
    catalog, root, first = _small_library(tmp_path, bundle)
    with catalog.session() as session, session.begin():
        session.execute(update(Model).values(preprocessing=None))  # as migration 0007 leaves old catalogs
    again = index_pending(catalog, bundle, workers=0, progress=False)
    assert (again.embedded, again.notes) == (0, [])
    with catalog.session() as session:
        assert Preprocess.from_record(session.scalar(select(Model.preprocessing))) == bundle.preprocess
        session.execute(update(Model).values(preprocessing=None))
        session.commit()
    release = ModelBundle(bundle.model, Preprocess(32, mean=(0.5,) * 3, std=(0.5,) * 3), bundle.tokenizer, "tiny")
    with pytest.raises(PreprocessingChanged):
        search(catalog, release, [text_term("a dog")])
    redone = index_pending(catalog, release, workers=0, progress=False)
    assert redone.embedded == first.embedded and "indexed before preprocessing was recorded" in redone.notes[0]
