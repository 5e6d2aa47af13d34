"""The app's training runs (app.services.training): one at a time — a second start while one runs is
refused with a sentence — and a Stop that ends the trainer's whole process group. A real
`cliplab train` child process on the synthetic world."""

from __future__ import annotations

import json
import os
import time

import pytest

from cliplab.app.services import training
from cliplab.engine.errors import CliplabError

LONG = "--steps 100000 --batch-size 8 --workers 0 --eval-every 0"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def wait_for_step(run_dir, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if training.run_status(run_dir)["records"]:
            return
        assert training.run_status(run_dir)["running"], training.run_status(run_dir)["tail"]
        time.sleep(0.5)
    pytest.fail(f"no training step logged within {timeout} s")


@pytest.mark.slow  # ~20 s: a trainer starts, trains a few steps and is stopped
def test_one_run_at_a_time_and_stop_ends_it():
    assert training.running_run() is None and training.stop_run() is False
    first = training.start_run("synthetic", extra=f"{LONG} --log-every 1")
    pid = json.loads((first / training.RUN_FILE).read_text())["pid"]
    try:
        assert training.running_run() == first
        with pytest.raises(CliplabError) as refused:
            training.start_run("synthetic", extra=LONG)
        assert str(refused.value) == (f"A training run is already going ({first.name}); stop it first, or wait for it "
                                      "to finish: two runs at once would each go at half speed.")
        assert len(list(training.runs_dir().iterdir())) == 1  # the refused start made no folder
        wait_for_step(first)
        assert training.stop_run() is True
        assert not alive(pid)
        status = training.run_status(first)
        assert status["running"] is False and status["stopped"] is True and status["records"]
        assert training.running_run() is None
        second = training.start_run("synthetic", extra=LONG)  # after a stop, a new run may start
        assert training.running_run() == second and second != first
        assert training.stop_run(second) is True and training.run_status(second)["stopped"]
    finally:
        for run in training.runs_dir().iterdir():
            training.stop_run(run)


def test_a_finished_or_foreign_pid_is_not_a_running_run(tmp_path):
    import subprocess
    import sys
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    run = training.runs_dir() / "20200101-000000"
    run.mkdir()
    (run / training.RUN_FILE).write_text(json.dumps({"command": [], "pid": done.pid, "started": 0}))
    assert training.running_run() is None
    # a live process that is not this run's trainer (a pid reused after a restart)
    (run / training.RUN_FILE).write_text(json.dumps({"command": [], "pid": os.getpid(), "started": 0}))
    if os.path.isdir("/proc"):
        assert training.running_run() is None
    assert training.start_run("synthetic", extra="--steps 1 --batch-size 4 --workers 0 --eval-every 0").is_dir()
    for folder in training.runs_dir().iterdir():
        training.stop_run(folder)
