"""The catalog API (indexes.store, indexes.library, indexes.texts): what the app stores lands in the
catalog that was opened. A catalog opened by an explicit URL, different from CLIPLAB_DATABASE_URL,
receives the audit session, the evaluation run and the saved classifier made through it, and the
default database receives none of them. SQLite always; PostgreSQL with CLIPLAB_TEST_POSTGRES_URL."""

from __future__ import annotations

import os
import warnings

import pytest
import sqlalchemy as sa
from library_fixtures import tiny_bundle, write_image
from test_audit_measures import make_fairface

from cliplab.app.services import audit, audit_store, classifiers, eval_store, evaluate
from cliplab.app.services.app_state import AppState
from cliplab.engine.errors import CliplabError
from cliplab.indexes import store
from cliplab.indexes.catalog import open_catalog

POSTGRES_URL = os.environ.get("CLIPLAB_TEST_POSTGRES_URL")
NO_POSTGRES = ("CLIPLAB_TEST_POSTGRES_URL is not set, so the PostgreSQL catalog-API tests did NOT run: run them "
               "with scripts/run-tests.sh (starts a server on loopback) or set the variable")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def chosen_url(request, tmp_path, monkeypatch) -> str:
    """An empty database named by URL, while CLIPLAB_DATABASE_URL (the default) names another one."""
    monkeypatch.setenv("CLIPLAB_DATABASE_URL", f"sqlite:///{tmp_path / 'default.db'}")
    if request.param == "sqlite":
        (tmp_path / "chosen").mkdir()
        return f"sqlite:///{tmp_path / 'chosen' / 'catalog.db'}"
    if not POSTGRES_URL:
        warnings.warn(NO_POSTGRES, stacklevel=1)
        pytest.skip(NO_POSTGRES)
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(sa.text("DROP SCHEMA public CASCADE"))
        connection.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    return POSTGRES_URL


def test_audits_evaluations_and_classifiers_land_in_the_catalog_that_was_opened(chosen_url, tmp_path):
    state = AppState(bundle=tiny_bundle(), catalog=open_catalog(chosen_url))  # as `cliplab app` holds it
    make_fairface(tmp_path / "fairface", n_per_cell=2)
    options = audit.make_options(str(tmp_path / "fairface"), audit.shipped_text("paper"), "paper", add_child=False,
                                 model=state.model_name, bootstrap=20)
    options.probe_folds = 0
    session = audit.run(state.catalog, options, bundle=state.bundle, progress=False).session_id
    for label, seed in (("cat", 0), ("cat", 1), ("dog", 2), ("dog", 3)):
        write_image(tmp_path / "pets" / label / f"{seed}.png", seed)
    run = evaluate.save_run(state.catalog, "zeroshot", state.bundle, tmp_path / "pets", {"top1": 0.5})
    classifiers.save_classifier(state.catalog, "pets", ["cat", "dog"], ["a photo of a {}."], bundle=state.bundle)

    chosen = state.catalog
    assert [s["id"] for s in audit.list_sessions(chosen)] == [session]
    assert audit.show(chosen, session[:6]).session_id == session
    assert [(r["id"], r["top1"]) for r in eval_store.list_eval_runs(chosen)] == [(run, 0.5)]
    assert classifiers.list_classifiers(chosen) == ["pets"]
    assert classifiers.load_classifier(chosen, "pets")["provenance"]["fingerprint"] == state.bundle.fingerprint

    default = open_catalog()  # CLIPLAB_DATABASE_URL: what the stores used to write to whatever was opened
    assert default.url != chosen.url
    assert audit.list_sessions(default) == [] and eval_store.list_eval_runs(default) == []
    assert classifiers.list_classifiers(default) == []
    with pytest.raises(CliplabError, match="No saved audit session"):
        audit.show(default, session)
    default.close()
    chosen.close()


def test_saved_results_round_trip_through_the_named_functions(tmp_path):
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    result = {"provenance": {"model": {"name": "tiny", "fingerprint": "fp", "precision": "fp32"},
                             "dataset": {"source": "/data/ff.csv", "file_sha256": "ab" * 32, "split": "val",
                                         "images": 4},
                             "label_sets": {"A": "paper", "B": None}}, "tables": {}}
    first = audit_store.save_session(catalog, result, "abc111")
    audit_store.save_session(catalog, result, "abc222", rerun_of=first)
    assert [s["id"] for s in audit_store.list_sessions(catalog)] == ["abc222", "abc111"]  # newest first
    assert audit_store.list_sessions(catalog)[0]["rerun_of"] == "abc111"
    assert len(store.audit_results(catalog, "abc")) == 2
    with pytest.raises(CliplabError, match="matches 2 audit sessions"):
        audit_store.load_session(catalog, "abc")
    assert audit_store.load_session(catalog, "abc1")["session_id"] == "abc111"
    assert store.eval_run(catalog, "nope") is None
    with pytest.raises(CliplabError, match="No evaluation run 'nope'"):
        eval_store.load_eval_run(catalog, "nope")
    store.put_classifier(catalog, "c", '{"classes": ["a"], "templates": ["{}"], "threshold": null}', None)
    assert store.classifier_json(catalog, "c")[1] is None and store.classifier_names(catalog) == ["c"]
    assert store.remove_classifier(catalog, "c") and not store.remove_classifier(catalog, "c")
    catalog.close()
