"""`cliplab classify` and `cliplab eval ...` end to end: a small random model saved in our format,
loaded by path through engine.load, on a generated image folder. No accuracy claims here: the
model is untrained (see test_zeroshot_accuracy_with_the_demo_model for a trained one)."""

from __future__ import annotations

import csv
import json
import re
from functools import partial

import numpy as np
import pytest
from cli_support import run_cli as run_cli_with_modules
from PIL import Image
from zeroshot_support import small_clip

from cliplab.app import cli
from cliplab.app.services import eval_store
from cliplab.app.services.evaluate import dataset_hash, eval_zeroshot
from cliplab.engine.evaldata import load_dataset
from cliplab.engine.features import model_fingerprint
from cliplab.engine.handle import ModelBundle
from cliplab.engine.paths import cache_dir
from cliplab.engine.weights import save_model
from cliplab.engine.zeroshot import load_templates
from cliplab.indexes.catalog import open_catalog

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
           "dark_grey": (60, 60, 60)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_model(small_clip(), folder)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """5 colour classes x 4 noisy 40x48 images, PNG and JPEG mixed, plus a CSV over the same files."""
    root = tmp_path_factory.mktemp("data") / "colours"
    rng = np.random.default_rng(0)
    rows = []
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 25, size=(40, 48, 3)), 0, 255).astype(np.uint8)
            path = root / name / f"{name}_{i}.{'png' if i % 2 else 'jpg'}"
            Image.fromarray(pixels).save(path)
            rows.append((f"colours/{name}/{path.name}", name))
    with (root.parent / "colours.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *sorted(rows)])  # the folder's order: same cache key
    return root


def test_commands_are_registered():
    assert {"classify", "eval"} <= set(cli.COMMAND_MODULES)


run_cli = partial(run_cli_with_modules, modules=["classify", "eval"])


def test_classify_prints_probabilities_counts_and_writes_csv(capsys, model_dir, dataset, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    out_csv = tmp_path / "out" / "probs.csv"
    code, out, err = run_cli(capsys, "classify", dataset / "red" / "red_0.jpg", dataset / "blue",
                             tmp_path / "broken.jpg", "--classes", "red, green,blue", "--model", model_dir,
                             "--csv", out_csv, "--threshold", "0.0")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["image", "red", "green", "blue"]
    assert lines[1].startswith("red_0.jpg") and lines[1].count("%") == 3
    assert "top-1 counts over 5 images" in out and "skipped" in out and "broken.jpg" in out
    assert "labels with probability >= 0%" in out
    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and list(rows[0]) == ["path", "top1", "top1_probability", "red", "green", "blue"]
    for row in rows:
        probs = [float(row[c]) for c in ("red", "green", "blue")]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert row["top1"] == ["red", "green", "blue"][int(np.argmax(probs))]


def test_classify_with_many_classes_lists_top_k_and_uses_template_files(capsys, model_dir, dataset, tmp_path):
    templates = tmp_path / "t.txt"
    templates.write_text("a photo of a {} thing.\na {} square.\n")
    classes = tmp_path / "classes.txt"
    classes.write_text("# colours\nred\ngreen\nblue\nyellow\n")
    code, out, err = run_cli(capsys, "classify", dataset / "green" / "green_1.png", "--classes", "purple",
                             "--classes-file", classes, "--templates", templates, "--top", "2", "--model", model_dir)
    assert code == 0, err
    line = out.splitlines()[0]
    assert line.startswith("green_1.png") and line.count("%") == 2


def test_classify_errors_are_sentences(capsys, model_dir, dataset):
    code, _, err = run_cli(capsys, "classify", dataset / "red" / "red_0.jpg", "--model", model_dir)
    assert code == 2 and "class names" in err
    code, _, err = run_cli(capsys, "classify", dataset / "red" / "red_0.jpg", "--classes", "a,b",
                           "--templates", "nonexistent-set", "--model", model_dir)
    assert code == 2 and "template" in err
    code, _, err = run_cli(capsys, "classify", "/no/such/image.jpg", "--classes", "a,b", "--model", model_dir)
    assert code == 2 and "does not exist" in err


def test_eval_zeroshot_writes_metrics_and_confusion(capsys, model_dir, dataset, tmp_path):
    out_dir = tmp_path / "report"
    code, out, err = run_cli(capsys, "eval", "zeroshot", dataset, "--model", model_dir, "--out", out_dir,
                             "--templates", "imagenet7")
    assert code == 0, err
    assert "20 images, 5 classes" in out and "top-5 100.00%" in out  # 5 classes: top-5 is always right
    for name in ("confusion.png", "confusion.html", "zeroshot.json"):
        assert (out_dir / name).stat().st_size > 0
    report = json.loads((out_dir / "zeroshot.json").read_text())
    confusion = np.array(report["confusion"])
    assert confusion.shape == (5, 5) and confusion.sum() == 20 and (confusion.sum(1) == 4).all()
    assert report["top1"] == pytest.approx(np.trace(confusion) / 20)
    recalls = np.diag(confusion) / 4
    assert report["mean_per_class_recall"] == pytest.approx(recalls.mean())
    assert [r["label"] for r in report["per_class"]] == sorted(COLOURS)
    # the CSV form of the same dataset gives the same numbers, from the same cached features
    bundle = ModelBundle.load(str(model_dir))
    by_csv = eval_zeroshot(bundle, dataset.parent / "colours.csv", load_templates("imagenet7"), progress=False)
    assert by_csv["top1"] == report["top1"] and (by_csv["confusion"] == confusion).all()
    assert len(list(cache_dir("features").glob("*.npy"))) == 1


def test_eval_probe_fewshot_and_retrieval_run(capsys, model_dir, dataset, tmp_path):
    code, out, err = run_cli(capsys, "eval", "probe", dataset, "--model", model_dir, "--out", tmp_path / "p")
    assert code == 0, err
    assert "linear probe on before the projection" in out and "top-1" in out
    report = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert report["train"] + report["validation"] + report["test"] == 20 and len(report["search"]) <= 15
    code, out, err = run_cli(capsys, "eval", "fewshot", dataset, "--model", model_dir, "--shots", "1,2",
                             "--seeds", "2", "--out", tmp_path / "f", "--joint")
    assert code == 0, err
    assert "1-shot probe" in out and "2-shot probe" not in out  # 2 per class in the pool: no data left to tune C
    assert "1-shot improved head" in out and "2-shot improved head" in out  # the head needs no left-over examples
    assert (tmp_path / "f" / "fewshot.png").stat().st_size > 0
    captions = tmp_path / "captions.csv"
    rows = [("image", "caption")] + [(str(p), f"a {p.parent.name} square") for p in sorted(dataset.rglob("*_0.*"))]
    rows += [(str(dataset / "red" / "red_0.jpg"), "something red")]
    with captions.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    code, out, err = run_cli(capsys, "eval", "retrieval", captions, "--prefix", "a photo of ", "--model", model_dir)
    assert code == 0, err
    assert "5 images, 6 captions" in out and "R@1" in out and "R@10 100.00%" in out  # 5 images: R@10 trivially 1
    runs = {r["kind"]: r for r in eval_store.list_eval_runs(open_catalog())}
    assert set(runs) == {"probe", "fewshot", "retrieval"} and runs["retrieval"]["image_to_text_R@1"] >= 0
    probe = eval_store.load_eval_run(open_catalog(), runs["probe"]["id"])["metrics"]
    assert runs["probe"]["top1"] == report["top1"] and probe["per_class"] == report["per_class"]
    fewshot = eval_store.load_eval_run(open_catalog(), runs["fewshot"]["id"])["metrics"]
    assert [row["shots"] for row in fewshot["fewshot"]] == [1] and fewshot["options"]["joint"] is True


def test_eval_runs_are_saved_unless_no_save(capsys, model_dir, dataset, tmp_path):
    code, out, err = run_cli(capsys, "eval", "zeroshot", dataset, "--model", model_dir, "--out", tmp_path / "z",
                             "--templates", "imagenet7", "--no-save")
    assert code == 0, err
    assert "saved as" not in out and eval_store.list_eval_runs(open_catalog()) == []
    code, out, err = run_cli(capsys, "eval", "zeroshot", dataset, "--model", model_dir, "--out", tmp_path / "z",
                             "--templates", "imagenet7")
    assert code == 0, err
    run_id = re.search(r"saved as evaluation run (\w+)", out).group(1)
    report = json.loads((tmp_path / "z" / "zeroshot.json").read_text())
    (listed,) = eval_store.list_eval_runs(open_catalog())
    assert listed["id"] == run_id and listed["kind"] == "zeroshot" and listed["model"] == "tiny"
    assert listed["top1"] == report["top1"] and listed["top5"] == 1.0
    assert listed["mean_per_class_recall"] == report["mean_per_class_recall"]
    assert listed["dataset"] == str(dataset.resolve())
    assert listed["model_fingerprint"] == model_fingerprint(ModelBundle.load(str(model_dir)).model)
    assert listed["precision"] == "fp32"  # the exact mode, recorded with the run (and in its provenance)
    provenance = eval_store.load_eval_run(open_catalog(), run_id)["metrics"]["provenance"]
    assert (provenance["precision"], provenance["engine"], provenance["name"]) == ("fp32", "cliplab", "tiny")
    assert provenance["cliplab_version"]
    # the CSV form of the same images and labels has the same content hash; other labels do not
    csv_form = load_dataset(dataset.parent / "colours.csv")
    pairs = list(zip(csv_form.labels, csv_form.paths))
    assert listed["dataset_hash"] == dataset_hash(pairs)
    assert listed["dataset_hash"] != dataset_hash([("red", p) for _, p in pairs])
    saved = eval_store.load_eval_run(open_catalog(), run_id)["metrics"]
    assert saved["confusion"] == report["confusion"] and saved["per_class"] == report["per_class"]
    assert saved["options"] == {"model": str(model_dir), "templates": "imagenet7", "scale": "100"}

    captions = tmp_path / "captions.csv"
    with captions.open("w", newline="") as f:
        csv.writer(f).writerows([("image", "caption")] + [(str(p), p.parent.name) for p in sorted(dataset.rglob("*_1.*"))])
    code, out, err = run_cli(capsys, "eval", "retrieval", captions, "--model", model_dir)
    assert code == 0, err
    retrieval = eval_store.list_eval_runs(open_catalog())[0]  # newest first
    assert retrieval["kind"] == "retrieval" and retrieval["dataset"] == str(captions.resolve())
    assert retrieval["image_to_text_R@1"] == pytest.approx(float(re.search(r"image to text\s+R@1 ([\d.]+)%",
                                                                           out).group(1)) / 100, abs=1e-4)
    code, out, err = run_cli(capsys, "eval", "retrieval", captions, "--model", model_dir, "--no-save")
    assert code == 0 and len(eval_store.list_eval_runs(open_catalog())) == 2


def test_captions_csv_headers_follow_the_training_csv(tmp_path):
    """`cliplab eval retrieval` reads the trainer's own CSV (filepath,caption) as well as image,caption;
    a file without a header keeps its first row."""
    from cliplab.app.services.evaluate import read_captions

    (tmp_path / "a.png").write_bytes(b"")
    for header in ("filepath,caption\n", "image,caption\n", "Path,Text\n", ""):
        (tmp_path / "c.csv").write_text(header + "a.png,a red circle\na.png,one red shape\n")
        images, captions, owners = read_captions(tmp_path / "c.csv")
        assert images == [tmp_path / "a.png"] and captions == ["a red circle", "one red shape"], header
        assert owners == [0, 0]
