"""Data overlap (the paper's section 5): is a model's accuracy on an evaluation set inflated by
evaluation images that have a copy in the reference (training) set?

The copy detector (copy_detectors: the learned one by default, trained at its first use;
indexes.copies searches it) finds the evaluation images with a copy in the reference set; they form Overlap, the rest Clean, the whole set All. Each gets its
size and accuracy with a 99.5% Clopper-Pearson interval, All - Clean says how much the overlap moved
the reported figure, and a one-sided binomial test asks whether Overlap's accuracy exceeds Clean's
(null: Overlap's accuracy <= Clean's, Clean's accuracy taken as the rate), as the paper's Figure 17.
A person confirms or rejects detected pairs (decide); the verdicts are kept in the catalog by the
images' content and change the split of every later run.

The evaluation set: an image folder with one sub-folder per class, or a CSV with a `path` column and
a label column (default `label`); a `prediction` column holds predictions made elsewhere, else the
model classifies zero-shot over the set's class names. The reference set: an image folder (searched
recursively), the indexed library ("library"), or a descriptor file written by save_reference.
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import binomtest

from cliplab.app.services import copy_detectors, serving
from cliplab.app.services.classify import folder_images, load_templates
from cliplab.app.services.evaluate import DEFAULT_SCALE, zero_shot_probs
from cliplab.app.services.loading import ModelBundle
from cliplab.engine import copydetect
from cliplab.engine.errors import CliplabError
from cliplab.engine.evaldata import LabelledImages, load_dataset
from cliplab.engine.images import load_image
from cliplab.indexes import copies
from cliplab.indexes.catalog import Catalog
from cliplab.indexes.scan import fingerprint

CONFIDENCE = 0.995  # the paper's 99.5% Clopper-Pearson intervals
REVIEW_MARGIN = 0.1  # pairs this far below the threshold are shown too, for a person to confirm
LIBRARY = "library"


def default_threshold(detector: str | None = None) -> float:
    """The detector's own threshold, the front ends' default (nothing is trained to learn it)."""
    return copy_detectors.default_threshold(detector)


@dataclass
class Split:
    name: str  # Overlap | Clean | All
    size: int
    correct: int
    accuracy: float | None  # None: an empty split has no accuracy
    low: float | None  # 99.5% Clopper-Pearson interval
    high: float | None


@dataclass
class Pair:
    eval_path: str
    reference_path: str
    score: float
    eval_key: str
    reference_key: str
    decision: bool | None  # a person's verdict: True copy, False not a copy, None undecided
    counted: bool  # whether it puts its evaluation image in Overlap


@dataclass
class OverlapReport:
    detector: str
    threshold: float
    eval_set: str
    reference_set: str
    reference_size: int
    search: str  # exact | approximate
    predictions: str  # where the predictions come from
    splits: list[Split]
    all_minus_clean: float | None  # accuracy points; None when Clean is empty
    p_value: float | None  # one-sided binomial test of Overlap's accuracy against Clean's
    pairs: list[Pair]
    notes: list[str] = field(default_factory=list)
    eval_paths: list[str] = field(default_factory=list)  # every evaluation image, in order
    correct: list[bool] = field(default_factory=list)  # whether its prediction is right, same order

    def split(self, name: str) -> Split:
        return next(s for s in self.splits if s.name == name)

    def to_dict(self) -> dict:
        return asdict(self)


# -- the evaluation set --------------------------------------------------------------------------

def _csv_set(path: Path, label_column: str) -> tuple[LabelledImages, list[str] | None]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if "path" not in columns:
        raise CliplabError(f"{path} has no 'path' column: its first row must name the columns, e.g. path,label.")
    if label_column not in columns:
        raise CliplabError(f"{path} has no '{label_column}' column (its columns are {', '.join(columns)}): "
                           "name the column that holds each image's true label.")
    rows = [r for r in rows if r.get("path")]
    unlabelled = [i for i, r in enumerate(rows) if not r.get(label_column)]
    if unlabelled:
        raise CliplabError(f"{path}: data row {unlabelled[0] + 1} has no {label_column}; every image needs its true label.")
    paths = [Path(r["path"]).expanduser() for r in rows]
    paths = [p if p.is_absolute() else path.parent / p for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise CliplabError(f"{path}: {len(missing)} listed image(s) do not exist, e.g. {missing[0]}.")
    labels = [r[label_column] for r in rows]
    given = [r.get("prediction", "") for r in rows] if "prediction" in columns else None
    if given is not None and not all(given):
        raise CliplabError(f"{path}: the prediction column is empty on some rows; fill it on every row or remove it.")
    return LabelledImages(paths, labels, sorted(set(labels)), path.stem), given


def load_eval_set(source: str | Path, label_column: str = "label") -> tuple[LabelledImages, list[str] | None]:
    """(the labelled images, predictions given in the set or None)."""
    path = Path(str(source or "").strip()).expanduser()
    if not str(source or "").strip():
        raise CliplabError("Give the evaluation set: an image folder with one sub-folder per class, or a CSV file.")
    if path.is_file() and path.suffix.lower() == ".csv":
        dataset, given = _csv_set(path, label_column)
    else:
        dataset, given = load_dataset(path), None
    if not len(dataset):
        raise CliplabError(f"{path} lists no images.")
    return dataset, given


def has_predictions(source: str | Path, label_column: str = "label") -> bool:
    """Whether the evaluation set brings its own predictions (so no model needs loading)."""
    path = Path(str(source or "").strip()).expanduser()
    return path.is_file() and path.suffix.lower() == ".csv" and load_eval_set(path, label_column)[1] is not None


def _correct(dataset: LabelledImages, given: list[str] | None, bundle: ModelBundle | None,
             templates: list[str] | None, scale: float | str) -> tuple[np.ndarray, str]:
    if given is not None:
        return np.array([p == t for p, t in zip(given, dataset.labels)]), "the set's prediction column"
    if bundle is None:
        raise CliplabError("Without a prediction column in the set, a model must classify it: load one.")
    if len(dataset.classnames) < 2:
        raise CliplabError(f"The evaluation set has one class ({dataset.classnames[0]}): zero-shot classification "
                           "needs two or more, or give the predictions in a prediction column.")
    probs = zero_shot_probs(bundle, dataset, templates or load_templates("default"), scale, progress=False)
    return probs.argmax(1) == dataset.targets, f"zero-shot over the set's {len(dataset.classnames)} classes"


# -- the reference set ---------------------------------------------------------------------------

@dataclass
class Reference:
    source: str
    paths: list[str]
    keys: list[str]
    descriptors: np.ndarray


def save_reference(folder: str | Path, output: str | Path, detector: str | None = None,
                   on_progress: copy_detectors.Progress | None = None) -> int:
    """Describe a reference folder once and keep it (an .npz: the detector's name, paths, content keys,
    descriptors as float16), so later overlap runs against it read no image."""
    chosen = copy_detectors.get_detector(detector, on_progress)
    reference = _folder_reference(folder, chosen, on_progress)
    np.savez(Path(output), detector=chosen.name, paths=np.array(reference.paths), keys=np.array(reference.keys),
             descriptors=reference.descriptors.astype(np.float16))
    return len(reference.paths)


def _describing(on_progress, what: str):
    return (lambda done, total: on_progress(what, done, total)) if on_progress else None


def _folder_reference(folder: str | Path, detector: copydetect.Detector, on_progress=None) -> Reference:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CliplabError(f"The reference set {root} is not a folder, a descriptor file or the library.")
    paths = [str(p) for p in folder_images(root)]
    if not paths:
        raise CliplabError(f"The reference folder {root} holds no images.")
    descriptors, failed = copies.image_descriptors(paths, detector, _describing(on_progress, "describing the references"))
    keep = np.setdiff1d(np.arange(len(paths)), failed)
    paths = [paths[i] for i in keep]
    return Reference(str(root), paths, [fingerprint(p) for p in paths], descriptors[keep])


def _file_reference(path: Path, detector: copydetect.Detector) -> Reference:
    try:
        data = np.load(path, allow_pickle=False)
        fields = set(data.files)
    except (OSError, ValueError) as error:
        raise CliplabError(f"Cannot read the reference file {path} ({error}).") from None
    if "detector" not in fields or "descriptors" not in fields:
        raise CliplabError(f"{path} holds no copy-detector descriptors (it looks like model embeddings, which are "
                           "not copy descriptors): give the reference images' folder instead.")
    described_by = str(data["detector"])
    if described_by != detector.name:
        raise CliplabError(f"{path} was described by the copy detector {described_by}, not this one ({detector.name}): "
                           "describe the reference images again from their folder, or choose the detector that "
                           "described them.")
    descriptors = data["descriptors"].astype(np.float32)
    if descriptors.shape[1:] != (detector.regions, detector.dim):
        raise CliplabError(f"{path} holds descriptors of another shape: describe the reference images again.")
    return Reference(str(path), [str(p) for p in data["paths"]], [str(k) for k in data["keys"]], descriptors)


def _library_reference(catalog: Catalog, detector: copydetect.Detector, on_progress=None) -> Reference:
    described = copies.library_descriptors(catalog, detector, _describing(on_progress, "describing the library"))
    if not len(described.ids):
        raise CliplabError("The library holds no indexed photos to compare with: add a folder first.")
    return Reference(LIBRARY, described.paths, described.keys, described.descriptors)


def load_reference(catalog: Catalog, source: str | Path, detector: copydetect.Detector,
                   on_progress: copy_detectors.Progress | None = None) -> Reference:
    text = str(source or "").strip()
    if not text:
        raise CliplabError("Give the reference set: an image folder, a descriptor file (.npz) or the library.")
    if text == LIBRARY:
        return _library_reference(catalog, detector, on_progress)
    path = Path(text).expanduser()
    return _file_reference(path, detector) if path.is_file() else _folder_reference(path, detector, on_progress)


# -- the split and its statistics ----------------------------------------------------------------

def _split(name: str, correct: np.ndarray) -> Split:
    n, k = int(len(correct)), int(correct.sum())
    if n == 0:
        return Split(name, 0, 0, None, None, None)
    interval = binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return Split(name, n, k, k / n, float(interval.low), float(interval.high))


def _pairs(dataset: LabelledImages, eval_keys: list[str], reference: Reference, descriptors: np.ndarray,
           threshold: float) -> tuple[list[Pair], str]:
    index = copies.CopyIndex(reference.descriptors)
    review = max(1e-6, threshold - REVIEW_MARGIN)
    queries, found, scores = index.matches(descriptors, review)
    pairs = [Pair(str(dataset.paths[q]), reference.paths[r], float(s), eval_keys[q], reference.keys[r], None,
                  bool(s >= threshold)) for q, r, s in zip(queries, found, scores)]
    pairs.sort(key=lambda p: (-p.score, p.eval_path, p.reference_path))  # the surest first, to review in order
    return pairs, "exact" if index.exact else "approximate"


def _notes(overlap: Split, clean: Split, threshold: float) -> list[str]:
    notes = []
    if overlap.size == 0:
        notes.append(f"No evaluation image has a copy in the reference set (copy score >= {threshold:.2f}): "
                     "All is Clean, and there is nothing to test.")
    if clean.size == 0:
        notes.append("Every evaluation image has a copy in the reference set: there is no Clean subset to "
                     "compare with, so All - Clean and the test are not given.")
    for split in (overlap, clean):
        if 0 < split.size < 10:
            notes.append(f"{split.name} holds {split.size} image(s): its interval "
                         f"({100 * split.low:.1f}% to {100 * split.high:.1f}%) is that wide because so few images "
                         "are behind it; read its accuracy as such.")
    return notes


def run_overlap(catalog: Catalog, eval_set: str | Path, reference_set: str | Path, bundle: ModelBundle | None = None,
                threshold: float | None = None, templates: list[str] | None = None,
                label_column: str = "label", scale: float | str = DEFAULT_SCALE, detector: str | None = None,
                on_progress: copy_detectors.Progress | None = None) -> OverlapReport:
    """The Overlap / Clean / All report of one evaluation set against one reference set. detector: a
    copy_detectors choice (None: the default); threshold None: the detector's own.
    on_progress(stage, done, total): preparing the detector at its first use, describing the images."""
    if threshold is not None and not 0.0 < float(threshold) <= 1.0:
        raise CliplabError(f"The copy threshold must be a score in (0, 1], not {threshold}.")
    dataset, given = load_eval_set(eval_set, label_column)
    chosen = copy_detectors.get_detector(detector, on_progress)
    threshold = chosen.threshold if threshold is None else float(threshold)
    reference = load_reference(catalog, reference_set, chosen, on_progress)
    descriptors, failed = copies.image_descriptors([str(p) for p in dataset.paths], chosen,
                                                   _describing(on_progress, "describing the evaluation set"))
    if failed:
        raise CliplabError(f"Cannot read {dataset.paths[failed[0]]} ({len(failed)} unreadable image(s) in the "
                           "evaluation set): fix or remove them.")
    correct, predictions = _correct(dataset, given, bundle, templates, scale)
    eval_keys = [fingerprint(p) for p in dataset.paths]
    pairs, search = _pairs(dataset, eval_keys, reference, descriptors, threshold)
    report = OverlapReport(chosen.name, threshold, str(eval_set), reference.source, len(reference.paths), search,
                           predictions, [], None, None, pairs, [], [str(p) for p in dataset.paths],
                           [bool(c) for c in correct])
    return resplit(catalog, report)


def resplit(catalog: Catalog, report: OverlapReport) -> OverlapReport:
    """The report's split and figures under the verdicts the catalog holds now (a pair a person decided
    counts as they said; the others by the threshold)."""
    decided = copies.decisions(catalog)
    for pair in report.pairs:
        pair.decision = decided.get((pair.eval_key, pair.reference_key))
        pair.counted = pair.decision if pair.decision is not None else pair.score >= report.threshold
    correct = np.array(report.correct, bool)
    in_overlap = np.zeros(len(correct), bool)
    position = {p: i for i, p in enumerate(report.eval_paths)}
    for pair in report.pairs:
        in_overlap[position[pair.eval_path]] |= pair.counted
    overlap, clean = _split("Overlap", correct[in_overlap]), _split("Clean", correct[~in_overlap])
    report.splits = [overlap, clean, _split("All", correct)]
    report.all_minus_clean = None if clean.size == 0 else report.splits[2].accuracy - clean.accuracy
    report.p_value = None
    if overlap.size and clean.size:
        report.p_value = float(binomtest(overlap.correct, overlap.size, clean.accuracy, alternative="greater").pvalue)
    report.notes = _notes(overlap, clean, report.threshold)
    return report


def decide(catalog: Catalog, pair: Pair, copy: bool | None) -> None:
    """Keep a person's verdict on a pair: True a copy (Overlap), False not (Clean), None: the detector decides."""
    copies.decide(catalog, pair.eval_key, pair.reference_key, copy)


def report_lines(report: OverlapReport) -> list[str]:
    """The report as text, one line per figure (the CLI prints it; the app shows the same table)."""
    lines = [f"copy detector {report.detector}, threshold {report.threshold:.2f}, {report.search} search over "
             f"{report.reference_size} reference image(s); predictions: {report.predictions}"]
    for s in report.splits:
        if s.size == 0:
            lines.append(f"{s.name:8s} n=0       accuracy: none (empty)")
        else:
            lines.append(f"{s.name:8s} n={s.size:<7d} accuracy {100 * s.accuracy:6.2f}%  99.5% CI "
                         f"[{100 * s.low:.2f}%, {100 * s.high:.2f}%]")
    if report.all_minus_clean is not None:
        lines.append(f"All - Clean: {100 * report.all_minus_clean:+.2f} points")
    if report.p_value is not None:
        lines.append(f"one-sided binomial test, Overlap > Clean: p = {report.p_value:.4g}")
    return lines + report.notes


def split_rows(report: OverlapReport) -> list[dict]:
    """The Overlap / Clean / All table as the app shows it (the CLI prints the same figures)."""
    rows = []
    for s in report.splits:
        empty = s.size == 0
        rows.append({"subset": s.name, "images": s.size, "correct": s.correct,
                     "accuracy": "none (empty)" if empty else f"{100 * s.accuracy:.2f}%",
                     "99.5% interval": "" if empty else f"{100 * s.low:.2f}% to {100 * s.high:.2f}%"})
    return rows


def pair_rows(report: OverlapReport) -> list[dict]:
    """Every detected or offered pair, the highest score first, with what it does to the split."""
    verdict = {True: "confirmed copy", False: "rejected", None: ""}
    return [{"pair": i, "score": round(p.score, 3), "evaluation image": p.eval_path, "reference image": p.reference_path,
             "in Overlap": "yes" if p.counted else "no", "decision": verdict[p.decision]}
            for i, p in enumerate(report.pairs)]


def _inside_library(catalog: Catalog, typed: str) -> Path:
    real = Path(os.path.realpath(os.path.expanduser(typed)))
    return serving.library_folder(catalog, typed) if real.is_dir() else serving.library_file(catalog, typed)


def overlap_for_app(catalog: Catalog, bundle: ModelBundle | None, eval_set: str, reference_set: str,
                    threshold: float | None = None, templates: list[str] | None = None,
                    on_progress: copy_detectors.Progress | None = None) -> OverlapReport:
    """run_overlap for a person in the app: the sets they name lie in their library folders (as every path
    typed in the page), or the reference is the library itself."""
    eval_set, reference_set = (eval_set or "").strip(), (reference_set or "").strip() or LIBRARY
    if not eval_set:
        raise CliplabError("Name the evaluation set: an image folder with one sub-folder per class, or a CSV with "
                           "path and label columns, inside a library folder.")
    _inside_library(catalog, eval_set)
    for image in load_eval_set(eval_set)[0].paths:
        serving.library_file(catalog, image)  # an image a CSV lists must lie in the library too
    if reference_set != LIBRARY:
        _inside_library(catalog, reference_set)
    return run_overlap(catalog, eval_set, reference_set, bundle, threshold, templates, on_progress=on_progress)


def pair_images(report: OverlapReport, number: int, size: int = 384) -> tuple[Image.Image, Image.Image]:
    """The two pictures of a pair, side by side in the app (reduced to `size` px on the long side)."""
    if not 0 <= number < len(report.pairs):
        raise CliplabError(f"There is no pair {number}: pick one of 0 to {len(report.pairs) - 1}.")
    pair = report.pairs[number]
    shown = []
    for path in (pair.eval_path, pair.reference_path):
        image = load_image(path)
        image.thumbnail((size, size))
        shown.append(image)
    return shown[0], shown[1]
