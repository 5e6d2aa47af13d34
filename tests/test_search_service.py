"""cliplab.app.services.search and app.services.library with a tiny random model: structured terms (a path
with any characters is one image term), counts over indexed photos only, pages that stop at the
last one, a cut-off reported as a cosine, photo ids that must exist, a map selection that returns
exactly the selected photos, folders removed with their rows, system folders only when confirmed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from library_fixtures import tiny_bundle, write_image

from cliplab.app.services import library, search
from cliplab.app.services.app_state import AppState
from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import Embedding, File, open_catalog


@pytest.fixture
def state(cliplab_home) -> AppState:
    return AppState(bundle=tiny_bundle(), catalog=open_catalog())


@pytest.fixture
def photos(tmp_path) -> Path:
    for i in range(10):
        write_image(tmp_path / "photos" / f"p{i}.png", seed=i)
    write_image(tmp_path / "photos" / "IMG_1234 - Copy.png", seed=42)  # " - " would split a typed query
    write_image(tmp_path / "photos" / "two  spaces + plus.png", seed=43)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "photos" / "notes.txt").write_text("not a photo")
    return tmp_path / "photos"


@pytest.fixture
def indexed(state, photos) -> AppState:
    result = library.add_folders(state.catalog, state.search_bundle, [str(photos)])
    assert (result["embedded"], result["skipped"]) == (12, 1)
    return state


def run(state: AppState, terms, **kwargs) -> search.SearchView:
    return search.search(state.catalog, state.search_bundle, terms, index_cache=state.vector_indexes, **kwargs)


def message(fn, *args, **kwargs) -> str:
    with pytest.raises(CliplabError) as caught:
        fn(*args, **kwargs)
    return str(caught.value)


def test_an_image_path_with_any_characters_is_one_term(indexed, photos):
    for name in ("IMG_1234 - Copy.png", "two  spaces + plus.png"):
        path = str((photos / name).resolve())
        (term,) = [search.image_term(path)]
        assert (term.kind, term.value, term.sign, term.weight) == ("image", path, 1, 1.0)
        assert run(indexed, [term]).results[0].path == path  # the photo itself comes first
        # the typed grammar splits such a name: the reason the front ends pass terms, not strings
        assert len(search.parse_terms(path)) > 1
    away = run(indexed, [search.text_term("a red square"), search.image_term(photos / "IMG_1234 - Copy.png",
                                                                               weight=2.0, sign=-1)])
    assert away.results[-1].path.endswith("IMG_1234 - Copy.png")  # pushed to the end


def test_counts_are_indexed_photos_only_and_pages_stop_at_the_last(indexed, photos):
    everything = run(indexed, [search.text_term("anything")], per_page=5)
    assert (everything.total, everything.pages) == (12, 3)  # not broken.jpg nor notes.txt
    inside = run(indexed, [search.text_term("anything")], per_page=5, filters=search.make_filters(str(photos)))
    assert (inside.total, inside.pages) == (12, 3)  # the folder filter used to count the skipped file too
    pngs = run(indexed, [search.text_term("anything")], filters=search.make_filters(types=["png"]))
    assert pngs.total == 12
    far = run(indexed, [search.text_term("anything")], page=8, per_page=5)
    assert (far.page, far.pages, len(far.results)) == (3, 3, 2)  # "page 8 of 3" cannot happen
    seen = [r.file_id for p in (1, 2, 3) for r in run(indexed, [search.text_term("anything")], page=p,
                                                      per_page=5).results]
    assert len(seen) == len(set(seen)) == 12


def test_the_cut_off_is_a_cosine_and_says_when_nothing_can_pass(indexed):
    terms = [search.text_term("a red square")]
    some = run(indexed, terms, cutoff=0.0)
    assert some.threshold is not None and -1.0 <= some.threshold <= 1.0 and not some.threshold_unreachable
    assert all(r.score >= some.threshold for r in some.results) and some.total == len(some.results)
    none = run(indexed, terms, cutoff=1000.0)
    assert none.threshold_unreachable and none.threshold == 1.0 and none.results == [] and none.total == 0
    assert message(run, indexed, terms, cutoff=float("nan")) == (
        "The cut-off is a number of standard deviations, 0 or more, not nan.")


def test_photo_ids_weights_and_empty_queries_get_sentences(indexed, photos):
    assert message(run, indexed, [search.file_term(999_999)]) == (
        "There is no photo @999999 in the library; pick a photo from the results or the map to search for more "
        "like it.")
    with indexed.catalog.session() as session:
        broken = session.query(File.id).filter(File.path.endswith("broken.jpg")).scalar()
    assert message(run, indexed, [search.file_term(broken)]) == (
        f"Photo @{broken} could not be indexed (see the skipped files), so it cannot be searched with; pick another "
        "photo.")
    assert message(search.text_term, "dog", weight=float("nan")).startswith("A term's weight must be a positive")
    assert message(search.file_term, "@x12") == "'@x12' is not a photo id: ids are whole numbers, as in @123."
    assert message(run, indexed, [search.image_term(photos / "gone.png")]) == (
        f"The query image {photos / 'gone.png'} does not exist (or is not a file).")
    assert message(run, indexed, []) == (
        "Nothing to search with: type words, drop an image, or pick photos (more like these).")


def test_a_selection_returns_exactly_the_selected_photos(indexed):
    ids = sorted(int(i) for i in indexed.vector_indexes.get(indexed.search_bundle.register(indexed.catalog)).ids())
    chosen = [ids[1], ids[5], ids[8]]
    terms = [search.file_term(i) for i in chosen]
    view = run(indexed, terms, within=chosen)
    assert sorted(r.file_id for r in view.results) == chosen and view.total == 3
    like = run(indexed, terms)  # the same terms as "more like these" leave the selection out
    assert not {r.file_id for r in like.results} & set(chosen) and like.total == 9


def test_removing_a_folder_takes_its_rows_and_its_vectors(indexed, photos, tmp_path):
    other = tmp_path / "other"
    for i in range(3):
        write_image(other / f"o{i}.png", seed=100 + i)
    library.add_folders(indexed.catalog, indexed.search_bundle, [str(other)])
    assert run(indexed, [search.text_term("x")]).total == 15
    assert library.remove_folder(indexed.catalog, str(photos), index_cache=indexed.vector_indexes) == 13  # notes.txt was never catalogued
    with indexed.catalog.session() as session:
        paths = [p for (p,) in session.query(File.path)]
        assert session.query(Embedding).count() == 3
    assert sorted(Path(p).name for p in paths) == ["o0.png", "o1.png", "o2.png"]
    after = run(indexed, [search.text_term("x")])
    assert after.total == 3 and all(r.path.startswith(str(other.resolve())) for r in after.results)
    assert [f.path for f in library.library_summary(indexed.catalog).folders] == [str(other.resolve())]
    assert photos.is_dir() and len(list(photos.iterdir())) == 14  # nothing on disk was touched
    assert message(library.remove_folder, indexed.catalog, str(photos)) == (
        f"{photos} is not a library folder (the library's folders: {other.resolve()}).")


def test_system_folders_need_a_confirmation(state, tmp_path, monkeypatch):
    assert library.is_system_folder("/") and library.is_system_folder("/etc") and library.is_system_folder("/usr/lib")
    assert library.is_system_folder(Path.home())
    assert not library.is_system_folder(tmp_path)
    sneaky = tmp_path / "a" / "b"
    sneaky.mkdir(parents=True)
    relative = Path(*[".."] * len(sneaky.resolve().parts[1:])) / "etc"  # ../../etc from inside
    monkeypatch.chdir(sneaky)
    assert message(library.add_folders, state.catalog, state.bundle, [str(relative)]).startswith(
        "/etc is a system folder (or the whole home folder), not a photo folder; add the folder that holds your "
        "photos, or confirm that you mean to index this system folder.")
    assert library.library_summary(state.catalog).folders == []  # nothing was scanned
    assert library.check_folder("/etc", confirm_system=True) == "/etc"


def test_library_facts_for_pickers(indexed, photos):
    paths = library.indexed_paths(indexed.catalog)
    assert len(paths) == 12 and not any(p.endswith(("broken.jpg", "notes.txt")) for p in paths)
    target = str((photos / "p3.png").resolve())
    assert library.file_id_of(indexed.catalog, target) in {int(i) for i in np.arange(1, 20)}
    assert library.collection_names(indexed.catalog) == []
    listing = photos.parent / "tags.txt"
    listing.write_text("a red thing\na blue thing\n")
    assert library.add_texts(indexed.catalog, "tags", listing) == 2
    assert library.collection_names(indexed.catalog) == ["tags"]


def test_the_app_takes_query_images_from_the_library_or_its_uploads_only(indexed, photos, tmp_path):
    """An image path typed in the app (ImageScope) must lie in a library folder: outside, one sentence
    whether the file is a JPEG, a text file or missing (so the answer tells nothing of other files);
    the image the app received as an upload is taken wherever Gradio keeps it. The CLI (no scope) takes
    any file of its user."""
    outside = write_image(tmp_path / "private" / "secret.jpg", seed=5)
    (photos / "escape.jpg").symlink_to(outside)  # a link in the library to a file outside it
    scope = search.ImageScope()
    refused = {}
    for typed in (str(outside), "/etc/passwd", "/etc/no-such-file.jpg", str(tmp_path / "private"),
                  f"{photos}/../private/secret.jpg", str(photos / "escape.jpg")):
        for terms in (search.parse_terms(typed), [search.image_term(typed)], [search.image_term(typed, sign=-1),
                                                                             search.text_term("a circle")]):
            text = message(run, indexed, terms, images=scope)
            refused[typed] = text.replace(typed, "PATH")
            assert text.startswith(f"{typed} is not inside one of your library folders")
    assert len(set(refused.values())) == 1, refused  # the same sentence for all
    inside = str(photos / "p3.png")
    assert run(indexed, search.parse_terms(inside), images=scope).results[0].path == inside
    assert run(indexed, [search.image_term(outside)], images=search.ImageScope(uploads=(str(outside),))).total > 0
    assert run(indexed, [search.image_term(outside)]).total > 0  # the CLI


def test_photo_ids_in_queries_are_ascii_digits(indexed):
    """As the photo routes: '١' (Arabic-Indic) and '１' (full-width) are digits to int(), not photo ids."""
    for typed in ("@\u0661", "@\uff11", "@1\u0661"):
        assert "There is no catalog file" in message(search.parse_terms, typed)
    for given in ("\u0661", "@\uff11", "\u00b2", "-1"):
        assert "is not a photo id" in message(search.file_term, given)
    assert search.file_term("@7") == search.file_term(7)
