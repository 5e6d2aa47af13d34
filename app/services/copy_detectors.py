"""Which copy detector a run uses, and preparing the learned one.

The learned detector (engine.copydetect.LearnedDetector, the paper's Appendix C detector scaled
down) is trained once per machine by trainer.copy_detector's recipe, about two minutes on two CPU
cores, then kept in the data folder (detectors/) and loaded from there: by the first run that needs
it (with a progress bar), or ahead of time by `cliplab copy-detector --train`. Two processes that
need it at once train it once (a file lock); the file is written whole or not at all.

A choice names the detector: "learned" (the default), "dct" (the training-free detector), or the
path of a weights file `cliplab copy-detector --train --output` wrote. The environment variable
CLIPLAB_COPY_DETECTOR sets the default choice (the tests point it at a detector trained in seconds).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cliplab.engine import copydetect
from cliplab.engine.errors import CliplabError
from cliplab.engine.paths import data_dir, exclusive_lock
from cliplab.trainer.copy_detector import Progress, Recipe, train_detector

LEARNED, DCT = "learned", "dct"
CHOICES = (LEARNED, DCT)
ENVIRONMENT = "CLIPLAB_COPY_DETECTOR"
# The learned recipe's threshold before its own calibration is known (the front ends' slider shows
# the calibrated one once the detector is prepared): the default draw's, measured (0.948; others 0.955, 0.967).
UNPREPARED_THRESHOLD = 0.95
_loaded: dict[tuple[str, float], copydetect.LearnedDetector] = {}


@dataclass
class DetectorInfo:
    choice: str
    name: str | None  # None: the learned detector is not prepared yet
    path: str | None
    threshold: float
    prepared: bool
    facts: dict


def default_choice() -> str:
    return os.environ.get(ENVIRONMENT, "").strip() or LEARNED


def recipe_path(recipe: Recipe = Recipe()) -> Path:
    """Where the detector of this recipe is kept: named by the recipe, so another recipe trains anew."""
    key = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode()).hexdigest()[:12]
    folder = data_dir() / "detectors"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"copy-cnn-{key}.safetensors"


def _load(path: Path) -> copydetect.LearnedDetector:
    key = (str(path), path.stat().st_mtime)
    if key not in _loaded:
        _loaded[key] = copydetect.load_learned(path)
    return _loaded[key]


def prepare(recipe: Recipe = Recipe(), output: str | Path | None = None, force: bool = False,
            on_progress: Progress | None = None) -> copydetect.LearnedDetector:
    """The learned detector of the recipe: loaded if kept (at output, else in the data folder),
    else trained, calibrated and kept. force: train again even if kept."""
    path = Path(output).expanduser() if output else recipe_path(recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_suffix(".lock")):  # a second process waits here, then loads the first's file
        if path.is_file() and not force:
            return _load(path)
        detector = train_detector(recipe, on_progress)
        detector.save(path)
    return _load(path)


def get_detector(choice: str | None = None, on_progress: Progress | None = None) -> copydetect.Detector:
    """The detector a choice names (None: the default choice), preparing the learned one if needed."""
    choice = (choice or default_choice()).strip()
    if choice == DCT:
        return copydetect.DCTDetector()
    if choice == LEARNED:
        return prepare(on_progress=on_progress)
    path = Path(choice).expanduser()
    if not path.is_file():
        raise CliplabError(f"No copy detector '{choice}': choose {' or '.join(CHOICES)}, or give the path of a "
                           "copy detector file that cliplab trained.")
    return _load(path)


def describe(choice: str | None = None) -> DetectorInfo:
    """What a choice names, without training anything."""
    choice = (choice or default_choice()).strip()
    if choice == DCT:
        return DetectorInfo(DCT, copydetect.NAME, None, copydetect.THRESHOLD, True, {})
    path = recipe_path() if choice == LEARNED else Path(choice).expanduser()
    if path.is_file():
        detector = get_detector(str(path))
        return DetectorInfo(choice, detector.name, str(path), detector.threshold, True, detector.meta)
    if choice != LEARNED:
        get_detector(choice)  # says what is wrong with the choice
    return DetectorInfo(choice, None, str(path), UNPREPARED_THRESHOLD, False, {})


def default_threshold(choice: str | None = None) -> float:
    """The threshold a run of this choice uses when none is given (no training to learn it)."""
    try:
        return describe(choice).threshold
    except CliplabError:
        return UNPREPARED_THRESHOLD


def console_progress() -> Progress:
    """on_progress(stage, done, total) as a progress bar per stage on the terminal (the CLI's)."""
    from tqdm.auto import tqdm
    bars: dict[str, tqdm] = {}

    def report(stage: str, done: int, total: int) -> None:
        for other in [s for s in bars if s != stage]:
            bars.pop(other).close()
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=stage, leave=False)
        bars[stage].n = done
        bars[stage].refresh()
        if done >= total:
            bars.pop(stage).close()

    return report
