"""Shared fixtures: every test runs with its own CLIPLAB_HOME, never the user's data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def cliplab_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("cliplab_home")
    monkeypatch.setenv("CLIPLAB_HOME", str(home))
    return home


@pytest.fixture
def test_output_dir(request) -> Path:
    """A folder kept after the run for artefacts a person may want to look at (screenshots, reports)."""
    path = ROOT / "test-output" / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path
