"""Audit datasets: image paths plus group columns, from FairFace's release CSVs or any CSV.

Categories are mapped by string, never by index; unknown strings and missing files are errors
that list what was wrong, before any model work starts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cliplab.engine.errors import CliplabError

FAIRFACE_AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
FAIRFACE_GENDERS = ["Male", "Female"]
FAIRFACE_RACES = ["East Asian", "Indian", "Black", "White", "Middle Eastern", "Latino_Hispanic",
                  "Southeast Asian"]
FAIRFACE_VALUES = {"age": FAIRFACE_AGES, "gender": FAIRFACE_GENDERS, "race": FAIRFACE_RACES}
FAIRFACE_COLUMNS = ["file", "age", "gender", "race", "service_test"]
PATH_COLUMNS = ("file", "path", "image", "filename")
SPLITS = ("train", "val")


@dataclass
class AuditDataset:
    """The rows an audit looks at, after validation and sampling."""

    source: str  # the CSV file
    kind: str  # "fairface" or "csv"
    split: str | None
    file_hash: str  # SHA-256 of the CSV bytes
    paths: list[Path]
    groups: dict[str, np.ndarray]  # column -> string label per image
    values: dict[str, list[str]]  # column -> category order
    rows: np.ndarray  # row numbers (0-based, data rows) of the CSV that were kept
    n_rows: int  # data rows in the CSV before filtering and sampling
    sample: int | None = None
    seed: int = 0
    options: dict = field(default_factory=dict)
    label_column: str | None = None  # the column holding each image's true class, if any
    labels: np.ndarray | None = None  # that class per image (strings)

    def __len__(self) -> int:
        return len(self.paths)

    def provenance(self) -> dict:
        return {"source": self.source, "kind": self.kind, "split": self.split, "file_sha256": self.file_hash,
                "rows_in_file": self.n_rows, "images": len(self), "sample": self.sample, "seed": self.seed,
                "group_columns": list(self.groups), "label_column": self.label_column, "options": self.options}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CliplabError(f"Could not read the CSV {path}: {error}. Give a comma-separated file with a "
                           f"header row.") from error


def _listing(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _sample(n: int, sample: int | None, seed: int) -> np.ndarray:
    if sample is None or sample == n:
        return np.arange(n)
    if sample <= 0:
        raise CliplabError(f"The sample must be a positive number of images, not {sample}.")
    if sample > n:  # said, not capped silently: the person believes they audit that many images
        raise CliplabError(f"A sample of {sample:,} images was asked for, but the dataset has {n:,}: ask for at most "
                           f"{n:,}, or for no sample to audit them all.")
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def _check_files(paths: list[Path], source: Path) -> None:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CliplabError(f"{len(missing)} of {len(paths)} images listed in {source} do not exist: "
                           f"{_listing(missing)}. Fix the paths (they are read relative to the CSV's "
                           f"folder) or remove those rows.")


def _build(frame: pd.DataFrame, path_column: str, columns: list[str], root: Path, csv: Path, kind: str,
           split: str | None, values: dict[str, list[str]], sample: int | None, seed: int, options: dict,
           n_rows: int, row_numbers: np.ndarray, label_column: str | None = None) -> AuditDataset:
    if frame.empty:
        raise CliplabError(f"The dataset {csv} has no rows{f' in its {split} split' if split else ''}: it holds only "
                           "a header. Give a CSV with one row per image.")
    keep = _sample(len(frame), sample, seed)
    frame = frame.iloc[keep]
    paths = [root / name for name in frame[path_column]]
    _check_files(paths, csv)
    return AuditDataset(source=str(csv), kind=kind, split=split, file_hash=file_sha256(csv), paths=paths,
                        groups={c: frame[c].to_numpy(dtype=object).astype(str) for c in columns},
                        values=values, rows=row_numbers[keep], n_rows=n_rows, sample=sample, seed=seed,
                        options=options, label_column=label_column,
                        labels=frame[label_column].to_numpy(dtype=object).astype(str) if label_column else None)


def fairface_csv(location: Path, split: str) -> Path:
    """The label CSV of a split: location is FairFace's folder (with fairface_label_<split>.csv) or the CSV."""
    location = Path(location)
    if location.is_file():
        return location
    if split not in SPLITS:
        raise CliplabError(f"Unknown split {split!r}: FairFace has {', '.join(SPLITS)}.")
    csv = location / f"fairface_label_{split}.csv"
    if not csv.is_file():
        raise CliplabError(f"{location} has no fairface_label_{split}.csv. Point --dataset at the FairFace "
                           f"folder (the one holding fairface_label_train.csv, fairface_label_val.csv and "
                           f"the train/ and val/ image folders) or at a CSV.")
    return csv


def is_fairface(location: Path) -> bool:
    location = Path(location)
    if location.is_dir():
        return any((location / f"fairface_label_{s}.csv").is_file() for s in SPLITS)
    with location.open(encoding="utf-8", errors="replace") as handle:
        header = handle.readline().strip().split(",")
    return header[:4] == FAIRFACE_COLUMNS[:4]


def load_fairface(location: Path, split: str = "val", sample: int | None = None, seed: int = 0,
                  group_columns: list[str] | None = None, service_test_only: bool = False,
                  padding: str | None = None) -> AuditDataset:
    """FairFace's release format: columns file,age,gender,race,service_test; paths relative to the folder.

    padding names the image release (FairFace ships padding 0.25 and 1.25 crops); it is recorded only.
    """
    csv = fairface_csv(location, split)
    frame = _read_csv(csv)
    absent = [c for c in FAIRFACE_COLUMNS[:4] if c not in frame.columns]
    if absent:
        raise CliplabError(f"{csv} lacks the FairFace column(s) {', '.join(absent)}; its columns are "
                           f"{', '.join(frame.columns)}. For other datasets give --group-columns.")
    columns = group_columns or ["race", "gender", "age"]
    for column in columns:
        if column not in FAIRFACE_VALUES:
            raise CliplabError(f"Group column {column!r} is not a FairFace column; choose from race, gender, age.")
        unknown = sorted(set(frame[column]) - set(FAIRFACE_VALUES[column]))
        if unknown:
            raise CliplabError(f"{csv} has unknown {column} values {_listing(unknown)}; FairFace's are "
                               f"{', '.join(FAIRFACE_VALUES[column])} (matched exactly, by string).")
    n_rows = len(frame)
    row_numbers = np.arange(n_rows)
    if service_test_only:
        if "service_test" not in frame.columns:
            raise CliplabError(f"{csv} has no service_test column, so --service-test cannot select rows.")
        mask = frame["service_test"].str.lower().eq("true").to_numpy()
        frame, row_numbers = frame[mask], row_numbers[mask]
    options = {"service_test_only": service_test_only, "padding": padding}
    return _build(frame, "file", columns, csv.parent, csv, "fairface", split if Path(location).is_dir() else None,
                  {c: FAIRFACE_VALUES[c] for c in columns}, sample, seed, options, n_rows, row_numbers)


def _check_filled(frame: pd.DataFrame, columns: list[str], csv: Path, what: str) -> None:
    for column in columns:
        empty = np.flatnonzero(frame[column].str.strip().eq("").to_numpy())
        if empty.size:
            raise CliplabError(f"{csv}: column {column!r} is empty in {empty.size} row(s) (first data row "
                               f"{int(empty[0]) + 1}); every image needs {what}.")


def load_csv(csv: Path, group_columns: list[str], path_column: str | None = None, sample: int | None = None,
             seed: int = 0, label_column: str | None = None, kind: str = "csv",
             frame: pd.DataFrame | None = None) -> AuditDataset:
    """Any CSV: a path column (file/path/image/filename, or named), the group columns the user names
    and optionally a label column (each image's true class, for worst-group accuracy). frame: the
    CSV already read and prepared (a layout's derived columns)."""
    csv = Path(csv)
    if not csv.is_file():
        raise CliplabError(f"No such dataset file: {csv}.")
    frame = _read_csv(csv) if frame is None else frame
    if path_column is None:
        path_column = next((c for c in PATH_COLUMNS if c in frame.columns), None)
        if path_column is None:
            raise CliplabError(f"{csv} has no image path column (one of {', '.join(PATH_COLUMNS)}); its columns "
                               f"are {', '.join(frame.columns)}.")
    if not group_columns:
        raise CliplabError("Name the group columns of the CSV with --group-columns, e.g. --group-columns gender,age.")
    absent = [c for c in [path_column, *group_columns] if c not in frame.columns]
    if absent:
        raise CliplabError(f"{csv} has no column(s) {', '.join(absent)}; its columns are "
                           f"{', '.join(frame.columns)}. Name the group columns it has.")
    if label_column is not None and label_column not in frame.columns:
        raise CliplabError(f"{csv} has no label column {label_column!r}, so accuracy by group cannot be measured; "
                           f"its columns are {', '.join(frame.columns)}. Name the column holding each image's class.")
    _check_filled(frame, group_columns, csv, "a group value")
    if label_column is not None:
        _check_filled(frame, [label_column], csv, "a label")
    frame, binned = _bin_numeric(frame, group_columns, csv)
    values = {c: binned.get(c) or sorted(set(frame[c])) for c in group_columns}
    return _build(frame, path_column, list(group_columns), csv.parent, csv, kind, None, values, sample, seed,
                  {"path_column": path_column, "quartile_columns": sorted(binned)}, len(frame), np.arange(len(frame)),
                  label_column)


NUMERIC_GROUPS_ABOVE = 8  # a numeric group column with more distinct values is split into quartiles


def _bin_numeric(frame: pd.DataFrame, columns: list[str], csv: Path) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Group columns of numbers with many distinct values (an income, an age in years) as quartile groups:
    one group per value would leave groups of one image. Returns the frame and each binned column's order."""
    binned = {}
    for column in columns:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if numbers.notna().all() and numbers.nunique() > NUMERIC_GROUPS_ABOVE:
            labels, order = quartile_groups(frame[column], csv, unit="$" if column == "income" else "")
            frame = frame.assign(**{column: labels})
            binned[column] = order
    return frame, binned


# -- DataComp's fairness datasets ------------------------------------------------------------------
# The layouts as cliplab reads them (docs/audit.md): the CSV a release ships, its path, label and group
# columns. Dollar Street's numeric monthly income is split into quartile groups of the audited file
# (as any numeric group column with many values is, in load_csv).

LAYOUTS = {
    "dollarstreet": {"csv": "images_v2.csv", "path": "imageRelPath", "label": "topics",
                     "groups": ["income", "region"], "region_from": "region.id"},
    "geode": {"csv": "index.csv", "path": "file_path", "label": "object", "groups": ["region"]},
}


def detect_layout(folder: Path) -> str | None:
    """The DataComp layout of a folder (Dollar Street or GeoDE), from the CSV it holds."""
    return next((name for name, layout in LAYOUTS.items() if (Path(folder) / layout["csv"]).is_file()), None)


def quartile_groups(values: pd.Series, csv: Path, unit: str = "") -> tuple[np.ndarray, list[str]]:
    """Numbers (a monthly income) as quartile groups named by their range, lowest first."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any():
        bad = values[numbers.isna()].iloc[0]
        raise CliplabError(f"{csv}: the {values.name} column has a value that is not a number ({bad!r} in data row "
                           f"{int(np.flatnonzero(numbers.isna().to_numpy())[0]) + 1}); give numbers there.")
    bins = pd.qcut(numbers, 4, duplicates="drop")
    names = [f"{unit}{interval.left:,.0f}-{unit}{interval.right:,.0f}" for interval in bins.cat.categories]
    names[0] = f"{unit}{numbers.min():,.0f}-{unit}{bins.cat.categories[0].right:,.0f}"  # qcut opens below the min
    labels = np.asarray(names, dtype=object)[bins.cat.codes.to_numpy()]
    return labels, names


def _first_topic(value: str) -> str:
    """Dollar Street's topics are a list written as text ("['toothbrush', 'bathroom']"): the first."""
    text = value.strip()
    if text.startswith("["):
        items = [t.strip().strip("'\"") for t in text.strip("[]").split(",") if t.strip().strip("'\"")]
        return items[0] if items else ""
    return text


def load_layout(folder: Path, layout: str, group_columns: list[str] | None = None, sample: int | None = None,
                seed: int = 0) -> AuditDataset:
    """A Dollar Street or GeoDE folder: the label column and the group columns (income, region) of its layout."""
    spec = LAYOUTS[layout]
    csv = Path(folder) / spec["csv"]
    frame = _read_csv(csv)
    needed = [spec["path"], spec["label"], *(spec.get("region_from") and [spec["region_from"]] or ["region"])]
    needed += ["income"] if layout == "dollarstreet" else []
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        raise CliplabError(f"{csv} lacks the {layout} column(s) {', '.join(absent)}; its columns are "
                           f"{', '.join(frame.columns)} (docs/audit.md lists the layouts).")
    frame = frame.copy()
    if layout == "dollarstreet":
        frame["region"] = frame[spec["region_from"]]
        frame[spec["label"]] = frame[spec["label"]].map(_first_topic)
        numbers = pd.to_numeric(frame["income"], errors="coerce")  # load_csv splits them into quartiles
        if numbers.isna().any():
            row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
            raise CliplabError(f"{csv}: the income column has a value that is not a number "
                               f"({frame['income'].iloc[row]!r} in data row {row + 1}); give incomes in dollars.")
    columns = group_columns or spec["groups"]
    dataset = load_csv(csv, columns, spec["path"], sample, seed, spec["label"], kind=layout, frame=frame)
    dataset.options["layout"] = layout
    return dataset


def load_dataset(location: str | Path, split: str = "val", sample: int | None = None, seed: int = 0,
                 group_columns: list[str] | None = None, label_column: str | None = None,
                 **fairface_options) -> AuditDataset:
    """FairFace when the folder or CSV looks like FairFace's release, a Dollar Street or GeoDE folder
    (DataComp's layouts), else a generic CSV."""
    location = Path(location)
    if not location.exists():
        raise CliplabError(f"No such dataset: {location}. Give FairFace's folder, a Dollar Street or GeoDE "
                           f"folder, or a CSV file.")
    layout = detect_layout(location) if location.is_dir() else None
    if layout is not None:
        if label_column not in (None, LAYOUTS[layout]["label"]):
            raise CliplabError(f"A {layout} folder's label column is {LAYOUTS[layout]['label']!r}, not {label_column!r}.")
        return load_layout(location, layout, group_columns, sample, seed)
    if is_fairface(location):
        if label_column is not None:
            raise CliplabError("FairFace has no label column of image classes; its group columns are classified "
                               "instead (tables 3-5). Leave the label column out.")
        fairface_groups = group_columns if group_columns and set(group_columns) <= set(FAIRFACE_VALUES) else None
        if group_columns and fairface_groups is None:
            missing = sorted(set(group_columns) - set(FAIRFACE_VALUES))
            raise CliplabError(f"FairFace has no column(s) {', '.join(missing)}; its group columns are race, "
                               f"gender, age.")
        return load_fairface(location, split, sample, seed, fairface_groups, **fairface_options)
    if location.is_dir():
        raise CliplabError(f"{location} is a folder without FairFace label CSVs, Dollar Street's images_v2.csv or "
                           f"GeoDE's index.csv; give a CSV file instead.")
    return load_csv(location, group_columns or [], sample=sample, seed=seed, label_column=label_column)
