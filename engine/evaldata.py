"""Labelled image datasets for evaluation, and their image features cached per (model, dataset).

A dataset is either an image folder whose sub-folders are the classes, or a CSV file with
`path,label` columns (relative paths are relative to the CSV's folder).
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliplab.engine.errors import CliplabError
from cliplab.engine.features import encode_images, numerics_key
from cliplab.engine.paths import cache_dir

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic", ".heif"}


@dataclass
class LabelledImages:
    paths: list[Path]
    labels: list[str]
    classnames: list[str]  # sorted, every label that occurs
    name: str

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def targets(self) -> np.ndarray:
        """Labels as indices into classnames."""
        index = {c: i for i, c in enumerate(self.classnames)}
        return np.array([index[label] for label in self.labels], dtype=np.int64)

    def subset(self, indices: np.ndarray) -> LabelledImages:
        return LabelledImages([self.paths[i] for i in indices], [self.labels[i] for i in indices],
                              self.classnames, self.name)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_dataset(path: str | Path) -> LabelledImages:
    """An image folder (class = sub-folder name, nested files included) or a `path,label` CSV."""
    root = Path(path).expanduser()
    if root.is_dir():
        paths, labels = [], []
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p)
                           and not any(part.startswith(".") for part in p.relative_to(folder).parts))
            paths += files
            labels += [folder.name] * len(files)
    elif root.is_file() and root.suffix.lower() == ".csv":
        paths, labels = _read_csv(root)
    else:
        raise CliplabError(f"{root} is neither an image folder (one sub-folder per class) nor a CSV file "
                           "with path,label columns.")
    if not paths:
        raise CliplabError(f"No images found in {root}: put each class's images in a sub-folder named after it.")
    return LabelledImages(paths, labels, sorted(set(labels)), root.stem or root.name)


def _read_csv(path: Path) -> tuple[list[Path], list[str]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    bad = [i for i, r in enumerate(rows) if len(r) < 2 or not r[0].strip() or not r[1].strip()]
    if bad:
        raise CliplabError(f"{path}: every row needs a path and a label (first bad data row: {bad[0] + 1}).")
    paths = [Path(r[0].strip()).expanduser() for r in rows]
    paths = [p if p.is_absolute() else path.parent / p for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise CliplabError(f"{path}: {len(missing)} listed image(s) do not exist, e.g. {missing[0]}.")
    return paths, [r[1].strip() for r in rows]


def stratified_split(labels: list[str] | np.ndarray, fractions: tuple[float, ...],
                     seed: int = 0) -> list[np.ndarray]:
    """Index arrays, one per fraction, each holding about that share of every class (seeded)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    bounds = np.cumsum(fractions) / np.sum(fractions)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(bounds * len(idx)).astype(int)
        for i, (a, b) in enumerate(zip(np.r_[0, cuts[:-1]], cuts)):
            parts[i] += idx[a:b].tolist()
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def _cache_key(model, paths: list[Path], project: bool) -> str:
    digest = hashlib.sha256(f"{numerics_key(model)}|project={project}".encode())
    for p in paths:
        stat = p.stat()
        digest.update(f"\n{p.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:40]


def dataset_features(model, preprocess: Callable, dataset: LabelledImages, project: bool = True,
                     batch_size: int = 32, progress: bool = True, cache: bool = True) -> np.ndarray:
    """Image features [n, d] float32 (not normalised) of every image, computed once per
    (model, files, project) and cached; a changed file (size or mtime) gives a new key.
    project=False: the features before the final projection (the paper's linear-probe input for ViT)."""
    from cliplab.engine.images import ImageLoadError, load_image  # written by the engine's image helper

    path = cache_dir("features") / f"{_cache_key(model, dataset.paths, project)}.npy"
    if cache and path.is_file():
        return np.load(path)

    def images():
        for p in dataset.paths:
            try:
                yield load_image(p, min_size=getattr(model, "image_resolution", None))
            except ImageLoadError as error:
                raise CliplabError(f"Cannot use {p} for evaluation ({error.reason}); fix or remove it.") from None

    features = encode_images(model, preprocess, images(), batch_size=batch_size, normalize=False,
                             project=project, progress=progress, total=len(dataset))
    if cache:
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, features)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
    return features
