"""Run an audit end to end: dataset -> image features -> probabilities -> measurements, with provenance.

The result is one JSON-ready dict (NaN written as null). Everything needed to re-run it is in
result["options"] (the label sets travel in full, not by name), and result["provenance"] says
which weights, which file, which rows, which methods and when.
"""

from __future__ import annotations

import importlib.metadata
import math
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np

from cliplab.engine.audit import measures, stats
from cliplab.engine.audit.datasets import AuditDataset, load_dataset
from cliplab.engine.audit.labelsets import LabelSet, load_labelset, parse_labelset, with_added, with_template
from cliplab.engine.audit.reference import reference
from cliplab.engine.errors import CliplabError
from cliplab.engine.features import encode_images, model_fingerprint

PAPER_THRESHOLDS = (0.005, 0.04)  # 0.5% and 4%, as the paper's threshold experiment
SWEEP = (0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
RACE_BINARY = "race (White / Non-White)"  # the paper's tables 3-4 grouping, derived for FairFace


@dataclass
class AuditOptions:
    """Everything a run depends on besides the files themselves; saved with the session."""

    dataset: str
    labels: str | dict = "paper"  # a shipped name, a file, or a full label-set mapping
    add: list[str] = field(default_factory=list)  # classes for label set B (e.g. ['child'])
    split: str = "val"
    sample: int | None = None
    seed: int = 0
    model: str = "demo"
    group_columns: list[str] | None = None
    templates: list[str] = field(default_factory=list)  # prompt-sensitivity variants ('{}' templates)
    thresholds: list[float] = field(default_factory=lambda: list(PAPER_THRESHOLDS))
    sweep: list[float] = field(default_factory=lambda: list(SWEEP))
    min_count: int = 5  # threshold association: labels given to fewer images are not tested
    probe_folds: int = 3  # 0 skips the linear probe
    n_boot: int = 1000
    service_test_only: bool = False
    padding: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def cliplab_version() -> str:
    try:
        return importlib.metadata.version("cliplab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def resolve_labelsets(options: AuditOptions) -> tuple[LabelSet, LabelSet | None]:
    labels = options.labels
    base = parse_labelset(labels, "label set") if isinstance(labels, dict) else load_labelset(labels)
    return base, (with_added(base, options.add) if options.add else None)


def resolve_templates(entries: list[str]) -> list[str]:
    """Each entry is a template with '{}', a preset name or a file (every line one variant)."""
    from cliplab.engine.zeroshot import load_templates

    out: list[str] = []
    for entry in entries:
        out += [entry] if "{}" in entry else load_templates(entry)
    return list(dict.fromkeys(out))


def clean(value):
    """JSON-ready: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# model work


def image_features(model, preprocess: Callable, dataset: AuditDataset, progress: bool = True,
                   batch_size: int = 64) -> np.ndarray:
    """Features of every image; unreadable images are collected and reported together."""
    from cliplab.engine.images import ImageLoadError, load_image

    failures: list[str] = []
    size = getattr(model, "image_resolution", None)

    def images():
        for path in dataset.paths:
            try:
                yield load_image(path, min_size=size)
            except ImageLoadError as error:
                failures.append(f"{path} ({error.reason})")
                yield load_image_placeholder()

    features = encode_images(model, preprocess, images(), batch_size=batch_size, progress=progress,
                             total=len(dataset))
    if failures:
        shown = "; ".join(failures[:10]) + (f" and {len(failures) - 10} more" if len(failures) > 10 else "")
        raise CliplabError(f"{len(failures)} image(s) of the dataset could not be read: {shown}. Fix or remove "
                           f"those rows; an audit never drops images silently.")
    return features


def load_image_placeholder():
    from PIL import Image

    return Image.new("RGB", (8, 8))


def prompt_probs(model, tokenizer, features: np.ndarray, prompts: list[tuple[str, ...]]) -> np.ndarray:
    """[n, C] softmax over classes, each class the normalised mean of its prompts' embeddings."""
    from cliplab.engine.zeroshot import build_classifier, softmax

    unique = list(dict.fromkeys(p for class_prompts in prompts for p in class_prompts))
    classifier = build_classifier(model, tokenizer, unique, ["{}"])  # one row per prompt, cached
    position = {p: i for i, p in enumerate(unique)}
    weights = np.stack([classifier.weights[[position[p] for p in ps]].mean(axis=0) for ps in prompts])
    weights /= np.linalg.norm(weights, axis=1, keepdims=True)
    return softmax(classifier.logit_scale * (features @ weights.T))


# ---------------------------------------------------------------------------------------------
# measurements from probabilities


def _config_record(model) -> dict | None:
    """The model's architecture as JSON (an engine.config.ModelConfig, or a plain mapping)."""
    config = getattr(model, "config", None)
    return config.to_dict() if hasattr(config, "to_dict") else config


def _top1(probs: np.ndarray, labelset: LabelSet) -> tuple[np.ndarray, np.ndarray]:
    index = probs.argmax(axis=1)
    return (np.asarray(labelset.classnames, dtype=object)[index],
            np.asarray(labelset.class_categories, dtype=object)[index])


def _combined(labelset: LabelSet) -> dict[str, list[str]]:
    return {" + ".join(labelset.focus): list(labelset.focus)} if len(labelset.focus) > 1 else {}


def shares_table(probs: np.ndarray, labelset: LabelSet, groups: dict, tag: str) -> list[dict]:
    _, categories = _top1(probs, labelset)
    rows = []
    for name, (labels, order) in groups.items():
        for row in measures.category_shares(categories, labels, order, list(labelset.categories),
                                            _combined(labelset), grouping=name):
            rows.append({"label_set": tag, **row})
    return rows


def attribute_accuracy(features: np.ndarray, zero_shot: dict[str, np.ndarray], dataset: AuditDataset,
                       groups: dict, probe_folds: int, seed: int) -> tuple[list[dict], list[str]]:
    """Accuracy of classifying each group column, zero-shot and by a cross-fitted linear probe."""
    rows, notes = [], []
    predictions = {("zero-shot", a): p for a, p in zero_shot.items()}
    if probe_folds:
        for attribute, truth in dataset.groups.items():
            if len(set(truth)) < 2 or len(truth) < 10 * probe_folds:
                notes.append(f"linear probe for {attribute!r} skipped: needs two classes and at least "
                             f"{10 * probe_folds} images.")
                continue
            predictions[("linear probe", attribute)] = measures.crossfit_probe(features, truth, probe_folds, seed)
    for (method, attribute), predicted in predictions.items():
        for name, (labels, order) in groups.items():
            for row in measures.accuracy_by_group(predicted, dataset.groups[attribute], labels, order, name):
                rows.append({"method": method, "attribute": attribute, **row})
    return rows, notes


def _groupings(dataset: AuditDataset) -> dict:
    groups = measures.groupings(dataset.groups, dataset.values)
    if dataset.kind == "fairface" and "race" in dataset.groups:
        binary = np.where(dataset.groups["race"] == "White", "White", "Non-White").astype(object)
        groups[RACE_BINARY] = (binary, [v for v in ("White", "Non-White") if v in set(binary)])
    return groups


def measure(probs_a: np.ndarray, labelset_a: LabelSet, dataset: AuditDataset, options: AuditOptions,
            probs_b: np.ndarray | None = None, labelset_b: LabelSet | None = None,
            variant_probs: dict[str, np.ndarray] | None = None, features: np.ndarray | None = None,
            zero_shot: dict[str, np.ndarray] | None = None) -> dict:
    """Every table of an audit from the probabilities (and, for the probe, the features)."""
    groups = _groupings(dataset)
    singles = {k: v for k, v in groups.items() if k == measures.ALL or k in dataset.groups}
    tables: dict[str, list[dict]] = {}
    notes: list[str] = []
    warnings: list[str] = []

    tables["category_shares"] = shares_table(probs_a, labelset_a, groups, "A")
    if probs_b is not None:
        tables["category_shares"] += shares_table(probs_b, labelset_b, groups, "B")
    tables["disparities"] = [{"label_set": tag, **row} for tag in ("A", "B")
                             for row in measures.disparities([r for r in tables["category_shares"]
                                                              if r["label_set"] == tag])]
    warnings += measures.small_cell_warnings([r for r in tables["category_shares"] if r["label_set"] == "A"],
                                             "category shares")

    if probs_b is not None:
        if labelset_a.focus:
            _, cat_a = _top1(probs_a, labelset_a)
            class_b, cat_b = _top1(probs_b, labelset_b)
            new = set(labelset_b.classnames) - set(labelset_a.classnames)
            to_b = np.where(np.isin(class_b, list(new)), class_b, cat_b)
            focus_a, focus_b = np.isin(cat_a, labelset_a.focus), np.isin(cat_b, labelset_a.focus)
            tables["label_set_diff"], tables["transitions"] = [], []
            for name, (labels, order) in singles.items():
                tables["label_set_diff"] += measures.label_set_diff(focus_a, focus_b, labels, order,
                                                                    options.n_boot, options.seed, name)
                tables["transitions"] += measures.transitions(cat_a, to_b, labels, order, name)
        else:
            notes.append("label-set diff skipped: label set A names no focus categories.")

    tables["threshold_association"], tables["threshold_sweep"] = [], []
    filtered = {}
    for name, (labels, order) in singles.items():
        if name == measures.ALL or len(order) < 2:
            continue
        for threshold in options.thresholds:
            rows, left_out = measures.threshold_association(
                probs_a, labelset_a.classnames, labelset_a.class_categories, labels, order, threshold,
                options.min_count, name)
            tables["threshold_association"] += rows
            filtered[f"{name} @ {threshold:g}"] = left_out
    for name, (labels, order) in singles.items():
        tables["threshold_sweep"] += measures.threshold_sweep(probs_a, labelset_a.class_categories, labels, order,
                                                              options.sweep, list(labelset_a.categories), name)

    if variant_probs:
        shares = {variant: shares_table(p, labelset_a, singles, "A") for variant, p in variant_probs.items()}
        tables["prompt_sensitivity"] = measures.prompt_spread(shares)

    if features is not None:
        tables["attribute_accuracy"], probe_notes = attribute_accuracy(
            features, zero_shot or {}, dataset, groups, options.probe_folds, options.seed)
        notes += probe_notes
        tables["accuracy_disparities"] = [
            {"method": m, "attribute": a, **row}
            for m in ("zero-shot", "linear probe") for a in dataset.groups
            for row in measures.disparities([r for r in tables["attribute_accuracy"]
                                             if r["method"] == m and r["attribute"] == a], value="accuracy")]
    return {"tables": tables, "notes": notes, "warnings": warnings, "filtered_labels": filtered}


# ---------------------------------------------------------------------------------------------
# the whole run


def run_audit(options: AuditOptions, loaded: tuple | None = None, progress: bool = True) -> dict:
    """Validate inputs, load the model (or use loaded = (model, preprocess, tokenizer)), measure."""
    labelset_a, labelset_b = resolve_labelsets(options)
    templates = resolve_templates(options.templates)
    variants = {t: with_template(labelset_a, t) for t in templates}
    for threshold in [*options.thresholds, *options.sweep]:
        if not 0 < threshold < 1:
            raise CliplabError(f"Thresholds are probabilities between 0 and 1 (0.04 for 4%), not {threshold}.")
    dataset = load_dataset(options.dataset, options.split, options.sample, options.seed, options.group_columns,
                           **({"service_test_only": options.service_test_only, "padding": options.padding}
                              if options.service_test_only or options.padding else {}))
    if loaded is None:
        from cliplab import engine

        loaded = engine.load(options.model)
    model, preprocess, tokenizer = loaded
    started = datetime.now(UTC)
    features = image_features(model, preprocess, dataset, progress)
    probs_a = prompt_probs(model, tokenizer, features, [c.prompts for c in labelset_a.classes])
    probs_b = (prompt_probs(model, tokenizer, features, [c.prompts for c in labelset_b.classes])
               if labelset_b else None)
    variant_probs = {t: prompt_probs(model, tokenizer, features, [c.prompts for c in ls.classes])
                     for t, ls in variants.items()}
    zero_shot, zs_notes = {}, []
    for column in dataset.groups:
        prompts = labelset_a.attributes.get(column, {})
        missing = [v for v in dataset.values[column] if v not in prompts]
        if missing:
            zs_notes.append(f"zero-shot {column!r} skipped: the label set has no attribute prompts for "
                            f"{', '.join(missing[:5])}.")
            continue
        values = list(prompts)
        probs = prompt_probs(model, tokenizer, features, [prompts[v] for v in values])
        zero_shot[column] = np.asarray(values, dtype=object)[probs.argmax(axis=1)]
    result = measure(probs_a, labelset_a, dataset, options, probs_b, labelset_b, variant_probs or None,
                     features, zero_shot)
    result["notes"] = zs_notes + result["notes"]
    top_a, _ = _top1(probs_a, labelset_a)
    per_image = {"row": dataset.rows.tolist(), "groups": {k: v.tolist() for k, v in dataset.groups.items()},
                 "top1_a": top_a.tolist()}
    if probs_b is not None:
        per_image["top1_b"] = _top1(probs_b, labelset_b)[0].tolist()
    result.update(
        options=options.to_dict() | {"labels": labelset_a.to_dict(), "add": list(options.add),
                                     "templates": templates},
        labelsets={"A": labelset_a.to_dict(), "B": labelset_b.to_dict() if labelset_b else None},
        provenance={
            "model": {"name": getattr(model, "name", options.model), "fingerprint": model_fingerprint(model),
                      "config": _config_record(model)},
            "dataset": dataset.provenance(),
            "label_sets": {"A": labelset_a.name, "B": labelset_b.name if labelset_b else None},
            "prompt_variants": templates,
            "thresholds": list(options.thresholds), "sweep": list(options.sweep),
            "min_count": options.min_count, "seed": options.seed, "bootstrap_resamples": options.n_boot,
            "probe": f"logistic regression, {options.probe_folds}-fold cross-fitted on the audited sample, "
                     f"C by the paper's search on a 20% split" if options.probe_folds else None,
            "logit_scale": 100.0,
            "methods": stats.METHODS,
            "cliplab_version": cliplab_version(), "python": platform.python_version(),
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        per_image=per_image,
        headline=headline(result["tables"], labelset_a),
        reference=reference(),
    )
    return clean(result)


def headline(tables: dict, labelset: LabelSet) -> list[str]:
    """A few sentences for the terminal: overall shares of the focus categories and the widest gaps."""
    lines = []
    for row in tables["category_shares"]:
        if row["label_set"] == "A" and row["grouping"] == measures.ALL and row["category"] != "person":
            lines.append(f"{row['category']}: {row['share']:.1%} of {row['n']} images "
                         f"(95% CI {row['low']:.1%}-{row['high']:.1%})")
    focus = set(labelset.focus) | set(_combined(labelset))
    gaps = [r for r in tables["disparities"] if r["label_set"] == "A" and r["category"] in focus
            and r["grouping"] != measures.ALL and " x " not in r["grouping"] and r["difference"] > 0]
    lines += [r["direction"] for r in gaps]
    for row in tables.get("label_set_diff", []):
        if row["grouping"] == measures.ALL:
            lines.append(f"label set B moved the focus share from {row['share_a']:.1%} to {row['share_b']:.1%} "
                         f"(change {row['change']:+.1%}, 95% CI {row['change_low']:+.1%} to "
                         f"{row['change_high']:+.1%}, McNemar p={row['p']:.2g})")
    return lines


def compare_results(saved: dict, fresh: dict, tolerance: float = 1e-9) -> list[str]:
    """Differences between two results' tables (numbers within tolerance count as equal)."""
    differences = []
    for name in sorted(set(saved["tables"]) | set(fresh["tables"])):
        a, b = saved["tables"].get(name, []), fresh["tables"].get(name, [])
        if len(a) != len(b):
            differences.append(f"{name}: {len(a)} rows then {len(b)} rows")
            continue
        for i, (ra, rb) in enumerate(zip(a, b)):
            for key in set(ra) | set(rb):
                x, y = ra.get(key), rb.get(key)
                same = (x == y) or (isinstance(x, float) and isinstance(y, float) and abs(x - y) <= tolerance)
                if not same:
                    differences.append(f"{name} row {i} {key}: {x!r} then {y!r}")
    return differences
