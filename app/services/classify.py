"""Roll your own classifier: class names + templates -> probabilities for images, a folder, a CSV.

Front ends (CLI, Gradio) call these functions with the one model handle, a ModelBundle loaded in
the exact precision (app.services.loading), so the app and the CLI give the same numbers.
Probabilities use the reference notebooks' fixed scale of 100 unless scale="model" is passed.
"""

from __future__ import annotations

import csv
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cliplab.app.services.paths import natural_key
from cliplab.engine.classifier_file import read as read_classifier_file
from cliplab.engine.errors import CliplabError
from cliplab.engine.evaldata import is_image_file
from cliplab.engine.features import encode_images
from cliplab.engine.images import ImageLoadError, load_image
from cliplab.engine.labelling import probabilities
from cliplab.engine.zeroshot import (  # noqa: F401 (TEMPLATE_PRESETS, load_templates, check_templates: for front ends)
    DEFAULT_SCALE,
    TEMPLATE_PRESETS,
    Classifier,
    build_classifier,
    check_templates,
    class_counts,
    compare_label_sets,
    load_templates,
    threshold_labels,
    topk_labels,
)
from cliplab.indexes.indexer import ModelBundle


def visible(text: str) -> str:
    """text without the blanks, control and invisible format characters (a zero-width space, a byte-order
    mark, a direction mark) at its ends: a line holding only those is empty, not a class."""
    start, end = 0, len(text)
    while start < end and _invisible(text[start]):
        start += 1
    while end > start and _invisible(text[end - 1]):
        end -= 1
    return text[start:end]


def _invisible(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in ("Cc", "Cf")


def shortened(text: str, limit: int = 60) -> str:
    """text as a sentence may echo it: at most `limit` characters, with its length when cut."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def parse_classes(classes: str | None = None, classes_file: str | Path | None = None) -> list[str]:
    """Class names from a comma-separated string and/or a file (one per line; '#' starts a comment)."""
    names = [visible(c) for c in (classes or "").split(",")]
    if classes_file:
        path = Path(classes_file).expanduser()
        if not path.is_file():
            raise CliplabError(f"The classes file {path} does not exist.")
        names += [visible(line) for line in path.read_text(encoding="utf-8").splitlines()
                  if not visible(line).startswith("#")]
    names = [n for n in names if n]
    if not names:
        raise CliplabError('Give the class names, e.g. "cat,dog,bird", or a file with one class name per line.')
    return names


@dataclass
class Classification:
    classifier: Classifier
    paths: list[Path]  # the images that were classified, in order
    probs: np.ndarray  # [n, C]
    top: list[list[tuple[str, float]]]  # top-k (label, probability) per image
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable files and why
    above_threshold: list[list[tuple[str, float]]] | None = None
    names: list[str] | None = None  # how each image is called (an upload's own name), else its path
    threshold: float | None = None  # the threshold above_threshold was made with

    @property
    def counts(self) -> dict[str, int]:
        """Images per top-1 class (every class listed)."""
        return class_counts(self.top, self.classifier.classnames)

    def count_rows(self) -> list[tuple[str, int, float]]:
        """(class, images, share of the images) per top-1 class, most images first (the summary the CLI
        prints and the Classify tab shows)."""
        total = max(1, len(self.paths))
        ordered = sorted(self.counts.items(), key=lambda kv: -kv[1])  # stable: ties keep the label order
        return [(label, n, n / total) for label, n in ordered]

    @property
    def labels(self) -> list[str]:
        """The images as a table or a CSV names them."""
        return self.names if self.names is not None else [str(p) for p in self.paths]

    def table(self) -> pd.DataFrame:
        """One row per (image, rank): path, rank, label, probability."""
        rows = [dict(path=name, rank=r + 1, label=label, probability=prob)
                for name, top in zip(self.labels, self.top) for r, (label, prob) in enumerate(top)]
        return pd.DataFrame(rows, columns=["path", "rank", "label", "probability"])


@dataclass
class EmbeddedImages:
    """Images read and embedded once (the handle's preprocessing, exact weights): what every label set
    scored on the same images shares."""
    features: np.ndarray  # [n, d], L2-normalised
    paths: list[Path]  # the images read, in order
    skipped: list[tuple[Path, str]]  # unreadable files with reasons


def embed_images(bundle: ModelBundle, paths: Sequence[str | Path], progress: bool = False,
                 batch_size: int = 32) -> EmbeddedImages:
    """The readable images' embeddings (unreadable files are skipped and listed; none readable is refused)."""
    model, preprocess = bundle.inference_model, bundle.preprocess
    paths = [Path(p) for p in paths]
    used, skipped = [], []

    def images():
        for path in paths:
            try:
                image = load_image(path, min_size=max(preprocess.resolution, preprocess.resize_size))
            except ImageLoadError as error:
                skipped.append((path, error.reason))
                continue
            used.append(path)
            yield image

    features = encode_images(model, preprocess, images(), batch_size=batch_size, progress=progress,
                             total=len(paths))
    if not used:
        reasons = "; ".join(f"{p.name}: {why}" for p, why in skipped[:3])
        raise CliplabError(f"None of the {len(paths)} file(s) could be read as an image ({reasons}).")
    return EmbeddedImages(features, used, skipped)


def classify_images(bundle: ModelBundle, paths: Sequence[str | Path] | EmbeddedImages, classnames: list[str],
                    templates: list[str], k: int = 5, threshold: float | None = None,
                    scale: float | str = DEFAULT_SCALE, progress: bool = False,
                    truncate: bool = False) -> Classification:
    """Top-k probabilities for each image (unreadable files are skipped and listed, not fatal).
    paths: image files, or images embed_images already embedded (scored without encoding them again).
    truncate: cut prompts longer than the model's context to fit; otherwise such a class is refused
    with a sentence naming it."""
    model, tokenizer = bundle.inference_model, bundle.tokenizer
    if not truncate:
        check_prompt_lengths(tokenizer, classnames, templates, model.context_length,
                             advice="shorten it, or let cliplab truncate each prompt to fit")
    classifier = build_classifier(model, tokenizer, classnames, templates, progress=progress, scale=scale,
                                  truncate=truncate)
    embedded = paths if isinstance(paths, EmbeddedImages) else embed_images(bundle, paths, progress=progress)
    probs = classifier.probs(embedded.features)
    top = classifier.topk(embedded.features, k)
    above = threshold_labels(probs, classifier.classnames, threshold) if threshold is not None else None
    return Classification(classifier, embedded.paths, probs, top, embedded.skipped, above, threshold=threshold)


def classify_with_file(bundle: ModelBundle, paths: Sequence[str | Path], classifier_path: str | Path, k: int = 5,
                       threshold: float | None = None, progress: bool = False) -> Classification:
    """Classify images with an exported classifier file (engine.classifier_file): its own class weights (the
    improved head, if it had one), scale and threshold, through the same arithmetic as the library's labels.
    A file made for another model is refused with a sentence naming both."""
    loaded = read_classifier_file(classifier_path, bundle.fingerprint, bundle.name)
    embedded = embed_images(bundle, paths, progress=progress)
    probs = probabilities(loaded.weights, loaded.scale, embedded.features)
    classifier = Classifier(loaded.classes, loaded.templates, loaded.weights, loaded.scale, loaded.model_fingerprint)
    threshold = loaded.threshold if threshold is None else threshold
    above = threshold_labels(probs, loaded.classes, threshold) if threshold is not None else None
    return Classification(classifier, embedded.paths, probs, topk_labels(probs, loaded.classes, k), embedded.skipped,
                          above, threshold=threshold)


def probability_text(p: float) -> str:
    """A probability with the digits that tell it apart from 0 and from 1: 0.99997 (not 1), 3.1e-05 (not 0),
    0.42 as 0.4200. A softmax is often this peaked, and four fixed decimals showed 1 and 0."""
    p = float(p)
    if not 0.0 < p < 1.0:
        return f"{p:g}"
    if p < 1e-4:
        return f"{p:.2g}"
    gap = min(p, 1.0 - p)  # the distance that needs showing: from 0, or from 1
    decimals = max(4, -math.floor(math.log10(gap)) + 1)
    return f"{p:.{decimals}f}"


def folder_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CliplabError(f"{root} is not a folder.")
    files = root.rglob("*") if recursive else root.iterdir()
    found = sorted((p for p in files if p.is_file() and is_image_file(p)
                    and not any(part.startswith(".") for part in p.relative_to(root).parts)), key=natural_key)
    if not found:
        raise CliplabError(f"No images found in {root}.")
    return found


def export_csv(result: Classification, path: str | Path) -> Path:
    """One row per image: path, top-1 label and probability, then every class's probability."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    names = result.classifier.classnames
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "top1", "top1_probability", *names])
        for name, top, row in zip(result.labels, result.top, result.probs):
            writer.writerow([name, top[0][0], f"{top[0][1]:.6f}", *(f"{v:.6f}" for v in row)])
    return path


# -- the app's Classify tab: typed class lists, two label sets side by side ------------------------

MAX_APP_CLASSES = 1000  # ImageNet's size; larger label sets belong to `cliplab classify --classes-file`


def class_lines(text: str | None, label: str = "class names") -> list[str]:
    """Class names typed one per line (blank lines dropped), checked for the app: a name typed twice is
    reported, not merged silently (two lines meant as two classes would otherwise become one)."""
    typed = [visible(line) for line in (text or "").splitlines() if visible(line)]
    names = list(dict.fromkeys(typed))
    repeated = [name for name in names if typed.count(name) > 1]
    if repeated:
        shown = ", ".join(repr(shortened(name)) for name in repeated[:3]) + (" ..." if len(repeated) > 3 else "")
        raise CliplabError(f"{shown} {'is' if len(repeated) == 1 else 'are'} typed twice in the {label}: keep each "
                           "class once (or make the two lines differ).")
    if not names:
        raise CliplabError(f"Type the {label}, one per line (at least two).")
    if len(names) == 1:
        raise CliplabError(f"Only one class ({shortened(names[0])!r}) was given: a classifier needs at least two to "
                           "choose between; add another line.")
    if len(names) > MAX_APP_CLASSES:
        raise CliplabError(f"{len(names):,} class names is more than the app takes at once "
                           f"(at most {MAX_APP_CLASSES:,}); split the list into smaller label sets.")
    return names


def template_lines(text: str | None) -> list[str]:
    """Templates typed one per line (blank and invisible-only lines dropped), each with one '{}'."""
    templates = [visible(line) for line in (text or "").splitlines() if visible(line)]
    check_templates(templates)
    return templates


def check_prompt_lengths(tokenizer, classnames: list[str], templates: list[str], context_length: int,
                         advice: str = "shorten it") -> None:
    """Refuse a template that does not fit the model's context by itself, then a class name whose longest
    prompt does not, naming which one it is (echoed shortened: the page shows the sentence)."""
    if not templates:
        return
    for template in templates:
        tokens = len(tokenizer.encode(template.replace("{}", ""))) + 2  # + start and end tokens
        if tokens > context_length:
            raise CliplabError(f"The template {shortened(template)!r} is too long: it makes {tokens:,} tokens without "
                               f"a class name and the model reads at most {context_length}; shorten it.")
    longest = max(templates, key=len)
    for name in classnames:
        tokens = len(tokenizer.encode(longest.replace("{}", name))) + 2
        if tokens > context_length:
            raise CliplabError(f"The class name {shortened(name, 40)!r} is too long: in the prompt "
                               f"{shortened(longest)!r} it makes {tokens:,} tokens and the model reads at most "
                               f"{context_length}; {advice}.")


@dataclass
class AppClassification:
    result: Classification
    second: Classification | None = None
    comparison: dict | None = None


def classify_for_app(bundle: ModelBundle, paths: Sequence[str | Path], classes_text: str, templates: list[str],
                     second_text: str | None = None, threshold: float | None = None, k: int = 5,
                     names: dict[str, str] | None = None) -> AppClassification:
    """The Classify tab's action: one label set, optionally a second one scored on the same images.
    names: what to call an image (by its path) in the tables and the CSV, e.g. an upload's own file name
    rather than where the front end stored it."""
    if not paths:
        raise CliplabError("Add an image first: upload one, pick one from the library or give a folder.")
    model, tokenizer = bundle.inference_model, bundle.tokenizer
    classnames = class_lines(classes_text)
    check_prompt_lengths(tokenizer, classnames, templates, model.context_length)
    second_names = class_lines(second_text, "second label set's class names") if (second_text or "").strip() else None
    if second_names is not None:  # refused before any image is read
        check_prompt_lengths(tokenizer, second_names, templates, model.context_length)
    embedded = embed_images(bundle, paths)  # once: both label sets score the same embeddings
    shown = [names.get(str(p), str(p)) for p in embedded.paths] if names else None
    result = classify_images(bundle, embedded, classnames, templates, k=k, threshold=threshold)
    result.names = shown
    if second_names is None:
        return AppClassification(result)
    second = classify_images(bundle, embedded, second_names, templates, k=k, threshold=threshold)
    second.names = shown
    comparison = compare_label_sets(result.probs, classnames, second.probs, second_names)
    return AppClassification(result, second, comparison)
