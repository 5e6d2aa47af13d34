"""What the app lacked (issue 27, item 19), below the browser: audit progress with stages and an estimate,
the trainer's evaluations as rows, "use this model" after training with a meaningful name, the settings
service, and the Evaluation tab's services. tests/test_browser.py drives the tabs in Chromium."""

from __future__ import annotations

import time

import pytest
from library_fixtures import tiny_bundle
from test_audit_measures import make_fairface

from cliplab.app.services import audit, training
from cliplab.app.services.app_state import AppState, Job
from cliplab.engine.audit.results import AuditOptions
from cliplab.engine.audit.runner import STAGES
from cliplab.engine.errors import CliplabError
from cliplab.engine.weights import save_model
from cliplab.indexes.catalog import open_catalog


@pytest.fixture
def catalog(tmp_path):
    return open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")


def test_an_audit_reports_its_stages_and_progress(tmp_path, catalog):
    make_fairface(tmp_path / "fairface", n_per_cell=2)
    seen: list[tuple[str, float]] = []
    options = AuditOptions(dataset=str(tmp_path / "fairface"), probe_folds=0, n_boot=20, model="tiny")
    audit.run(catalog, options, bundle=tiny_bundle(), progress=False,
              on_progress=lambda stage, done: seen.append((stage, done)))
    stages = list(dict.fromkeys(stage for stage, _ in seen))
    assert stages == [*STAGES, "saving the session"]
    fractions = [done for _, done in seen]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] < 1
    embedding = [done for stage, done in seen if stage == "embedding the images"]
    assert len(embedding) >= 3  # the bar moves while the images are embedded, not only between stages


def test_a_job_says_its_stage_share_and_time_left():
    job = Job("1", "audit", "audit of people.csv")
    assert job.remaining_seconds() is None  # no estimate before there is progress to go on
    job.started = time.time() - 30
    job.update(0.5, "embedding the images")
    assert 25 < job.remaining_seconds() < 35
    assert job.progress_line().startswith("embedding the images: 50% done, about 3")


def test_the_trainers_evaluations_are_rows():
    records = [{"kind": "train", "step": 10, "loss": 2.0},
               {"kind": "eval", "step": 10, "time": 1.0, "zeroshot_top1": 0.25, "i2t_r1": 0.5, "note": "x"},
               {"kind": "eval", "step": 20, "time": 2.0, "zeroshot_top1": 0.5, "flag": True}]
    assert training.eval_rows(records) == [{"step": 10, "zeroshot_top1": 0.25, "i2t_r1": 0.5},
                                           {"step": 20, "zeroshot_top1": 0.5}]


def test_use_a_finished_run_as_the_current_model(tmp_path, catalog):
    from cliplab.trainer.train import TrainOptions, trained_name
    run = tmp_path / "20261207-131500"
    state = AppState(catalog=catalog, bundle=tiny_bundle())
    with pytest.raises(CliplabError, match="no finished model"):
        training.use_run(state, run)
    options = TrainOptions(data="synthetic")
    save_model(tiny_bundle(seed=1).model, run / "final", meta={"name": trained_name(options, run)})
    bundle = training.use_run(state, run)
    assert state.model_name == bundle.name == "trained-20261207-131500"  # not "final"
    assert state.bundle is bundle
    renamed = training.use_run(state, run, "  my shapes model ")
    assert state.model_name == renamed.name == "my shapes model"
    tuned = TrainOptions(data="synthetic", init="ViT-B/32")
    assert trained_name(tuned, run) == "ViT-B-32-tuned-20261207-131500"


# -- settings ---------------------------------------------------------------------------------------

def test_settings_are_saved_checked_and_applied(tmp_path, catalog, cliplab_home):
    import os
    import stat

    from cliplab.app.services import settings
    from cliplab.engine import images
    assert settings.load() == settings.Settings()  # nothing saved: the defaults
    state = AppState(catalog=catalog, bundle=tiny_bundle())
    saved = settings.update("fp32", 150, "a long secret")
    assert saved.max_image_pixels == 150_000_000 and settings.load() == saved
    assert stat.S_IMODE(os.stat(settings.settings_file()).st_mode) == 0o600  # it may hold the password
    settings.apply(state)
    assert images.max_pixels() == 150_000_000  # the engine's limit, read per image (decode workers too)
    assert state.search_mode == "fp32" and state.search_bundle.mode == "fp32"
    for bad, message in ((dict(search_mode="fastest"), "not one cliplab knows"),
                         (dict(pixel_limit_megapixels=0.5), "between 1 and"),
                         (dict(password="short"), "at least 8 characters")):
        with pytest.raises(CliplabError, match=message):
            settings.update(**bad)
    assert settings.load() == saved  # a refused change leaves the file as it was
    assert settings.update(clear_password=True).app_password is None
    settings.settings_file().write_text("{not json")
    with pytest.raises(CliplabError, match="settings file .* cannot be read"):
        settings.load()


def test_the_login_for_listen_comes_from_the_settings(monkeypatch, cliplab_home):
    from cliplab.app.gradio_app import login_for
    from cliplab.app.services import settings
    monkeypatch.delenv("CLIPLAB_APP_PASSWORD", raising=False)
    settings.update(password="saved in settings")
    login = login_for("0.0.0.0")
    assert login.password == "saved in settings" and not login.generated
    monkeypatch.setenv("CLIPLAB_APP_PASSWORD", "from the environment")
    assert login_for("0.0.0.0").password == "from the environment"


# -- the Evaluate tab's service ----------------------------------------------------------------------

@pytest.fixture
def labelled_library(tmp_path, catalog):
    from library_fixtures import write_image

    from cliplab.app.services import library
    root = tmp_path / "photos"
    for label in ("circle", "square"):
        for i in range(6):
            write_image(root / "shapes" / label / f"{label}{i}.png", 10 * (label == "square") + i)
    library.add_folders(catalog, tiny_bundle(), [root])
    return root


def test_evaluate_in_the_app_saves_the_run_as_the_cli_does(labelled_library, catalog):
    from cliplab.app.services import evaluate
    from cliplab.indexes import store
    stages = []
    outcome = evaluate.evaluate_for_app(catalog, tiny_bundle(), "zeroshot", labelled_library / "shapes",
                                        ["a photo of a {}."], on_progress=lambda s, d: stages.append(s))
    assert stages == [s for s, _ in evaluate.EVAL_STAGES]
    assert outcome.headline["metric"].tolist()[:3] == ["images", "classes", "top-1"]
    assert outcome.headline["value"].tolist()[:2] == ["12", "2"] and outcome.confusion.sum() == 12
    assert set(outcome.detail["label"]) == {"circle", "square"}
    runs = store.eval_runs(catalog)
    assert [r["id"] if isinstance(r, dict) else r.id for r in runs] == [outcome.run_id]
    few = evaluate.evaluate_for_app(catalog, tiny_bundle(), "fewshot", labelled_library / "shapes",
                                    ["a photo of a {}."], shots=[1, 2], seeds=1, save=False)
    assert few.run_id is None and few.detail["shots"].tolist() == [1, 2]


def test_evaluate_reads_only_datasets_in_the_library(labelled_library, catalog, tmp_path):
    from library_fixtures import write_image

    from cliplab.app.services import evaluate
    outside = tmp_path / "elsewhere"
    for label in ("a", "b"):
        write_image(outside / label / "0.png", 1)
    with pytest.raises(CliplabError, match="not inside one of your library folders"):
        evaluate.evaluate_for_app(catalog, tiny_bundle(), "zeroshot", outside, ["a {}."])
    listing = labelled_library / "outside.csv"  # in the library, but listing images that are not
    listing.write_text(f"path,label\n{outside / 'a' / '0.png'},a\n{outside / 'b' / '0.png'},b\n")
    with pytest.raises(CliplabError, match="not inside one of your library folders"):
        evaluate.evaluate_for_app(catalog, tiny_bundle(), "probe", listing, [])


def test_the_pixel_limit_reaches_the_decode_workers(tmp_path, monkeypatch):
    """The Settings tab's limit holds in `cliplab index`'s forkserver workers, which receive the parent's limit
    from the pool rather than whatever environment the forkserver started with."""
    from library_fixtures import write_image

    from cliplab.engine import images
    from cliplab.engine.images import Preprocess
    from cliplab.indexes.decode import DecodePool
    images.set_max_pixels(1_000_000)  # as the Settings tab saves it, in this test's data folder
    small, large = write_image(tmp_path / "small.png", 1, (800, 800)), write_image(tmp_path / "large.png", 2, (1100, 1000))
    with DecodePool(Preprocess(32), workers=1) as pool:
        decoded = list(pool.decode([(1, str(small)), (2, str(large))]))
    assert decoded[0].pixels is not None
    assert decoded[1].pixels is None and "too large" in decoded[1].reason


