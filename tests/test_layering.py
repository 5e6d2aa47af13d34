"""The import layering (docs/architecture.md, "Layers") holds in the tree (`make lint` runs the same check), and the check
catches a front end that imports the catalog, the trainer or an engine internal directly, also from
inside a function."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import check_layers  # noqa: E402


def test_the_tree_keeps_its_layers():
    assert [str(v) for v in check_layers.check(ROOT)] == []


def test_make_lint_runs_the_layering_check():
    lint = subprocess.run(["make", "-n", "lint"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "scripts/check_layers.py" in lint


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize("source, module", [
    ("from cliplab.indexes.catalog import File\n", "indexes.catalog"),
    ("import os\nimport cliplab.indexes.catalog\n", "indexes.catalog"),
    ("def later():\n    from cliplab.indexes.catalog import TextCollection\n", "indexes.catalog"),
    ("from cliplab.engine.zeroshot import load_templates\n", "engine.zeroshot"),
    ("from cliplab.engine import zeroshot\n", "engine.zeroshot"),
    ("from cliplab import engine\n", "engine"),
    ("from cliplab.trainer.train import TrainOptions\n", "trainer.train"),
])
@pytest.mark.parametrize("front_end", ["app/ui/tab.py", "app/dashboard.py", "app/commands/thing.py"])
def test_a_front_end_importing_below_the_services_fails(tmp_path, source, module, front_end):
    root = tree(tmp_path, {front_end: source})
    (violation,) = check_layers.check(root)
    assert (violation.path, violation.module) == (front_end, module)
    assert check_layers.main(["check_layers", str(root)]) == 1


def test_what_each_layer_may_import(tmp_path):
    root = tree(tmp_path, {
        "app/ui/tab.py": "from cliplab.app.services import search\nfrom cliplab.engine.errors import CliplabError\n",
        "app/services/search.py": "from cliplab.indexes.catalog import File\nfrom cliplab.engine.features import encode_texts\n",
        "indexes/catalog.py": "from cliplab.engine import paths\n",
        "trainer/train.py": "from cliplab.engine.model import CLIP\n",
        "engine/model.py": "import torch\n",
    })
    assert check_layers.check(root) == []
    assert check_layers.main(["check_layers", str(root)]) == 0
    bad = tree(tmp_path / "bad", {
        "engine/model.py": "from cliplab.indexes.catalog import File\n",
        "indexes/catalog.py": "from cliplab.trainer.data import pairs\n",
        "app/services/search.py": "import gradio as gr\nfrom cliplab.app.ui import common\n",
    })
    assert sorted((v.path, v.module) for v in check_layers.check(bad)) == [
        ("app/services/search.py", "app.ui"), ("app/services/search.py", "gradio"),
        ("engine/model.py", "indexes.catalog"), ("indexes/catalog.py", "trainer.data")]


@pytest.mark.parametrize("source, found", [
    ("from sqlalchemy import select\n", "sqlalchemy"),
    ("import sqlalchemy as sa\n", "sqlalchemy"),
    ("def later():\n    from sqlalchemy.orm import Session\n", "sqlalchemy.orm"),
    ("def rows(catalog):\n    with catalog.session() as s:\n        return s\n", ".session()"),
    ("def rows(state):\n    return state.catalog.sessions()\n", ".sessions()"),
    ("def rows(self):\n    return self.catalog.engine.dispose()\n", "<catalog>.engine"),
])
@pytest.mark.parametrize("module", ["app/services/library.py", "app/ui/tab.py", "app/dashboard.py",
                                    "app/commands/thing.py"])
def test_sql_anywhere_in_app_fails(tmp_path, source, found, module):
    """app/ calls named catalog functions in indexes/: importing sqlalchemy or opening a session is caught,
    in a service as in a front end."""
    root = tree(tmp_path, {module: source})
    (violation,) = check_layers.check(root)
    assert (violation.path, violation.module, violation.rule) == (module, found, check_layers.NO_SQL)
    assert check_layers.main(["check_layers", str(root)]) == 1


def test_sql_stays_allowed_in_indexes_and_in_no_module_of_app(tmp_path):
    sql = "from sqlalchemy import select\n\ndef rows(catalog):\n    with catalog.session() as s:\n        return s\n"
    root = tree(tmp_path, {"indexes/store.py": sql})
    assert check_layers.check(root) == []
    root = tree(tmp_path / "search", {"indexes/store.py": sql, "app/services/search.py": sql})
    assert {v.path for v in check_layers.check(root)} == {"app/services/search.py"}
