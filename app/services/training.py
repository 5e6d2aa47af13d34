"""Training as a service, for the CLI and the app alike.

- `start_training(options)`: a run in this process (`cliplab train`), from TrainOptions field names.
- `start_run(data, init, architecture, extra)`: the app's run, `cliplab train` in a child process in
  its own process group; its facts (command, pid, folder) are written beside it, so a refreshed page
  — or a restarted app — finds the latest run and keeps drawing its loss curve from the log the
  trainer appends to. One app run at a time: a second start while one runs is refused with a
  sentence (two runs would share the CPU and halve each other's speed).
- `stop_run()`: stop the running one (its last checkpoint stays; `--resume latest` continues it).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cliplab.engine import paths
from cliplab.engine.errors import CliplabError
from cliplab.trainer.demo.recipe import DEMO_SHAPE
from cliplab.trainer.metrics_log import LOG_FILE, read_log
from cliplab.trainer.presets import PRESETS
from cliplab.trainer.train import TrainOptions, train

__all__ = ["DEMO_SHAPE", "PRESETS", "SMALL_SHAPE", "TrainOptions", "eval_rows", "final_model", "latest_run", "presets",
           "run_progress", "run_status", "running_run", "start_run", "start_training", "stop_run", "train_command",
           "use_run"]

RUN_FILE = "app-run.json"
ROOT = Path(__file__).resolve().parents[2]
SMALL_SHAPE = "vit:width=128,layers=4,patch=8,res=48,text_width=128,text_layers=2,embed=128,ctx=32"
STOP_GRACE_SECONDS = 10.0
EXEC_GRACE_SECONDS = 30.0  # a pid this young is the child we started, whatever /proc says yet


# -- in this process (the CLI) ---------------------------------------------------------------------

def start_training(options: dict, on_progress: Callable[[dict], None] | None = None) -> dict:
    """Run training with these options (TrainOptions field names; "preset" fills defaults).
    on_progress gets {"step", "total_steps", "loss", "lr", ...} and {"eval": {...}} records."""
    return train(TrainOptions.from_dict(options), on_progress=on_progress)


def run_progress(run_dir: str | Path) -> dict:
    """The latest train and eval records of a run folder, and whether it has finished."""
    run_dir = Path(run_dir)
    records = read_log(run_dir / LOG_FILE)
    train_records = [r for r in records if r["kind"] == "train"]
    eval_records = [r for r in records if r["kind"] == "eval"]
    return {
        "run_dir": str(run_dir),
        "latest": train_records[-1] if train_records else None,
        "latest_eval": eval_records[-1] if eval_records else None,
        "finished": (run_dir / "final" / "config.json").exists(),
        "curves": str(run_dir / "curves.png") if (run_dir / "curves.png").exists() else None,
    }


def presets() -> dict[str, dict]:
    return {name: dict(values) for name, values in PRESETS.items()}


# -- in a child process (the app) ------------------------------------------------------------------

def runs_dir() -> Path:
    path = paths.data_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def train_command(data: str, init: str | None, architecture: str | None, extra: str | None,
                  run_dir: Path) -> list[str]:
    """`cliplab train --data DATA (--init CHECKPOINT | --model SHAPE) --out RUN_DIR EXTRA...`."""
    data = (data or "").strip()
    if not data:
        raise CliplabError("Give the training data: a folder of images with .txt captions, a CSV/TSV file, "
                           "or 'synthetic'.")
    if data != "synthetic" and not Path(data).expanduser().exists():
        raise CliplabError(f"The training data {data} does not exist.")
    command = [sys.executable, "-m", "cliplab.app.cli", "train", "--data",
               data if data == "synthetic" else str(Path(data).expanduser()), "--out", str(run_dir)]
    if (init or "").strip():  # fine-tuning: the checkpoint brings its architecture and vocabulary
        command += ["--init", init.strip()]
    else:
        command += ["--model", (architecture or "").strip() or SMALL_SHAPE]
    try:
        command += shlex.split(extra or "")
    except ValueError as error:
        raise CliplabError(f"The extra options do not parse ({error}); quote values that hold spaces.") from None
    return command


def _facts(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a finished child of this process stays a zombie until reaped
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _is_running(run_dir: Path) -> bool:
    """The run's trainer is alive: its pid lives and (where /proc says) is still this run's command."""
    facts = _facts(run_dir)
    if not facts or facts.get("stopped") or not _alive(int(facts["pid"])):
        return False
    if time.time() - float(facts.get("started", 0)) < EXEC_GRACE_SECONDS:
        return True  # just started: the child may not have exec'd the trainer yet (its cmdline is still ours)
    cmdline = Path(f"/proc/{facts['pid']}/cmdline")
    if cmdline.is_file():  # a reused pid after a reboot is not our trainer
        try:
            return str(run_dir) in cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return False
    return True


def running_run() -> Path | None:
    """The app's training run that is going now, if any."""
    return next((run for run in reversed(_runs()) if _is_running(run)), None)


def start_run(data: str, init: str | None = None, architecture: str | None = None,
              extra: str | None = None) -> Path:
    """Start a training run in the background; returns its folder. Refused while another one runs."""
    going = running_run()
    if going is not None:
        raise CliplabError(f"A training run is already going ({going.name}); stop it first, or wait for it to "
                           "finish: two runs at once would each go at half speed.")
    run_dir = runs_dir() / time.strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while run_dir.exists():  # two starts within one second
        run_dir, suffix = runs_dir() / f"{time.strftime('%Y%m%d-%H%M%S')}-{suffix}", suffix + 1
    command = train_command(data, init, architecture, extra, run_dir)  # checked before any folder is made
    run_dir.mkdir(parents=True)
    with (run_dir / "output.txt").open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    (run_dir / RUN_FILE).write_text(json.dumps({"command": command, "pid": process.pid, "started": time.time()}))
    return run_dir


def stop_run(run_dir: str | Path | None = None) -> bool:
    """Stop a running app training run (default: the one going); False when none was running.
    The trainer's process group gets SIGTERM, then SIGKILL after a grace period; checkpoints it
    saved stay, so `cliplab train --out RUN --resume latest` continues it."""
    run = Path(run_dir) if run_dir is not None else running_run()
    if run is None or not _is_running(run):
        return False
    facts = _facts(run)
    pid = int(facts["pid"])
    _signal_group(pid, signal.SIGTERM)
    deadline = time.time() + STOP_GRACE_SECONDS
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        _signal_group(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        while _alive(pid) and time.time() < deadline + 5:
            time.sleep(0.1)
    (run / RUN_FILE).write_text(json.dumps({**facts, "stopped": time.time()}))
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(pid, sig)  # the trainer and its data-loading workers
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _runs() -> list[Path]:
    return sorted(p.parent for p in runs_dir().glob(f"*/{RUN_FILE}"))


def latest_run() -> Path | None:
    runs = _runs()
    return runs[-1] if runs else None


def run_status(run_dir: Path | None) -> dict:
    """records (the log, last per step), running, stopped, output tail; for any run folder with a log.jsonl."""
    if run_dir is None:
        return {"records": [], "running": False, "stopped": False, "tail": "", "folder": None}
    logs = sorted(Path(run_dir).rglob(LOG_FILE))
    records = read_log(logs[0]) if logs else []
    facts = _facts(Path(run_dir)) or {}
    output = Path(run_dir) / "output.txt"
    tail = output.read_text(errors="replace")[-1500:] if output.is_file() else ""
    return {"records": records, "running": _is_running(Path(run_dir)), "stopped": bool(facts.get("stopped")),
            "tail": tail, "folder": str(run_dir)}


# -- after a run: its evaluations, and its model made the app's current one ------------------------

def eval_rows(records: list[dict]) -> list[dict]:
    """The trainer's held-out evaluations as table rows: step, then each numeric metric (zero-shot
    accuracies, retrieval recalls...), one row per evaluation, in step order."""
    rows = []
    for record in records:
        if record.get("kind") != "eval":
            continue
        metrics = {key: float(value) for key, value in record.items()
                   if key not in ("kind", "step", "time") and isinstance(value, int | float)
                   and not isinstance(value, bool)}
        rows.append({"step": int(record.get("step", 0)), **metrics})
    return rows


def final_model(run_dir: str | Path | None) -> Path | None:
    """The run's finished model folder (run/final), or None while it trains or when it never finished."""
    if run_dir is None:
        return None
    final = Path(run_dir) / "final"
    return final if (final / "config.json").is_file() else None


def use_run(state, run_dir: str | Path | None, name: str | None = None):
    """Make a finished run's model the app's current one (state: the app's AppState), called `name` when
    one is given, else by the name the trainer gave it; returns the new current ModelBundle."""
    final = final_model(run_dir)
    if final is None:
        if run_dir is not None and _is_running(Path(run_dir)):
            raise CliplabError("This run is still training: its model can be used once it finishes; wait for it, "
                               "or pick a finished run.")
        raise CliplabError("This run has no finished model (no final/ folder): train it to the end first.")
    bundle = state.switch_model(str(final))
    name = (name or "").strip()
    if name:
        bundle.name = name
        state.set_bundle(bundle)
    return bundle

