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
