"""Training as a service: start a run from a dict of options, and read a run's progress back.

The CLI and the app both come here; the app runs `start_training` in the background (or
`cliplab train` in a child process) and polls `run_progress(run_dir)`, which reads the run's log.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.metrics_log import LOG_FILE, read_log
from trainer.presets import PRESETS
from trainer.train import TrainOptions, train


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
