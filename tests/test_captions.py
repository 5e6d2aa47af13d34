"""cliplab.app.services.captions and `cliplab captions` with the committed demo model on a small captioned
dataset drawn from the synthetic world: rankings equal a brute-force numpy computation, true pairs
are marked, browse ranks equal engine.retrieval's, and bad input gets its sentence."""

from __future__ import annotations

import csv
from functools import partial

import numpy as np
import pytest
from cli_support import run_cli as run_cli_with_modules

from cliplab.app import cli
from cliplab.app.services import captions
from cliplab.engine.errors import CliplabError
from cliplab.engine.features import encode_images, encode_texts
from cliplab.engine.handle import ModelBundle
from cliplab.engine.images import load_image
from cliplab.engine.retrieval import retrieval_ranks

COLOURS = ["red", "yellow", "green", "blue", "white", "black"]
SHAPES = ["circle", "square", "star", "cross", "heart", "diamond"]


@pytest.fixture(scope="module")
def bundle():
    return ModelBundle.load("demo")


def write_captioned(root) -> dict:
    """6 scenes of distinct colours, 2 captions each (a full one and a short one) in root/captions.csv;
    the rows are shuffled so that an image's captions are not neighbours."""
    from cliplab.trainer.demo.world import World

    (root / "images").mkdir(parents=True)
    world, rng = World(seed=2, image_size=64, holdout=()), np.random.default_rng(2)
    rows = []
    for i, (colour, shape) in enumerate(zip(COLOURS, SHAPES)):
        sample = world.scene_sample(rng, full_caption=True, colour=colour, shape=shape, count=1, size="large")
        sample.image.save(root / "images" / f"scene{i}.png")
        rows += [(f"images/scene{i}.png", sample.caption), (f"images/scene{i}.png", f"a {colour} {shape}")]
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    with (root / "captions.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("image", "caption"), *rows])
    images = list(dict.fromkeys(root / r[0] for r in rows))
    return dict(csv=root / "captions.csv", root=root, texts=[r[1] for r in rows], images=images,
                owners=[images.index(root / r[0]) for r in rows],
                colours=[COLOURS[int(p.stem.removeprefix("scene"))] for p in images])  # images in CSV order


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_captioned(tmp_path_factory.mktemp("captioned"))


@pytest.fixture(scope="module")
def brute(bundle, dataset):
    """Features computed here directly, one image at a time: the reference for every ranking."""
    model, preprocess, tokenizer = bundle.model, bundle.preprocess, bundle.tokenizer
    images = np.concatenate([encode_images(model, preprocess, [load_image(p, min_size=model.image_resolution)])
                             for p in dataset["images"]])
    return images, encode_texts(model, tokenizer, dataset["texts"])


def test_image_to_texts_equals_numpy_and_marks_the_true_captions(bundle, dataset, brute):
    images, texts = brute
    owners = np.array(dataset["owners"])
    assert len(set(dataset["texts"])) == len(dataset["texts"])  # no ties: the order is unambiguous
    for i, path in enumerate(dataset["images"]):
        found = captions.image_to_texts(bundle, path, dataset["csv"], k=len(texts))
        scores = texts @ images[i]
        assert [m.index for m in found] == list(np.argsort(-scores))
        np.testing.assert_allclose([m.score for m in found], np.sort(scores)[::-1], atol=1e-5)
        assert [m.rank for m in found] == list(range(1, len(texts) + 1))
        assert [m.true_pair for m in found] == [bool(owners[m.index] == i) for m in found]
        assert sum(m.true_pair for m in found) == 2
        assert dataset["colours"][i] in found[0].text  # the demo model knows its colours
    top3 = captions.image_to_texts(bundle, dataset["images"][0], dataset["csv"], k=3)
    assert len(top3) == 3
    # the same picture from elsewhere (or an upload) is not one of the dataset's files: nothing marked
    outside = load_image(dataset["images"][0])
    assert not any(m.true_pair for m in captions.image_to_texts(bundle, outside, dataset["csv"], k=12))


def test_text_to_images_equals_numpy_and_marks_the_true_image(bundle, dataset, brute):
    images, texts = brute
    for j, text in enumerate(dataset["texts"]):
        found = captions.text_to_images(bundle, text, dataset["csv"], k=100)
        scores = images @ texts[j]
        assert [m.index for m in found] == list(np.argsort(-scores))
        np.testing.assert_allclose([m.score for m in found], np.sort(scores)[::-1], atol=1e-5)
        assert [m.path for m in found if m.true_pair] == [dataset["images"][dataset["owners"][j]]]
    found = captions.text_to_images(bundle, "a purple hexagon", dataset["csv"], k=2)
    assert len(found) == 2 and not any(m.true_pair for m in found)


def test_browse_both_ways_gives_engine_retrieval_ranks(bundle, dataset, brute):
    images, texts = brute
    owners = dataset["owners"]
    image_ranks, text_ranks = retrieval_ranks(images, texts, owners)
    assert captions.dataset_size(bundle, dataset["csv"], "image") == 6
    assert captions.dataset_size(bundle, dataset["csv"], "caption") == 12
    for i in range(len(images)):
        step = captions.browse(bundle, dataset["csv"], i, "image", k=12)
        assert step.rank == image_ranks[i] and step.image == dataset["images"][i] and step.total == 6
        assert sorted(step.true_captions) == sorted(t for t, o in zip(dataset["texts"], owners) if o == i)
        first_true = next(m.rank for m in step.texts if m.true_pair)
        assert first_true == step.rank  # the list and the rank agree
        assert [m.index for m in step.texts] == list(np.argsort(-(texts @ images[i])))
    for j in range(len(texts)):
        step = captions.browse(bundle, dataset["csv"], j, "caption", k=6)
        assert step.rank == text_ranks[j] and step.text == dataset["texts"][j] and step.total == 12
        assert step.image == dataset["images"][owners[j]]
        assert next(m.rank for m in step.images if m.true_pair) == step.rank
    assert len(captions.browse(bundle, dataset["csv"], 0, "caption", k=3).images) == 3


def test_text_list_and_saved_classifier_collections(bundle, dataset, brute, tmp_path):
    from cliplab.app.services.classifiers import save_classifier
    from cliplab.engine.zeroshot import build_classifier
    from cliplab.indexes.catalog import open_catalog

    model, tokenizer = bundle.model, bundle.tokenizer
    images, _ = brute
    words = [f"a {c} shape" for c in COLOURS]
    listing = tmp_path / "tags.txt"
    listing.write_text("\n".join(words[:3]) + "\n\n" + "\n".join(words[3:]) + "\n")
    blue = dataset["colours"].index("blue")
    found = captions.image_to_texts(bundle, dataset["images"][blue], listing, k=10)
    assert len(found) == 6 and not any(m.true_pair for m in found)
    scores = encode_texts(model, tokenizer, words) @ images[blue]
    assert [m.text for m in found] == [words[j] for j in np.argsort(-scores)]
    assert found[0].text == "a blue shape"
    with pytest.raises(CliplabError, match="is a list of texts, not a captioned dataset"):
        captions.text_to_images(bundle, "a blue shape", listing)

    catalog = open_catalog()
    save_classifier(catalog, "colours", COLOURS, ["a photo of a {}.", "a {} shape."])
    found = captions.image_to_texts(bundle, dataset["images"][1], "classifier:colours", k=6, catalog=catalog)
    weights = build_classifier(model, tokenizer, COLOURS, ["a photo of a {}.", "a {} shape."]).weights
    assert [m.text for m in found] == [COLOURS[j] for j in np.argsort(-(weights @ images[1]))]
    with pytest.raises(CliplabError, match="No saved classifier named 'nope'"):
        captions.image_to_texts(bundle, dataset["images"][1], "classifier:nope", catalog=catalog)


def test_bad_input_gets_a_sentence(bundle, dataset, tmp_path):
    image = dataset["images"][0]
    cases = {
        tmp_path / "missing.csv": "The text collection .*missing.csv does not exist",
        tmp_path / "list.json": "is neither a captions .csv nor a .txt file",
        "": "Choose a text collection",
    }
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "empty.csv").write_text("\n  \n")
    cases[tmp_path / "empty.csv"] = "is empty: it needs at least one image,caption row"
    (tmp_path / "empty.txt").write_text("")
    cases[tmp_path / "empty.txt"] = "is empty: it needs at least one line of text"
    (tmp_path / "bad.csv").write_text("image,caption\nimages/scene0.png,\n")
    cases[tmp_path / "bad.csv"] = "every row needs an image path and a caption"
    (tmp_path / "lost.csv").write_text("image,caption\nnowhere/a.png,a red circle\n")
    cases[tmp_path / "lost.csv"] = r"lost.csv: 1 of its 1 images do not exist, e.g. .*nowhere/a.png"
    for source, message in cases.items():
        with pytest.raises(CliplabError, match=message):
            captions.image_to_texts(bundle, image, source)
    with pytest.raises(CliplabError, match="Drop or pick an image first"):
        captions.image_to_texts(bundle, None, dataset["csv"])
    with pytest.raises(CliplabError, match="The image .*nope.png does not exist"):
        captions.image_to_texts(bundle, tmp_path / "nope.png", dataset["csv"])
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(CliplabError):
        captions.image_to_texts(bundle, tmp_path / "text.png", dataset["csv"])
    with pytest.raises(CliplabError, match="Type a text to find the dataset's images with"):
        captions.text_to_images(bundle, "  ", dataset["csv"])
    with pytest.raises(CliplabError, match="The dataset has 6 images: pick a number from 0 to 5"):
        captions.browse(bundle, dataset["csv"], 6, "image")
    with pytest.raises(CliplabError, match="The dataset has 12 captions: pick a number from 0 to 11"):
        captions.browse(bundle, dataset["csv"], -1, "caption")


run_cli = partial(run_cli_with_modules, modules=["captions"])


def test_cli_prints_ranked_tables_with_true_pairs_marked(capsys, dataset):
    assert "captions" in cli.COMMAND_MODULES
    code, out, err = run_cli(capsys, "captions", "--collection", dataset["csv"], "--image", dataset["images"][2],
                             "-k", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "score", "true", "text"] and len(lines[1:4]) == 3
    assert lines[1].split()[0] == "1" and dataset["colours"][2] in lines[1]
    assert sum(" * " in line for line in lines[1:4]) >= 1
    code, out, err = run_cli(capsys, "captions", "--collection", dataset["csv"], "--browse-caption", "0", "-k", "2")
    assert code == 0, err
    assert f"caption 0 of 12: {dataset['texts'][0]}" in out and "rank of its image among all images:" in out
    code, out, err = run_cli(capsys, "captions", "--collection", dataset["csv"], "--text", "a red circle", "-k", "1")
    assert code == 0 and out.splitlines()[1].split()[2] == "*" and "scene0.png" in out
    code, out, err = run_cli(capsys, "captions", "--collection", dataset["root"] / "none.txt", "--text", "hi")
    assert code == 2 and err.startswith("error: The text collection") and "Traceback" not in err
