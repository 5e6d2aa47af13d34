"""What a first-time user hit in the app (issue 27, items 15-18), checked below the browser: the service
and tab functions the pages call. tests/test_browser.py drives the same paths in Chromium."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from library_fixtures import tiny_bundle, write_image

from cliplab.app.services import audit_report, classify
from cliplab.app.services import search as search_service
from cliplab.app.ui.common import NotYet, UserError, reported
from cliplab.engine.audit.datasets import load_csv
from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import open_catalog

# -- 15: "more like the selected photo" with nothing selected keeps the results ---------------------

def test_a_request_refused_for_a_missing_choice_leaves_the_page_as_it_was():
    def more_like(selected):
        raise NotYet("Select a photo in the results first (click it), then ask for more like it.")

    *values, errors = reported(more_like, outputs=3)(None)
    assert values == [{"__type__": "update"}] * 3  # the gallery, the info line, the ids: all kept
    assert "Select a photo" in errors["value"] and errors["visible"]
    # any other mistake still clears the action's stale results
    *values, _ = reported(lambda: (_ for _ in ()).throw(UserError("no")), outputs=2)()
    assert values == [None, None]


# -- 16: the info line says what the query is -------------------------------------------------------

def test_the_query_is_described_with_its_image_and_photo(tmp_path):
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    terms = [search_service.file_term(7), search_service.image_term(tmp_path / "holiday snap.png"),
             search_service.text_term("stripes", sign=-1), search_service.text_term("red", weight=2)]
    assert search_service.describe_terms(catalog, terms) == \
        "photo @7 + image holiday snap.png - 'stripes' + 2×'red'"


def test_a_non_image_is_refused_when_dropped(tmp_path):
    from gradio.data_classes import ImageData

    from cliplab.app.ui.common import image_drop, refuse_non_image
    fake = tmp_path / "notes.jpg"
    fake.write_text("words")
    value = image_drop().preprocess(ImageData(path=str(fake), orig_name="notes.jpg"))
    box, errors = reported(refuse_non_image, outputs=1)(value)
    assert box is None  # the box is emptied, so later searches are not failed by it
    assert "notes.jpg is not an image" in errors["value"]
    real = write_image(tmp_path / "real.png", 1)
    box, errors = reported(refuse_non_image, outputs=1)(str(real))
    assert box == {"__type__": "update"} and not errors["visible"]


# -- 17: class names, templates, audit datasets -----------------------------------------------------

def test_a_long_template_is_reported_as_the_template_and_echoed_short():
    bundle = tiny_bundle()
    template = "a photo of a {} " + "very " * 2000
    with pytest.raises(CliplabError) as caught:
        classify.check_prompt_lengths(bundle.tokenizer, ["cat", "dog"], [template], 77)
    message = str(caught.value)
    assert message.startswith("The template 'a photo of a {} very") and "class name" not in message.split(":")[0]
    assert len(message) < 300 and "10,016 characters" in message


def test_a_line_of_invisible_characters_is_not_a_class():
    assert classify.class_lines("cat\n\u200b\n\ufeff \u200e\ndog") == ["cat", "dog"]
    assert classify.class_lines("\u200bcat\u200b\ndog") == ["cat", "dog"]
    with pytest.raises(CliplabError, match="Only one class"):
        classify.class_lines("cat\n\u200b")
    assert classify.parse_classes("cat,\u200b,dog") == ["cat", "dog"]
    assert classify.template_lines("a {}.\n\u2060\n") == ["a {}."]


def test_an_audit_csv_with_only_a_header_says_it_has_no_rows(tmp_path):
    csv = tmp_path / "people.csv"
    csv.write_text("image,gender\n")
    with pytest.raises(CliplabError, match="has no rows"):
        load_csv(csv, ["gender"])


def test_a_sample_larger_than_the_dataset_is_refused(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"{i}.png", i)
    csv = tmp_path / "people.csv"
    pd.DataFrame({"image": [f"{i}.png" for i in range(3)], "gender": ["a", "b", "a"]}).to_csv(csv, index=False)
    with pytest.raises(CliplabError, match="A sample of 10 images was asked for, but the dataset has 3"):
        load_csv(csv, ["gender"], sample=10)
    assert len(load_csv(csv, ["gender"], sample=3)) == 3
    whole = load_csv(csv, ["gender"])
    assert audit_report._images_fact(whole.provenance()) == "all 3 images"
    assert audit_report._images_fact(load_csv(csv, ["gender"], sample=2).provenance()) == \
        "a sample of 2 of 3 rows (seed 0)"


# -- 18: what the results show ----------------------------------------------------------------------

def test_probabilities_keep_the_digits_that_tell_them_from_0_and_1():
    assert classify.probability_text(0.999969) == "0.999969"
    assert classify.probability_text(3.1e-05) == "3.1e-05"
    assert classify.probability_text(0.42) == "0.4200"
    assert classify.probability_text(0.0123) == "0.0123"
    assert classify.probability_text(1.0) == "1" and classify.probability_text(0.0) == "0"
    for p in (0.99997, 0.999999, 2e-7, 0.5):  # never shown as a bare 0 or 1
        assert classify.probability_text(p) not in ("0", "1", "1.0000", "0.0000")


def test_names_sort_naturally(tmp_path):
    from cliplab.app.services.paths import natural_key
    for name in ("img100.png", "img10.png", "img2.png", "IMG1.png"):
        write_image(tmp_path / name, 1)
    assert [p.name for p in classify.folder_images(tmp_path)] == ["IMG1.png", "img2.png", "img10.png", "img100.png"]
    assert sorted(["b/10", "a/2", "a/10", "b/9"], key=natural_key) == ["a/2", "a/10", "b/9", "b/10"]


def test_uploads_are_named_by_their_own_name_and_counted_per_class(tmp_path):
    cache = tmp_path / "cache" / "3f9a1c"  # where a front end stored the upload
    paths = [str(write_image(cache / f"photo{i}.png", i)) for i in range(3)]
    names = {p: Path(p).name for p in paths}
    run = classify.classify_for_app(tiny_bundle(), paths, "cat\ndog", ["a photo of a {}."], names=names)
    result = run.result
    assert result.labels == ["photo0.png", "photo1.png", "photo2.png"]
    out = classify.export_csv(result, tmp_path / "out.csv")
    column = pd.read_csv(out)["path"].tolist()
    assert column == ["photo0.png", "photo1.png", "photo2.png"] and "3f9a1c" not in out.read_text()
    rows = result.count_rows()
    assert sum(n for _, n, _ in rows) == 3 and [label for label, *_ in rows] != []
    assert rows == sorted(rows, key=lambda r: -r[1]) and abs(sum(share for *_, share in rows) - 1) < 1e-9


def test_a_class_from_an_empty_map_selection_is_refused():
    from cliplab.app.services import map as maps
    with pytest.raises(CliplabError, match="Select some photos"):
        maps.add_class({}, "stars", [])
    assert maps.add_class({}, "stars", [3, 4]) == {"stars": [3, 4]}
