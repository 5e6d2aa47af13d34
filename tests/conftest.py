"""Shared fixtures: every test runs with its own CLIPLAB_HOME, never the user's data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
# Under pytest-xdist the cores are shared by the workers: one worker, all cores; two, half each.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // WORKERS))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the groups into node ids
def pytest_collection_modifyitems(config, items) -> None:
    """With pytest-xdist (`-n N --dist loadgroup`, scripts/run-tests.sh), each test module runs whole on
    one worker, as its module-scoped servers and browser expect; the modules that use the PostgreSQL
    test server share one worker, because one of their tests stops and restarts that server."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    uses_postgres = {item.module.__name__ for item in items if item.get_closest_marker("postgres")}
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group("postgres" if module in uses_postgres else module))


@pytest.fixture(scope="session")
def measured_fp32_kernels(tmp_path_factory) -> str | None:
    """This machine's fp32 kernel choice (engine.runtime.fp32_kernels), measured once for the session
    (~1 s): it is a fact of the machine, which its machine cache keeps after the first measurement."""
    from cliplab.engine.runtime import fp32_kernels, kernels_file
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPLAB_HOME", str(tmp_path_factory.mktemp("kernels_home")))
        patch.setenv("CLIPLAB_MACHINE_CACHE", str(tmp_path_factory.mktemp("kernels_machine")))
        fp32_kernels()
        return kernels_file().read_text() if kernels_file().is_file() else None


# The learned copy detector of the tests: the product's recipe, scaled down to train in ~20 s (once per
# run). Smaller ones took two different demo photos for copies (the product's detector: 0.84 at most).
QUICK_DETECTOR = {"world": 128, "steps": 300, "batch": 64, "width": 8, "calibration": 80}


@pytest.fixture(scope="session", autouse=True)
def quick_copy_detector() -> Path:
    """Every test (and every app it starts) uses a learned copy detector trained in seconds, never the
    two-minute default: CLIPLAB_COPY_DETECTOR names its file. It is trained once and kept in the temp
    folder under a digest of the code that trains it, so later runs (and the other xdist workers,
    waiting on the service's lock) load it."""
    import hashlib
    import tempfile
    from dataclasses import replace

    from cliplab.app.services import copy_detectors
    sources = ("engine/copydetect.py", "trainer/copy_detector.py", "trainer/step.py", "trainer/optim.py",
               "trainer/loss.py", "trainer/demo/world.py", "trainer/demo/render.py")
    code = b"".join((ROOT / part).read_bytes() for part in sources)
    digest = hashlib.sha256(code + repr(sorted(QUICK_DETECTOR.items())).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / "cliplab-test-detectors" / f"quick-{digest}.safetensors"
    copy_detectors.prepare(replace(copy_detectors.Recipe(), **QUICK_DETECTOR), output=path)
    os.environ[copy_detectors.ENVIRONMENT] = str(path)
    return path


@pytest.fixture(autouse=True)
def cliplab_home(tmp_path_factory, monkeypatch, measured_fp32_kernels) -> Path:
    home = tmp_path_factory.mktemp("cliplab_home")
    monkeypatch.setenv("CLIPLAB_HOME", str(home))
    monkeypatch.setenv("CLIPLAB_MACHINE_CACHE", str(home / "machine"))  # per test, never the user's ~/.cache
    if measured_fp32_kernels is not None:
        from cliplab.engine.runtime import kernels_file
        kernels_file().write_text(measured_fp32_kernels)
    return home


@pytest.fixture
def test_output_dir(request) -> Path:
    """A folder kept after the run for artefacts a person may want to look at (screenshots, reports)."""
    path = ROOT / "test-output" / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path
