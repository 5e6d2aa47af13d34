"""The Streamlit dashboard: evaluation-run storage, the script under Streamlit's test runner, and the
real `streamlit run` in headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from browser_fixtures import ROOT, free_port, require_chromium, screenshot
from cli_support import invoke
from test_audit_measures import make_fairface
from thread_browser import run_with_chromium

from cliplab.app import cli
from cliplab.app.commands.dashboard import command
from cliplab.app.services import eval_store
from cliplab.app.services.evaluate import classification_metrics
from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import open_catalog

DASHBOARD = str(ROOT / "app" / "dashboard.py")


def tiny_model(folder) -> str:
    import torch

    from cliplab.engine.model import CLIP
    from cliplab.engine.weights import save_model
    torch.manual_seed(0)
    model = CLIP(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=2,
                 transformer_layers=2).eval()
    save_model(model, folder)
    return str(folder)


def audit(*argv) -> None:
    assert invoke(["audit"], *argv) == 0


def save_run(model: str, dataset: str, seed: int) -> str:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=30)
    metrics = classification_metrics(probs, rng.integers(0, 3, 30), ["cat", "dog", "bird"])
    metrics.update(dataset=dataset, templates=7)
    return eval_store.save_eval_run(open_catalog(), "zeroshot", model, f"fp{seed}", dataset, metrics)


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """A catalog database holding two audit sessions of one dataset and two evaluation runs."""
    home = tmp_path_factory.mktemp("dashboard_home")
    url = f"sqlite:///{home / 'catalog.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPLAB_HOME", str(home))
        patch.setenv("CLIPLAB_DATABASE_URL", url)
        make_fairface(home / "fairface", n_per_cell=2)
        model = tiny_model(home / "tiny")
        common = ["--dataset", home / "fairface", "--model", model, "--probe-folds", 0, "--bootstrap", 50,
                  "--templates", "a photo of a {}."]
        audit("audit", *common)
        audit("audit", *common, "--labels", "paper_child")
        runs = [save_run("tiny", "pets", 0), save_run("tiny", "flowers", 1)]
        yield {"home": home, "url": url, "runs": runs}


@pytest.fixture
def on_database(database, monkeypatch):
    monkeypatch.setenv("CLIPLAB_HOME", str(database["home"]))
    monkeypatch.setenv("CLIPLAB_DATABASE_URL", database["url"])
    return database


def test_eval_runs_are_stored_and_listed(on_database):
    runs = eval_store.list_eval_runs(open_catalog())
    assert {r["id"] for r in runs} == set(on_database["runs"])
    assert {r["dataset"] for r in runs} == {"pets", "flowers"}
    assert all(0 <= r["top1"] <= 1 for r in runs)
    run = eval_store.load_eval_run(open_catalog(), on_database["runs"][0])
    assert run["metrics"]["per_class"][0]["label"] == "cat"
    assert np.array(run["metrics"]["confusion"]).sum() == 30
    with pytest.raises(CliplabError) as error:
        eval_store.load_eval_run(open_catalog(), "nope")
    assert str(error.value) == "No evaluation run 'nope'."


def test_dashboard_script_shows_sessions_and_runs(on_database):
    from streamlit.testing.v1 import AppTest
    app = AppTest.from_file(DASHBOARD, default_timeout=120).run()
    assert not app.exception
    sessions = app.dataframe[0].value
    assert len(sessions) == 2 and set(sessions["label_sets"]) == {"paper", "paper_child"}
    shares = app.dataframe[1].value
    assert {"non-human", "crime"} <= set(shares["category"])
    # Wilson bounds read as percentages (a bound of 2.78e-17 was shown as "0000000002")
    assert all(re.fullmatch(r"\d{1,3}\.\d%", v) for v in shares["low"].tolist() + shares["high"].tolist())
    gaps, search = app.dataframe[2].value, app.dataframe[3].value  # worst group and gap; search bias
    assert {"worst group", "gap 95% low", "gap 95% high"} <= set(gaps.columns)
    assert "a photo of a doctor." in set(search["query"]) and "NDKL 95% low" in search.columns
    # no stray "None" under the view (Streamlit's magic printed the value of `a() if x else b()`)
    assert "None" not in [m.value.strip() for m in app.markdown]
    assert any("small-cell warning" in m.value for m in app.markdown)  # as the CLI prints them
    # a filter that matches nothing says so
    app.text_input(key="audit-labels").input("no such label set").run()
    assert "No session matches these filters." in [w.value for w in app.warning]
    app.text_input(key="audit-labels").input("").run()
    app.sidebar.radio(key="page").set_value("Evaluation runs").run()
    assert not app.exception
    assert set(app.dataframe[0].value["dataset"]) == {"pets", "flowers"}
    assert len(app.get("plotly_chart")) == 3  # accuracy bars, per-class accuracy and the confusion heatmap


def test_dashboard_shows_fewshot_and_retrieval_runs(monkeypatch):
    """Runs as `cliplab eval fewshot|retrieval` save them, in the fresh database of this test's CLIPLAB_HOME."""
    import pandas as pd
    from streamlit.testing.v1 import AppTest
    monkeypatch.delenv("CLIPLAB_DATABASE_URL", raising=False)  # set while the module's `database` is alive
    table = pd.DataFrame(dict(shots=[1, 2], mean=[0.4, 0.55], std=[0.05, 0.02], seeds=[3, 3],
                              accuracies=[[0.35, 0.4, 0.45], [0.53, 0.55, 0.57]]))
    fewshot = eval_store.save_eval_run(open_catalog(), "fewshot", "tiny", "fp", "/data/pets", dict(
        dataset="pets", zero_shot_top1=0.5, fewshot=table, pool=40, test=40, effective_shots=1.7, chance=0.25,
        options={"shots": [1, 2], "seeds": 3}), dataset_hash="d" * 64)
    retrieval = eval_store.save_eval_run(open_catalog(), "retrieval", "tiny", "fp", "/data/captions.csv", dict(
        image_to_text={1: 0.2, 5: 0.6, 10: 0.9}, text_to_image={1: 0.1, 5: 0.5, 10: 0.8}, n_images=10,
        n_texts=50, prefix=""))
    app = AppTest.from_file(DASHBOARD, default_timeout=120).run()
    app.sidebar.radio(key="page").set_value("Evaluation runs").run()
    assert set(app.dataframe[0].value["id"]) == {fewshot, retrieval}
    app.selectbox(key="eval-run").set_value(fewshot).run()
    assert not app.exception
    assert app.dataframe[-1].value["mean"].tolist() == ["40.0%", "55.0%"]
    assert len(app.get("plotly_chart")) == 1  # the few-shot curve (no top-1 bars: neither run has top-1)
    assert any("dddddddddddddddd" in c.value for c in app.caption)
    app.selectbox(key="eval-run").set_value(retrieval).run()
    assert not app.exception
    recalls = app.dataframe[-1].value
    assert recalls.loc["R@5"].tolist() == [0.6, 0.5]


def test_dashboard_command_binds_loopback_by_default(capsys):
    args = command(8600)
    assert args[args.index("--server.address") + 1] == "127.0.0.1"
    assert args[args.index("--browser.gatherUsageStats") + 1] == "false"
    assert "dashboard" in cli.COMMAND_MODULES


@pytest.mark.browser
def test_dashboard_in_the_browser(on_database, test_output_dir):
    require_chromium()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (on_database["home"] / "dashboard.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "cliplab.app.cli", "dashboard", "--port", str(port)], cwd=ROOT,
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert process.poll() is None and time.time() < deadline, "the dashboard did not start"
                time.sleep(0.5)
        run_with_chromium(lambda browser: look_at_the_dashboard(browser, url, test_output_dir))
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
    with pytest.raises(OSError):  # stopping `cliplab dashboard` stops its server: no orphan left serving
        urllib.request.urlopen(url, timeout=2)


def look_at_the_dashboard(browser, url: str, test_output_dir) -> None:
    from playwright.sync_api import expect
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.set_default_timeout(90_000)
    page.goto(url)
    # the first script run imports torch on a busy 2-core machine
    expect(page.get_by_text("cliplab dashboard").first).to_be_visible(timeout=90_000)
    expect(page.get_by_text("Category shares by group")).to_be_visible(timeout=60_000)
    report = page.frame_locator("iframe").first
    expect(report.locator("img[alt=plot]").first).to_be_visible(timeout=60_000)  # the report's share plot
    screenshot(page, test_output_dir, "dashboard")
    page.get_by_text("Evaluation runs", exact=True).click()
    expect(page.get_by_text("top-1 accuracy of the runs shown")).to_be_visible(timeout=60_000)
    screenshot(page, test_output_dir, "dashboard-eval")
    assert "Traceback" not in page.content()
    page.close()
