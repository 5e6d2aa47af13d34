"""The shipped demo model recognises drawings that its generator did not make (tests/drawings.py).

The figures asserted are the issue's targets (shape >= 90%, colour >= 95%) and the ones MODEL_CARD.md
reports for this set, with a margin: the shipped model (96 px) reaches shape 96.6% and colour 95.3% on
these 320 drawings (the 64 px models before it 94.4% / 95.6%, 95.3% / 94.1%, 90.6% / 93.1% and
90.3% / 87.5%, earlier ones 55.0% / 76.6% and 17.8% / 32.2%).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from drawings import BACKGROUNDS, PALETTE, SHAPES, drawing, drawings

from cliplab.engine.api import load
from cliplab.engine.errors import CliplabError
from cliplab.engine.handle import ModelBundle
from cliplab.trainer.demo.card import (
    CARD_FILE,
    TABLES_BEGIN,
    TABLES_END,
    main,
    measure_drawings,
    over_colours,
)
from cliplab.trainer.demo.world import World

DEMO_FOLDER = Path(__file__).resolve().parents[1] / "assets" / "demo"

# Shipped model's zero-shot accuracy on drawings(320, seed=0), as the card reports it (96.6% shape,
# 95.3% colour; the weakest backgrounds: shape 95.0% on coloured, colour 86.2% on coloured). Colour is
# asserted at the target itself, one drawing above it: the nearest colour call is 0.007 apart in
# cosine, thousands of times what another CPU's kernels change (about 1e-6).
MIN_SHAPE = 0.95
MIN_COLOUR = 0.95
MIN_PER_BACKGROUND = 0.80
MIN_TWO_STARS = 0.9  # share of 12 drawings of two yellow stars named "yellow star" (12 of 12 measured)
MIN_DEMO_PHOTOS = 0.9  # share of the demo photos of the starting classes named right (12 of 12)


def test_drawings_are_seeded_balanced_and_not_blank():
    images, labels = drawings(80, seed=3)
    again, again_labels = drawings(80, seed=3)
    assert labels == again_labels
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    assert {label["shape"] for label in labels} == set(SHAPES)
    assert {label["colour"] for label in labels} == set(PALETTE)
    for image, label in zip(images, labels):
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
        # The shape's own colour is on the canvas (some pixels close to one of its swatches).
        close = min(np.abs(pixels - np.array(s)).sum(-1).min() for s in PALETTE[label["colour"]])
        assert close < 40, label
        assert label["background"] in BACKGROUNDS
        assert not (label["background"] in ("white", "black") and label["colour"] == label["background"])
    other, _ = drawings(80, seed=4)
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, other))


@pytest.fixture(scope="module")
def figures() -> dict:
    model, preprocess, tokenizer = load("demo", device="cpu", precision="fp32")
    return measure_drawings(model, preprocess, tokenizer, n=320, seed=0)


def test_demo_model_names_the_shape_and_colour_of_drawings(figures):
    assert figures["n"] == 320
    assert figures["shape"] >= MIN_SHAPE, figures
    assert figures["colour"] >= MIN_COLOUR, figures


def test_demo_model_reads_drawings_on_every_background(figures):
    # White, black and coloured canvases as well as the mid grey of the old world.
    for background in BACKGROUNDS:
        assert figures[f"colour/{background}"] >= MIN_PER_BACKGROUND, (background, figures)
        assert figures[f"shape/{background}"] >= MIN_PER_BACKGROUND, (background, figures)


def test_the_shipped_card_reports_the_shipped_models_drawings_figures(figures):
    """The card's generated tables are of the model beside it, not of one before it (they once were)."""
    card = (DEMO_FOLDER / CARD_FILE).read_text(encoding="utf-8")
    tables = card.split(TABLES_BEGIN, 1)[1].split(TABLES_END, 1)[0]
    drawings_table = tables.split("| task | all | ensemble |", 1)[1]
    for task in ("shape", "colour"):
        row = next(line for line in drawings_table.splitlines() if line.startswith(f"| {task} |"))
        reported = float(row.split("|")[2].strip().rstrip("%")) / 100
        # One drawing is 0.3 points; another CPU's kernels may round one of them the other way.
        assert abs(reported - figures[task]) <= 0.01, (task, reported, figures[task])


def test_demo_card_regenerates_the_tables_of_the_card(tmp_path, capsys):
    folder = tmp_path / "demo"
    shutil.copytree(DEMO_FOLDER, folder)
    card = folder / CARD_FILE
    assert TABLES_BEGIN in card.read_text() and TABLES_END in card.read_text()  # the shipped card has them
    card.write_text(f"# a card\n\nbefore\n{TABLES_BEGIN}\nstale figures\n{TABLES_END}\nafter\n")
    main([str(folder), "--n-test", "10", "--n-probe", "20", "--n-retrieval", "10", "--n-drawings", "16",
          "--n-pairs", "4"])
    text = card.read_text()
    assert text.startswith("# a card\n\nbefore\n") and text.endswith(f"{TABLES_END}\nafter\n")
    assert "stale figures" not in text
    assert f"python -m cliplab.trainer.demo.card {folder} --n-test 10" in text
    for heading in ("| target | goal |", "| task | chance |", "| direction | R@1 |", "| task | all | ensemble |",
                    "| pair | shape right | taken for |"):
        assert heading in text
    # One row per held-out pair, its accuracy a multiple of 1/4 (4 images each).
    pair_rows = [line for line in text.split("| pair | shape right |", 1)[1].splitlines()[2:] if line.startswith("| ")]
    assert len(pair_rows[:len(World().holdout)]) == len(World().holdout)
    assert all(row.split("|")[2].strip() in ("0.0%", "25.0%", "50.0%", "75.0%", "100.0%")
               for row in pair_rows[:len(World().holdout)])
    # Shape by size: three sizes on held-out and on seen combinations, 24 images each (6 x --n-pairs);
    # a row's circle-or-hexagon and other-shapes figures average to its overall figure.
    size_rows = [line.split("|")[1:-1] for line in text.split("| combinations | size |", 1)[1].splitlines()[2:8]]
    assert [row[0].strip() for row in size_rows] == ["held-out"] * 3 + ["seen"] * 3
    for row in size_rows:
        overall, (round_share, n_round), others = float(row[2].strip(" %")), row[3].split("%"), float(row[4].strip(" %"))
        n_round = int(n_round.strip(" ()"))
        mixed = (float(round_share) * n_round + others * (24 - n_round)) / 24 if 0 < n_round < 24 else overall
        assert abs(mixed - overall) < 0.2, row
    # The shape figures with the prompts averaged over colours, on all three test sets.
    assert re.search(r"once per named colour.*held-out \d+\.\d%, seen combinations \d+\.\d%, drawings \d+\.\d%", text)
    assert "Rewrote the tables" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a probe of no images is refused by the parser, not a stack trace
        main([str(folder), "--n-probe", "0"])
    assert "--n-probe must be at least 1" in capsys.readouterr().err
    card.write_text("# a card without markers\n")
    with pytest.raises(CliplabError, match="table markers"):
        main([str(folder), "--n-test", "10", "--n-probe", "20", "--n-retrieval", "10", "--n-drawings", "0"])


def test_first_classification_of_the_demo_photos_is_right(tmp_path):
    from cliplab.app.services.classify import classify_for_app
    from cliplab.app.services.first_start import DEMO_CLASSES, write_demo_photos
    from cliplab.app.ui.classify import DEFAULT_CLASSES
    from cliplab.engine.zeroshot import load_templates

    assert DEFAULT_CLASSES.splitlines() == list(DEMO_CLASSES)  # the tab starts with what the photos show
    folder = write_demo_photos(tmp_path / "photos", n=24)
    photos = sorted(folder.glob("*.jpg"))
    bundle = ModelBundle.load("demo", "cpu")  # the app's exact mode
    # The Classify tab's starting state: its classes, the "default" template preset.
    result = classify_for_app(bundle, photos, DEFAULT_CLASSES, load_templates("default")).result
    shown = [photos[i] for i in range(0, len(photos), 2)]  # even photos show the starting classes in turn
    right = 0
    for i, path in enumerate(shown):
        top = result.top[result.paths.index(path)][0][0]
        right += top == DEMO_CLASSES[i % len(DEMO_CLASSES)]
        if i == 0:
            assert top == DEMO_CLASSES[0], (path.name, result.top[0])  # the first photo of the library
    assert right / len(shown) >= MIN_DEMO_PHOTOS, (right, len(shown))


def test_two_yellow_stars_are_yellow_stars_not_a_word(tmp_path):
    """The reported case: in the app, a drawing of two yellow stars came out as "the word house"."""
    from cliplab.app.services.classify import classify_for_app
    from cliplab.app.services.first_start import DEMO_CLASSES
    from cliplab.engine.zeroshot import load_templates

    rng = np.random.default_rng(13)
    paths = []
    for background in ("white", "black", "grey"):
        for i in range(4):  # uploaded as PNG files, as a person saves them from a paint program
            image, _ = drawing("star", "yellow", background, rng, count=2)
            paths.append(tmp_path / f"{background}-{i}.png")
            image.save(paths[-1])
    classes = "\n".join([*DEMO_CLASSES, "the word house", "the word sun"])
    bundle = ModelBundle.load("demo", "cpu")  # the app's exact mode
    result = classify_for_app(bundle, paths, classes, load_templates("default")).result
    top = [labels[0][0] for labels in result.top]
    assert sum(label == "yellow star" for label in top) >= MIN_TWO_STARS * len(paths), top
    assert not any(label.startswith("the word") for label in top), top


def test_prompts_over_colours_name_every_colour_once_per_template():
    templates = ["a picture of a {}.", "an image of a {}.", "a {}."]
    filled = over_colours(templates)
    assert len(filled) == 10 * len(templates) and all(t.count("{}") == 1 for t in filled)
    assert "a picture of a red {}." in filled and "an image of an orange {}." in filled and "a white {}." in filled
    assert "a picture of a {}." not in filled
