"""`cliplab audit` end to end with a real model, sessions that re-run to the same numbers, and bad inputs.

The model: the demo model when assets/demo/ holds one, else a small random CLIP saved in our format
by this test (engine.weights.save_model) and loaded by path through engine.load. The numbers of a
random model mean nothing; the test checks the pipeline, the saved session and the re-run.
"""

from __future__ import annotations

import json
import re
from functools import partial

import pandas as pd
import pytest
import torch
from cli_support import run_cli as run_cli_with_modules
from test_audit_measures import make_fairface

from cliplab.app import cli
from cliplab.app.services import audit_store
from cliplab.engine.api import _demo_available
from cliplab.engine.model import CLIP
from cliplab.engine.weights import save_model
from cliplab.indexes.catalog import open_catalog


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    if _demo_available():
        return "demo"
    torch.manual_seed(0)
    model = CLIP(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=2,
                 transformer_layers=2).eval()
    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_model(model, folder)
    return str(folder)


@pytest.fixture(scope="module")
def fairface(tmp_path_factory):
    root = tmp_path_factory.mktemp("fairface")
    make_fairface(root, n_per_cell=3)
    return root


run_cli = partial(run_cli_with_modules, modules=["audit"])


def session_id(out: str) -> str:
    return re.search(r"^session (\w+)", out, re.M).group(1)


def test_audit_registered():
    assert "audit" in cli.COMMAND_MODULES


@pytest.mark.slow  # ~20 s: two full runs (run, rerun) with a cross-fitted probe
def test_audit_end_to_end_report_session_rerun_and_diff(capsys, fairface, model_path, tmp_path):
    report = tmp_path / "report.html"
    code, out, err = run_cli(capsys, "audit", "--dataset", fairface, "--add", "child", "--model", model_path,
                             "--sample", 36, "--seed", 1, "--templates", "a photo of a {}.", "a picture of a {}.",
                             "--bootstrap", 200, "--out", report)
    assert code == 0, err
    first = session_id(out)
    assert "non-human" in out and "crime" in out
    text = report.read_text()
    assert "<h1>Bias audit" in text and "Not directly comparable" in text and "data:image/png;base64," in text
    assert not re.search(r"""(src|href)=['"]?https?:""", text)  # self-contained: nothing fetched
    saved = audit_store.load_session(open_catalog(), first)
    prov = saved["provenance"]
    assert prov["dataset"]["images"] == 36 and prov["dataset"]["seed"] == 1
    assert prov["model"]["fingerprint"] and prov["cliplab_version"] and prov["methods"]["interval"]
    assert len(saved["labelsets"]["B"]["classes"]) == 22 and saved["labelsets"]["B"]["classes"][-1]["name"] == "child"
    assert {"category_shares", "label_set_diff", "threshold_association", "threshold_sweep",
            "prompt_sensitivity", "attribute_accuracy", "disparities"} <= set(saved["tables"])
    everyone = [r for r in saved["tables"]["category_shares"] if r["grouping"] == "all" and r["label_set"] == "A"]
    assert sum(r["count"] for r in everyone if r["category"] in ("person", "non-human", "crime")) == 36

    code, out, err = run_cli(capsys, "audit", "rerun", first)
    assert code == 0, out + err
    assert "re-run matches the saved session" in out
    second = session_id(out)

    code, out, _ = run_cli(capsys, "audit", "list")
    assert first in out and f"re-run of {first}" in out

    code, out, _ = run_cli(capsys, "audit", "show", first, "--json")
    assert json.loads(out)["session_id"] == first
    code, out, _ = run_cli(capsys, "audit", "show", first, "--csv")
    assert out.splitlines()[0].startswith("table,")

    code, out, _ = run_cli(capsys, "audit", "diff", first, second)
    assert code == 0 and "36 shared images" in out and "change +0.0%" in out  # the same numbers, paired


def count_sessions() -> int:
    return len(audit_store.list_sessions(open_catalog()))


def bad_labelset(tmp_path, body: str):
    path = tmp_path / "labels.yaml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("case", ["empty label set", "label in two categories", "group column absent",
                                  "missing images", "unknown category strings", "unreadable image"])
def test_bad_inputs_give_clear_errors_and_save_nothing(capsys, case, fairface, model_path, tmp_path):
    args = ["--dataset", fairface]
    if case == "empty label set":
        args += ["--labels", bad_labelset(tmp_path, "name: nothing\nclasses: []\n")]
        expected = "the label set is empty"
    elif case == "label in two categories":
        args += ["--labels", bad_labelset(tmp_path, "classes:\n - {name: thief, category: crime}\n"
                                                    " - {name: thief, category: person}\n")]
        expected = "'thief' is in two categories"
    elif case == "group column absent":
        csv = tmp_path / "people.csv"
        pd.DataFrame({"path": ["a.jpg"], "gender": ["Male"]}).to_csv(csv, index=False)
        args = ["--dataset", csv, "--group-columns", "gender,skin"]
        expected = "has no column\\(s\\) skin"
    elif case == "missing images":
        csv = tmp_path / "people.csv"
        pd.DataFrame({"path": ["gone1.jpg", "gone2.jpg"], "gender": ["Male", "Female"]}).to_csv(csv, index=False)
        args = ["--dataset", csv, "--group-columns", "gender"]
        expected = "2 of 2 images .* do not exist"
    elif case == "unknown category strings":
        frame = pd.read_csv(fairface / "fairface_label_val.csv", dtype=str)
        frame.loc[3, "gender"] = "man"
        frame["file"] = [str(fairface / f) for f in frame["file"]]
        frame.to_csv(tmp_path / "fairface_label_val.csv", index=False)
        args = ["--dataset", tmp_path / "fairface_label_val.csv"]
        expected = "unknown gender values 'man'"
    else:
        frame = pd.read_csv(fairface / "fairface_label_val.csv", dtype=str)
        (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
        frame["file"] = [str(fairface / f) for f in frame["file"]]
        frame.loc[0, "file"] = str(tmp_path / "broken.jpg")
        frame.to_csv(tmp_path / "fairface_label_val.csv", index=False)
        args = ["--dataset", tmp_path / "fairface_label_val.csv", "--probe-folds", 0]
        expected = "1 image\\(s\\) of the dataset could not be read: .*broken.jpg"
    before = count_sessions()
    report = tmp_path / "report.html"
    code, out, err = run_cli(capsys, "audit", *args, "--model", model_path, "--out", report)
    assert code == 2 and re.search(r"^error: ", err, re.M) and "Traceback" not in err
    assert re.search(expected, err), err
    assert count_sessions() == before and not report.exists()
