"""Zero-shot classifiers: class names + prompt templates -> a linear classifier over image features.

A class's weight vector is the paper's ensemble in embedding space: every filled template (and
any extra prompt given for that class) is embedded and L2-normalised, the vectors are averaged
per class, and the mean is re-normalised. Prompt embeddings are cached on disk keyed by
(model fingerprint, prompt text), so an overlapping classifier only encodes its new prompts.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cliplab.assets import asset_path
from cliplab.engine.errors import CliplabError
from cliplab.engine.features import encode_texts, model_fingerprint, numerics_key
from cliplab.engine.paths import cache_dir

DEFAULT_SCALE = 100.0  # the reference notebooks' fixed temperature; scale="model" uses exp(logit_scale)
# "a photo of a {}." in other languages, for class names in them (multilingual text towers: engine.text_towers)
TEMPLATE_LANGUAGES = ("de", "fr", "es", "it", "pt", "ru", "zh", "ja", "ko", "ar", "hi")
TEMPLATE_PRESETS = ("imagenet80", "imagenet7", "default", "pets", "food", "aircraft", "satellite", "ocr",
                    *(f"default-{language}" for language in TEMPLATE_LANGUAGES))
_ENCODE_CHUNK = 4096  # prompts encoded (and committed to the cache) per step


# ---------------------------------------------------------------------------------------------
# templates


def load_templates(name_or_path: str) -> list[str]:
    """A preset name (TEMPLATE_PRESETS) or a file: one template per line, or a JSON list.
    Each template holds one `{}` where the class name goes."""
    path = asset_path("templates", f"{name_or_path}.txt") if name_or_path in TEMPLATE_PRESETS else Path(name_or_path)
    if not path.is_file():
        raise CliplabError(f"No template set {name_or_path!r}: give one of {', '.join(TEMPLATE_PRESETS)} "
                           "or a file with one template per line (each with '{}' for the class name).")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            templates = json.loads(text)
        except json.JSONDecodeError as error:
            raise CliplabError(f"{path} looks like JSON but does not parse ({error}); "
                               "write a JSON list of strings or one template per line.") from None
        if not all(isinstance(t, str) for t in templates):
            raise CliplabError(f"{path} must hold a JSON list of strings.")
    else:
        templates = [line.strip() for line in text.splitlines()]
    templates = [t for t in templates if t and not t.startswith("#")]
    check_templates(templates)
    return templates


def check_templates(templates: Sequence[str]) -> None:
    if not templates:
        raise CliplabError("No prompt templates given: use e.g. 'a photo of a {}.'")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        shown = [t if len(t) <= 60 else f"{t[:60]}… ({len(t):,} characters)" for t in bad[:3]]  # echoed on a page
        raise CliplabError(f"Each template needs exactly one '{{}}' for the class name; these do not: {shown}")


def fill(template: str, classname: str) -> str:
    return template.replace("{}", classname)  # not str.format: templates may hold other braces


# ---------------------------------------------------------------------------------------------
# the on-disk text-embedding cache


class TextFeatureCache:
    """Normalised prompt embeddings in one SQLite file, keyed by (model fingerprint[/dtype], text).
    WAL mode and INSERT OR IGNORE make concurrent builders in several processes safe: the
    first writer of a key wins and every writer would have written the same vector."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir("text_features") / "text_features.sqlite"
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        # A rowid table (not WITHOUT ROWID): its 2 KB rows would overflow an index-organised B-tree.
        self.db.execute("CREATE TABLE IF NOT EXISTS text_features (fingerprint TEXT NOT NULL, text TEXT NOT NULL, "
                        "vector BLOB NOT NULL, PRIMARY KEY (fingerprint, text))")
        self.db.commit()

    def get(self, fingerprint: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        # One join against a temporary table of the wanted texts: far faster than many IN (...) queries.
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (text TEXT PRIMARY KEY)")
        self.db.execute("DELETE FROM wanted")
        self.db.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", ((t,) for t in texts))
        rows = self.db.execute("SELECT f.text, f.vector FROM wanted w JOIN text_features f "
                               "ON f.fingerprint = ? AND f.text = w.text", (fingerprint,))
        found = {text: np.frombuffer(blob, dtype=np.float32) for text, blob in rows}
        self.db.execute("DELETE FROM wanted")
        self.db.commit()
        return found

    def put(self, fingerprint: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        rows = [(fingerprint, t, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for t, v in zip(texts, vectors)]
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO text_features VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        self.db.close()


def embed_prompts(model, tokenizer, texts: Sequence[str], cache: bool = True, progress: bool = False,
                  batch_size: int = 256, truncate: bool = False) -> tuple[np.ndarray, int]:
    """L2-normalised embeddings [n, d] of the texts, and how many had to be encoded (cache misses).
    truncate: cut a text longer than the context to fit (keeping EOT last) instead of refusing it;
    a text that fits is embedded the same either way, so the cache serves both."""
    unique = list(dict.fromkeys(texts))
    store = TextFeatureCache() if cache else None
    try:
        # precision and kernels are part of the key: fp16 and fp32 runs of the same weights differ slightly
        fingerprint = numerics_key(model) if cache else ""
        known = store.get(fingerprint, unique) if store else {}
        missing = sorted((t for t in unique if t not in known), key=len)  # similar lengths batch together
        bar = tqdm(total=len(missing), disable=not progress or not missing, desc="encoding prompts", unit="prompt")
        for start in range(0, len(missing), _ENCODE_CHUNK):
            chunk = missing[start:start + _ENCODE_CHUNK]
            vectors = encode_texts(model, tokenizer, chunk, batch_size=batch_size, truncate=truncate)
            known.update(zip(chunk, vectors))
            if store:
                store.put(fingerprint, chunk, vectors)  # committed per chunk: an interrupted build keeps its work
            bar.update(len(chunk))
        bar.close()
    finally:
        if store:
            store.close()
    if not unique:
        return np.zeros((0, model.embed_dim), dtype=np.float32), 0
    return np.stack([known[t] for t in texts]).astype(np.float32, copy=False), len(missing)


# ---------------------------------------------------------------------------------------------
# the classifier


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Classifier:
    classnames: list[str]
    templates: list[str]
    weights: np.ndarray  # float32 [C, d], rows L2-normalised
    logit_scale: float = DEFAULT_SCALE
    fingerprint: str = ""
    extra_prompts: dict[str, list[str]] = field(default_factory=dict)

    def logits(self, image_features: np.ndarray) -> np.ndarray:
        return self.logit_scale * (_normalize(np.atleast_2d(image_features)) @ self.weights.T)

    def probs(self, image_features: np.ndarray) -> np.ndarray:
        """[n, C] softmax of the scaled cosine similarity (features are L2-normalised here)."""
        return softmax(self.logits(image_features))

    def topk(self, image_features: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        return topk_labels(self.probs(image_features), self.classnames, k)

    def to_dict(self) -> dict:
        """JSON-ready; the weights travel as base64 float32 so a round trip is exact."""
        weights = np.ascontiguousarray(self.weights, dtype=np.float32)
        return dict(classnames=list(self.classnames), templates=list(self.templates),
                    extra_prompts={k: list(v) for k, v in self.extra_prompts.items()},
                    logit_scale=float(self.logit_scale), fingerprint=self.fingerprint,
                    weights_shape=list(weights.shape), weights=base64.b64encode(weights.tobytes()).decode("ascii"))

    @classmethod
    def from_dict(cls, data: dict) -> Classifier:
        weights = data["weights"]
        if isinstance(weights, str):
            weights = np.frombuffer(base64.b64decode(weights), dtype=np.float32).reshape(data["weights_shape"])
        return cls(classnames=list(data["classnames"]), templates=list(data["templates"]),
                   weights=np.array(weights, dtype=np.float32), logit_scale=float(data["logit_scale"]),
                   fingerprint=data.get("fingerprint", ""), extra_prompts=dict(data.get("extra_prompts") or {}))


def build_classifier(model, tokenizer, classnames: list[str], templates: list[str],
                     extra_prompts: dict[str, list[str]] | None = None, cache: bool = True,
                     progress: bool = False, scale: float | str = DEFAULT_SCALE, truncate: bool = False) -> Classifier:
    """The zero-shot classifier for these classes and templates (see the module docstring).
    scale: the temperature, DEFAULT_SCALE (100, as the reference notebooks) or "model" for the
    model's own exp(logit_scale)."""
    classnames = [str(c).strip() for c in classnames]
    if not classnames or not all(classnames):
        raise CliplabError("Give at least one non-empty class name.")
    check_templates(templates)
    extra_prompts = {k: list(v) for k, v in (extra_prompts or {}).items() if v}
    unknown = sorted(set(extra_prompts) - set(classnames))
    if unknown:
        raise CliplabError(f"Extra prompts were given for classes that are not in the label set: {unknown}")
    prompts, owner = [], []
    for index, name in enumerate(classnames):
        class_prompts = [fill(t, name) for t in templates] + extra_prompts.get(name, [])
        prompts += class_prompts
        owner += [index] * len(class_prompts)
    embeddings, _ = embed_prompts(model, tokenizer, prompts, cache=cache, progress=progress, truncate=truncate)
    # prompts are laid out class by class, so each class's mean is one contiguous segment
    counts = np.bincount(owner, minlength=len(classnames))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sums = np.add.reduceat(embeddings.astype(np.float64), starts, axis=0)
    weights = _normalize((sums / counts[:, None]).astype(np.float32))
    if scale == "model":
        logit_scale = float(model.logit_scale.detach().float().exp())
    elif isinstance(scale, (int, float)) and scale > 0:
        logit_scale = float(scale)
    else:
        raise CliplabError(f"scale must be a positive number or 'model', not {scale!r}.")
    return Classifier(classnames, list(templates), weights, logit_scale, model_fingerprint(model), extra_prompts)


# ---------------------------------------------------------------------------------------------
# using the probabilities


def topk_labels(probs: np.ndarray, classnames: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
    probs = np.atleast_2d(probs)
    k = max(1, min(k, probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(classnames[j], float(row[j])) for j in idx] for row, idx in zip(probs, order)]


def predict(classifier: Classifier, image_features: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k (label, probability) per image, most probable first."""
    return classifier.topk(image_features, k)


def threshold_labels(probs: np.ndarray, classnames: Sequence[str], threshold: float) -> list[list[tuple[str, float]]]:
    """Every label whose probability is at least `threshold` (a fraction: 0.005 is the paper's 0.5%),
    most probable first; an image may get none."""
    if not 0.0 <= threshold <= 1.0:
        raise CliplabError(f"The threshold is a probability between 0 and 1 (0.04 for 4%), not {threshold}.")
    out = []
    for row in np.atleast_2d(probs):
        idx = [j for j in np.argsort(-row, kind="stable") if row[j] >= threshold]
        out.append([(classnames[j], float(row[j])) for j in idx])
    return out


def compare_label_sets(probs_a: np.ndarray, classes_a: Sequence[str], probs_b: np.ndarray,
                       classes_b: Sequence[str]) -> dict:
    """The same images classified under label set A and label set B (e.g. B = A plus one class).

    Returns a dict with
      per_image:   DataFrame (top1_a, prob_a, top1_b, prob_b, moved), one row per image;
      transitions: DataFrame of counts, rows = top-1 class under A, columns = top-1 under B
                   (every class of both sets appears, so zero rows/columns are visible);
      per_class:   DataFrame per A class: images, moved, moved_fraction, most common B class;
      moved, n_images, moved_fraction.
    """
    probs_a, probs_b = np.atleast_2d(probs_a), np.atleast_2d(probs_b)
    if probs_a.shape[0] != probs_b.shape[0]:
        raise CliplabError(f"Both label sets must score the same images ({probs_a.shape[0]} vs {probs_b.shape[0]}).")
    if probs_a.shape[1] != len(classes_a) or probs_b.shape[1] != len(classes_b):
        raise CliplabError("Each probability array needs one column per class of its label set.")
    ia, ib = probs_a.argmax(axis=1), probs_b.argmax(axis=1)
    top_a = [classes_a[i] for i in ia]
    top_b = [classes_b[i] for i in ib]
    per_image = pd.DataFrame(dict(top1_a=top_a, prob_a=probs_a[np.arange(len(ia)), ia],
                                  top1_b=top_b, prob_b=probs_b[np.arange(len(ib)), ib]))
    per_image["moved"] = per_image.top1_a != per_image.top1_b
    rows, cols = list(dict.fromkeys(classes_a)), list(dict.fromkeys(classes_b))
    transitions = (pd.crosstab(per_image.top1_a, per_image.top1_b)
                   .reindex(index=rows, columns=cols, fill_value=0).rename_axis(index="A", columns="B"))
    per_class = []
    for name in rows:
        group = per_image[per_image.top1_a == name]
        moved = int(group.moved.sum())
        destination = group.top1_b[group.moved].value_counts()
        per_class.append(dict(class_a=name, images=len(group), moved=moved,
                              moved_fraction=moved / len(group) if len(group) else 0.0,
                              moved_mostly_to=destination.index[0] if moved else ""))
    n, moved = len(per_image), int(per_image.moved.sum())
    return dict(per_image=per_image, transitions=transitions, per_class=pd.DataFrame(per_class),
                moved=moved, n_images=n, moved_fraction=moved / n if n else 0.0)


def class_counts(predictions: Iterable[list[tuple[str, float]]], classnames: Sequence[str]) -> dict[str, int]:
    """How many images have each class as their top-1 (every class listed, zeros included)."""
    counts = dict.fromkeys(classnames, 0)
    for top in predictions:
        if top:
            counts[top[0][0]] = counts.get(top[0][0], 0) + 1
    return counts
