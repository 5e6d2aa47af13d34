"""Training checkpoints: the model in our format (safetensors + config.json [+ merges]) and, beside it,
everything else a resumed run needs (optimizer, scheduler, grad scaler, step, RNG states).

A checkpoint is written to a temporary folder and renamed into place, so a run killed while
saving leaves the previous checkpoint as the latest complete one.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from cliplab.engine.errors import CliplabError
from cliplab.engine.model import load_state_dict_checked
from cliplab.engine.weights import WEIGHTS_FILE, save_state_dict

STATE_FILE = "train_state.pt"
MODEL_FILE = WEIGHTS_FILE


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def save_model_folder(model: nn.Module, folder: Path, merges_path: Path | None = None,
                      meta: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    """Our model format (engine.weights); dtype casts the floating-point tensors (fp16 to halve the size)."""
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    return save_state_dict(sd, model.config, folder, merges_path=merges_path, meta=meta)


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, scaler, extra: dict, merges_path: Path | None = None, keep: int = 2) -> Path:
    """Write checkpoints/step_N/ atomically and prune all but the newest `keep`."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_folder(model, tmp, merges_path=merges_path, meta={"step": step})
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_state(),
                "extra": extra}, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    found = [p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")
             and (p / STATE_FILE).exists() and (p / MODEL_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def resolve_resume(run_dir: Path, resume: str) -> Path:
    """'latest' (the newest complete checkpoint of run_dir) or a checkpoint folder."""
    if resume == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise CliplabError(f"--resume latest: no complete checkpoint under {Path(run_dir) / 'checkpoints'}; "
                               "start the run without --resume, or pass --out of the run to continue.")
        return found[-1]
    path = Path(resume)
    if not (path / STATE_FILE).exists():
        raise CliplabError(f"--resume {resume}: not a checkpoint folder (it has no {STATE_FILE}); "
                           "pass 'latest' or a checkpoints/step_N folder.")
    return path


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler) -> dict:
    """Restore every state in place; returns the saved dict (step, extra)."""
    load_state_dict_checked(model, load_file(str(Path(path) / MODEL_FILE)))
    try:
        state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an older torch whose safe unpickler refuses a state it wrote
        state = torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state
