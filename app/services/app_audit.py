"""The app's Audit tab over app.services.audit: options from the form, the label-set editor's YAML,
tables as frames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from app.services import audit as service
from assets import asset_path
from engine.audit.runner import AuditOptions
from engine.errors import CliplabError


def shipped_text(name: str) -> str:
    """The YAML of a shipped label set, for the editor."""
    path = asset_path("labelsets", f"{name}.yaml")
    if not path.is_file():
        raise CliplabError(f"No shipped label set {name!r}.")
    return path.read_text(encoding="utf-8")


def labels_from_editor(text: str, shipped: str) -> str | dict:
    """The shipped name when the editor still holds it unchanged (clean provenance), else the edited mapping."""
    if (text or "").strip() == shipped_text(shipped).strip():
        return shipped
    try:
        data = yaml.safe_load(text or "")
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" on line {where.line + 1}" if where is not None else ""
        raise CliplabError(f"The label set is not valid YAML{line}; fix it or reload a shipped set.") from None
    if not isinstance(data, dict):
        raise CliplabError("The label set must be a YAML mapping with name, categories and classes; "
                           "reload a shipped set to start from an example.")
    return data


def make_options(dataset: str, labels_text: str, shipped: str, add_child: bool, split: str = "val",
                 sample: int | None = None, seed: int = 0, group_columns: str | None = None,
                 templates: str | None = None, model: str = "demo", bootstrap: int = 1000) -> AuditOptions:
    dataset = (dataset or "").strip()
    if not dataset:
        raise CliplabError("Give the dataset: a FairFace folder or a CSV with an image column and group columns.")
    if not Path(dataset).expanduser().exists():
        raise CliplabError(f"The dataset {dataset} does not exist.")
    columns = [c.strip() for c in (group_columns or "").split(",") if c.strip()] or None
    variants = [t.strip() for t in (templates or "").splitlines() if t.strip()]
    return AuditOptions(dataset=str(Path(dataset).expanduser()), labels=labels_from_editor(labels_text, shipped),
                        add=["child"] if add_child else [], split=split, sample=int(sample) if sample else None,
                        seed=int(seed or 0), model=model, group_columns=columns, templates=variants,
                        n_boot=int(bootstrap))


def run(options: AuditOptions, loaded: tuple) -> dict:
    """Run and save a session (the audit service does both) with the app's loaded model."""
    return service.run(options, loaded=loaded, progress=False)


def shares_frame(result: dict, label_set: str = "A") -> pd.DataFrame:
    """Category shares per group (tables 6-7 of the paper) as a readable table."""
    rows = [r for r in result["tables"].get("category_shares", []) if r.get("label_set", "A") == label_set]
    frame = pd.DataFrame(rows)
    keep = [c for c in ("grouping", "group", "category", "count", "n", "share", "low", "high") if c in frame]
    return frame[keep].round(4) if keep else frame


def table_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame.round(4) if not frame.empty else frame


def sessions_frame() -> pd.DataFrame:
    return pd.DataFrame(service.list_sessions(), columns=["id", "created_at", "model", "dataset", "split", "images",
                                                          "label_sets", "rerun_of"])
