"""Training runs started from the app: `cliplab train` in a child process, its run folder and JSONL log.

The run's facts (command, pid, folder) are written beside it, so a refreshed page — or a restarted
app — finds the latest run and keeps drawing its loss curve from the log the trainer appends to.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from engine import paths
from engine.errors import CliplabError

RUN_FILE = "app-run.json"
ROOT = Path(__file__).resolve().parents[2]


def runs_dir() -> Path:
    path = paths.data_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


SMALL_SHAPE = "vit:width=128,layers=4,patch=8,res=48,text_width=128,text_layers=2,embed=128,ctx=32"


def train_command(data: str, init: str | None, architecture: str | None, extra: str | None,
                  run_dir: Path) -> list[str]:
    """`cliplab train --data DATA (--init CHECKPOINT | --model SHAPE) --out RUN_DIR EXTRA...`."""
    data = (data or "").strip()
    if not data:
        raise CliplabError("Give the training data: a folder of images with .txt captions, a CSV/TSV file, "
                           "or 'synthetic'.")
    if data != "synthetic" and not Path(data).expanduser().exists():
        raise CliplabError(f"The training data {data} does not exist.")
    command = [sys.executable, "-m", "app.cli", "train", "--data",
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


def start_run(data: str, init: str | None = None, architecture: str | None = None,
              extra: str | None = None) -> Path:
    """Start a training run in the background; returns its folder."""
    run_dir = runs_dir() / time.strftime("%Y%m%d-%H%M%S")
    command = train_command(data, init, architecture, extra, run_dir)  # checked before any folder is made
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "output.txt").open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    (run_dir / RUN_FILE).write_text(json.dumps({"command": command, "pid": process.pid, "started": time.time()}))
    return run_dir


def latest_run() -> Path | None:
    runs = sorted(p.parent for p in runs_dir().glob(f"*/{RUN_FILE}"))
    return runs[-1] if runs else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a finished child of this process stays a zombie until reaped
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def run_status(run_dir: Path | None) -> dict:
    """records (the log, last per step), running, output tail; for any run folder with a log.jsonl."""
    if run_dir is None:
        return {"records": [], "running": False, "tail": "", "folder": None}
    from trainer.metrics_log import LOG_FILE, read_log
    logs = sorted(Path(run_dir).rglob(LOG_FILE))
    records = read_log(logs[0]) if logs else []
    meta_file = Path(run_dir) / RUN_FILE
    running = _alive(json.loads(meta_file.read_text())["pid"]) if meta_file.is_file() else False
    output = Path(run_dir) / "output.txt"
    tail = output.read_text(errors="replace")[-1500:] if output.is_file() else ""
    return {"records": records, "running": running, "tail": tail, "folder": str(run_dir)}
