"""Run an audit end to end: dataset -> image features -> probabilities -> measurements, with provenance.

The result is an AuditResult (engine.audit.results). Everything needed to re-run it is in its
options (the label sets travel in full, not by name), and its provenance says which weights, which
file, which rows, which methods and when.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from cliplab.engine.audit import measures, search_bias, stats
from cliplab.engine.audit.datasets import AuditDataset, load_dataset
from cliplab.engine.audit.labelsets import (
    DEFAULT_PROMPT,
    LabelSet,
    load_labelset,
    parse_labelset,
    with_added,
    with_template,
)
from cliplab.engine.audit.reference import reference
from cliplab.engine.audit.results import (
    PAPER_THRESHOLDS,
    SWEEP,
    AccuracyCell,
    AuditOptions,
    AuditResult,
    Grouping,
    Measurements,
    Partition,
    ShareCell,
    Tables,
    audit_groupings,
    cliplab_version,
)
from cliplab.engine.errors import CliplabError
from cliplab.engine.features import encode_images, encode_texts, model_fingerprint

__all__ = ["PAPER_THRESHOLDS", "SWEEP", "AuditOptions", "AuditResult", "compare_results", "measure",
           "resolve_labelsets", "run_audit"]


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


# ---------------------------------------------------------------------------------------------
# model work


def image_features(model, preprocess: Callable, dataset: AuditDataset, progress: bool = True,
                   batch_size: int = 64, on_image: Callable[[int], None] | None = None) -> np.ndarray:
    """Features of every image; unreadable images are collected and reported together.
    on_image(i): called as the i-th image (from 1) is read, for a front end's progress."""
    from cliplab.engine.images import ImageLoadError, load_image

    failures: list[str] = []
    size = getattr(model, "image_resolution", None)

    def images():
        for number, path in enumerate(dataset.paths, 1):
            if on_image is not None:
                on_image(number)
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


def shares_table(probs: np.ndarray, labelset: LabelSet, groups: dict[Grouping, Partition], tag: str) -> list[ShareCell]:
    _, categories = _top1(probs, labelset)
    rows = []
    for partition in groups.values():
        for row in measures.category_shares(categories, partition, list(labelset.categories), _combined(labelset)):
            row.label_set = tag
            rows.append(row)
    return rows


def attribute_accuracy(features: np.ndarray, zero_shot: dict[str, np.ndarray], dataset: AuditDataset,
                       groups: dict[Grouping, Partition], probe_folds: int,
                       seed: int) -> tuple[list[AccuracyCell], list[str]]:
    """Accuracy of classifying each group column, zero-shot and by a cross-fitted linear probe."""
    notes = []
    predictions = {("zero-shot", a): p for a, p in zero_shot.items()}
    if probe_folds:
        for attribute, truth in dataset.groups.items():
            if len(set(truth)) < 2 or len(truth) < 10 * probe_folds:
                notes.append(f"linear probe for {attribute!r} skipped: needs two classes and at least "
                             f"{10 * probe_folds} images.")
                continue
            predictions[("linear probe", attribute)] = measures.crossfit_probe(features, truth, probe_folds, seed)
    rows = measures.accuracy_tables(predictions, dataset.groups, groups)
    return rows, notes


def _groupings(dataset: AuditDataset) -> dict[Grouping, Partition]:
    return audit_groupings(dataset.groups, dataset.values, dataset.kind)


def _singles(groups: dict[Grouping, Partition]) -> dict[Grouping, Partition]:
    """The whole sample and each group column, without intersections or derived groupings."""
    return {g: p for g, p in groups.items() if g.is_all or (len(g.columns) == 1 and not g.derived)}


def _label_set_tables(tables: Tables, probs_a: np.ndarray, labelset_a: LabelSet, probs_b: np.ndarray,
                      labelset_b: LabelSet, singles: dict[Grouping, Partition], options: AuditOptions) -> None:
    """Label set A against B on the same images: the focus share per group, and where images moved."""
    _, cat_a = _top1(probs_a, labelset_a)
    class_b, cat_b = _top1(probs_b, labelset_b)
    new = set(labelset_b.classnames) - set(labelset_a.classnames)
    to_b = np.where(np.isin(class_b, list(new)), class_b, cat_b)
    focus_a, focus_b = np.isin(cat_a, labelset_a.focus), np.isin(cat_b, labelset_a.focus)
    tables.label_set_diff, tables.transitions = [], []
    for partition in singles.values():
        tables.label_set_diff += measures.label_set_diff(focus_a, focus_b, partition, options.n_boot, options.seed)
        tables.transitions += measures.transitions(cat_a, to_b, partition)


def _threshold_tables(tables: Tables, probs_a: np.ndarray, labelset_a: LabelSet,
                      singles: dict[Grouping, Partition], options: AuditOptions) -> dict[str, list[str]]:
    """Figure 18's association tests at each threshold, and the sweep; returns the labels left out."""
    filtered = {}
    for grouping, partition in singles.items():
        if grouping.is_all or len(partition.groups) < 2:
            continue
        for threshold in options.thresholds:
            rows, left_out = measures.threshold_association(
                probs_a, labelset_a.classnames, labelset_a.class_categories, partition, threshold, options.min_count)
            tables.threshold_association += rows
            filtered[f"{grouping.name} @ {threshold:g}"] = left_out
    for partition in singles.values():
        tables.threshold_sweep += measures.threshold_sweep(probs_a, labelset_a.class_categories, partition,
                                                           options.sweep, list(labelset_a.categories))
    return filtered


def _accuracy_tables(tables: Tables, features: np.ndarray, zero_shot: dict[str, np.ndarray], dataset: AuditDataset,
                     groups: dict[Grouping, Partition], options: AuditOptions) -> list[str]:
    """Tables 3-5: classifying the group columns, and the gaps between groups; returns notes."""
    tables.attribute_accuracy, notes = attribute_accuracy(features, zero_shot, dataset, groups, options.probe_folds,
                                                          options.seed)
    tables.accuracy_disparities = []
    for method in ("zero-shot", "linear probe"):
        for attribute in dataset.groups:
            rows = [r for r in tables.attribute_accuracy if r.method == method and r.attribute == attribute]
            for row in measures.disparities(rows, value="accuracy", n_boot=options.n_boot, seed=options.seed):
                row.method, row.attribute = method, attribute
                tables.accuracy_disparities.append(row)
    return notes


def _label_tables(tables: Tables, predicted: np.ndarray, dataset: AuditDataset, groups: dict[Grouping, Partition],
                  options: AuditOptions) -> None:
    """Worst-group accuracy (DataComp's fairness tables): the label column classified zero-shot, per
    group of every grouping, and per grouping the worst group and its gap to the best."""
    column = dataset.label_column
    tables.label_disparities = []
    tables.label_accuracy = measures.accuracy_tables({("zero-shot", column): predicted}, {column: dataset.labels},
                                                     groups)
    for row in measures.disparities(tables.label_accuracy, value="accuracy", n_boot=options.n_boot, seed=options.seed):
        row.method, row.attribute = "zero-shot", column
        tables.label_disparities.append(row)


def label_classes(dataset: AuditDataset) -> list[str]:
    """The classes of the label column, in sorted order (the zero-shot classifier's classes)."""
    return sorted(set(dataset.labels.tolist()))


def _search_tables(tables: Tables, features: np.ndarray, search: tuple[np.ndarray, list[str]],
                   singles: dict[Grouping, Partition], options: AuditOptions) -> list[str]:
    """Search bias of each neutral query over each group column; returns notes."""
    query_features, queries = search
    columns = {g: p for g, p in singles.items() if not g.is_all}
    k = min(options.search_k, features.shape[0])
    tables.search_bias = search_bias.search_bias(features, query_features, queries, columns, k, options.n_boot,
                                                 options.seed)
    notes = [f"search bias: K lowered from {options.search_k} to the {k} images audited."] if k < options.search_k else []
    return notes


def measure(probs_a: np.ndarray, labelset_a: LabelSet, dataset: AuditDataset, options: AuditOptions,
            probs_b: np.ndarray | None = None, labelset_b: LabelSet | None = None,
            variant_probs: dict[str, np.ndarray] | None = None, features: np.ndarray | None = None,
            zero_shot: dict[str, np.ndarray] | None = None, label_predictions: np.ndarray | None = None,
            search: tuple[np.ndarray, list[str]] | None = None) -> Measurements:
    """Every table of an audit from the probabilities (and, for the probe and search bias, the
    features; label_predictions: the label column classified; search: the queries' embeddings and texts)."""
    groups = _groupings(dataset)
    singles = _singles(groups)
    tables = Tables(category_shares=shares_table(probs_a, labelset_a, groups, "A"))
    notes: list[str] = []
    if probs_b is not None:
        tables.category_shares += shares_table(probs_b, labelset_b, groups, "B")
    harmful = set(labelset_a.focus) | set(_combined(labelset_a))
    for tag in ("A", "B"):
        for row in measures.disparities([r for r in tables.category_shares if r.label_set == tag], "share",
                                        options.n_boot, options.seed, lambda category: category in harmful):
            row.label_set = tag
            tables.disparities.append(row)
    warnings = measures.small_cell_warnings([r for r in tables.category_shares if r.label_set == "A"],
                                            "category shares")
    if probs_b is not None and labelset_a.focus:
        _label_set_tables(tables, probs_a, labelset_a, probs_b, labelset_b, singles, options)
    elif probs_b is not None:
        notes.append("label-set diff skipped: label set A names no focus categories.")
    filtered = _threshold_tables(tables, probs_a, labelset_a, singles, options)
    if variant_probs:
        tables.prompt_sensitivity = measures.prompt_spread(
            {variant: shares_table(p, labelset_a, singles, "A") for variant, p in variant_probs.items()})
    if features is not None:
        notes += _accuracy_tables(tables, features, zero_shot or {}, dataset, groups, options)
    if label_predictions is not None:
        _label_tables(tables, label_predictions, dataset, groups, options)
    if search is not None and features is not None:
        notes += _search_tables(tables, features, search, singles, options)
    return Measurements(tables=tables, groupings={g: p.groups for g, p in groups.items()}, notes=notes,
                        warnings=warnings, filtered_labels=filtered)


# ---------------------------------------------------------------------------------------------
# the whole run


PRESETS = ("paper", "datacomp")


def _check_search(options: AuditOptions) -> None:
    """The preset and the search-bias options, before any file is read."""
    if options.preset not in PRESETS:
        raise CliplabError(f"Unknown preset {options.preset!r}; choose {' or '.join(PRESETS)}.")
    if options.search_k < 1:
        raise CliplabError(f"Search bias looks at the top K images; K must be at least 1, not {options.search_k}.")
    if any(not q.strip() for q in options.search_queries):
        raise CliplabError("A search query is empty; give each neutral query as a sentence.")


def _check_preset(options: AuditOptions, dataset: AuditDataset) -> None:
    if options.preset == "datacomp" and dataset.labels is None:
        raise CliplabError("The DataComp preset measures worst-group accuracy, so the dataset needs a label column "
                           "(each image's class): give it, or use a Dollar Street or GeoDE folder.")


def _check_thresholds(options: AuditOptions) -> None:
    for threshold in [*options.thresholds, *options.sweep]:
        if not 0 < threshold < 1:
            raise CliplabError(f"Thresholds are probabilities between 0 and 1 (0.04 for 4%), not {threshold}.")


def _zero_shot(model, tokenizer, features: np.ndarray, labelset: LabelSet,
               dataset: AuditDataset) -> tuple[dict[str, np.ndarray], list[str]]:
    """Each group column classified zero-shot with the label set's attribute prompts, where it has them."""
    zero_shot, notes = {}, []
    for column in dataset.groups:
        prompts = labelset.attributes.get(column, {})
        missing = [v for v in dataset.values[column] if v not in prompts]
        if missing:
            notes.append(f"zero-shot {column!r} skipped: the label set has no attribute prompts for "
                         f"{', '.join(missing[:5])}.")
            continue
        values = list(prompts)
        probs = prompt_probs(model, tokenizer, features, [prompts[v] for v in values])
        zero_shot[column] = np.asarray(values, dtype=object)[probs.argmax(axis=1)]
    return zero_shot, notes


def _provenance(model, options: AuditOptions, dataset: AuditDataset, labelset_a: LabelSet,
                labelset_b: LabelSet | None, templates: list[str], started: datetime) -> dict:
    return {
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
    }


# The share of an audit's time each stage takes (embedding the images dominates); a front end shows
# on_progress(stage, fraction) as a bar with an estimate, as the CLI shows its tqdm bar.
STAGES = {"reading the dataset": 0.0, "embedding the images": 0.02, "scoring the label sets": 0.70,
          "zero-shot attribute accuracy": 0.78, "measuring shares, gaps and their intervals": 0.85}


def run_audit(options: AuditOptions, loaded: tuple | None = None, progress: bool = True,
              on_progress: Callable[[str, float], None] | None = None) -> AuditResult:
    """Validate inputs, load the model (or use loaded = (model, preprocess, tokenizer)), measure.
    on_progress(stage, fraction done): called at each stage (STAGES) and as images are embedded."""
    def stage(name: str, within: float = 0.0) -> None:
        if on_progress is not None:
            start = STAGES[name]
            following = min([v for v in STAGES.values() if v > start], default=1.0)
            on_progress(name, start + within * (following - start))

    stage("reading the dataset")
    labelset_a, labelset_b = resolve_labelsets(options)
    templates = resolve_templates(options.templates)
    variants = {t: with_template(labelset_a, t) for t in templates}
    _check_thresholds(options)
    _check_search(options)
    dataset = load_dataset(options.dataset, options.split, options.sample, options.seed, options.group_columns,
                           options.label_column, **({"service_test_only": options.service_test_only, "padding": options.padding}
                              if options.service_test_only or options.padding else {}))
    _check_preset(options, dataset)
    if loaded is None:  # the one loader, in the exact mode a reproducible result runs in
        from cliplab.engine.handle import ModelBundle

        bundle = ModelBundle.load(options.model)
        loaded = (bundle.inference_model, bundle.preprocess, bundle.tokenizer)
    model, preprocess, tokenizer = loaded
    started = datetime.now(UTC)
    total = max(1, len(dataset))
    stage("embedding the images")
    features = image_features(model, preprocess, dataset, progress,
                              on_image=lambda i: stage("embedding the images", i / total) if i % 8 == 0 else None)

    def probs_of(labelset: LabelSet) -> np.ndarray:
        return prompt_probs(model, tokenizer, features, [c.prompts for c in labelset.classes])

    stage("scoring the label sets")
    probs_a = probs_of(labelset_a)
    probs_b = probs_of(labelset_b) if labelset_b else None
    variant_probs = {t: probs_of(ls) for t, ls in variants.items()}
    stage("zero-shot attribute accuracy")
    zero_shot, zs_notes = _zero_shot(model, tokenizer, features, labelset_a, dataset)
    label_predictions = None
    if dataset.labels is not None:
        classes = label_classes(dataset)
        probs = prompt_probs(model, tokenizer, features, [(DEFAULT_PROMPT.format(c),) for c in classes])
        label_predictions = np.asarray(classes, dtype=object)[probs.argmax(axis=1)]
    queries = list(options.search_queries or labelset_a.queries)
    search = (encode_texts(model, tokenizer, queries), queries) if queries else None  # the one model, as the images
    stage("measuring shares, gaps and their intervals")
    measured = measure(probs_a, labelset_a, dataset, options, probs_b, labelset_b, variant_probs or None,
                       features, zero_shot, label_predictions, search)
    per_image = {"row": dataset.rows.tolist(), "groups": {k: v.tolist() for k, v in dataset.groups.items()},
                 "top1_a": _top1(probs_a, labelset_a)[0].tolist()}
    if label_predictions is not None:
        per_image["label"], per_image["predicted_label"] = dataset.labels.tolist(), label_predictions.tolist()
    if probs_b is not None:
        per_image["top1_b"] = _top1(probs_b, labelset_b)[0].tolist()
    return AuditResult(
        tables=measured.tables, groupings=measured.groupings, notes=zs_notes + measured.notes,
        warnings=measured.warnings, filtered_labels=measured.filtered_labels,
        options=AuditOptions(**options.to_dict() | {"labels": labelset_a.to_dict(), "add": list(options.add),
                                                   "templates": templates, "search_queries": queries}),
        labelsets={"A": labelset_a.to_dict(), "B": labelset_b.to_dict() if labelset_b else None},
        provenance=_provenance(model, options, dataset, labelset_a, labelset_b, templates, started),
        per_image=per_image, headline=headline(measured.tables, labelset_a), reference=reference())


def headline(tables: Tables, labelset: LabelSet) -> list[str]:
    """A few sentences for the terminal: overall shares of the focus categories and the widest gaps."""
    lines = []
    for row in tables.category_shares:
        if row.label_set == "A" and row.grouping.is_all and row.category != "person":
            lines.append(f"{row.category}: {row.share:.1%} of {row.n} images "
                         f"(95% CI {row.low:.1%}-{row.high:.1%})")
    focus = set(labelset.focus) | set(_combined(labelset))
    gaps = [r for r in tables.disparities if r.label_set == "A" and r.category in focus
            and not r.grouping.is_intersection and r.difference > 0]
    lines += [r.direction + (f"; gap {r.gap:.1%}" + _gap_interval(r) if r.bootstrap else "") for r in gaps]
    for row in tables.label_disparities or []:
        if not row.grouping.is_intersection:
            lines.append(f"worst-group {row.attribute} accuracy by {row.grouping.name}: {row.worst} "
                         f"{row.worst_value:.1%} (95% CI {row.worst_low:.1%}-{row.worst_high:.1%}, n={row.worst_n}), "
                         f"{row.gap:.1%} below {row.best}" + _gap_interval(row))
    for row in sorted(tables.search_bias or [], key=lambda r: -r.max_skew)[:3]:
        lines.append(f"search bias of {row.query!r} by {row.grouping.name}: MaxSkew@{row.k} {row.max_skew:.2f} "
                     f"({row.max_skew_group}), NDKL {row.ndkl:.3f} (95% CI {row.ndkl_low:.3f}-{row.ndkl_high:.3f})"
                     + (f"; absent from the top {row.k}: {', '.join(row.absent)}" if row.absent else ""))
    for row in tables.label_set_diff or []:
        if row.grouping.is_all:
            lines.append(f"label set B moved the focus share from {row.share_a:.1%} to {row.share_b:.1%} "
                         f"(change {row.change:+.1%}, 95% CI {row.change_low:+.1%} to "
                         f"{row.change_high:+.1%}, McNemar p={row.p:.2g})")
    return lines


def _gap_interval(row) -> str:
    if row.interval_note:
        return f" (gap interval {row.interval_note})"
    if row.difference_low is None or math.isnan(row.difference_low):
        return ""
    return f" (95% CI {row.difference_low:.1%} to {row.difference_high:.1%})"


def _same(x, y, tolerance: float) -> bool:
    return (x == y) or (isinstance(x, float) and isinstance(y, float) and abs(x - y) <= tolerance)


def compare_results(saved: AuditResult, fresh: AuditResult, tolerance: float = 1e-9) -> list[str]:
    """Differences between two results' tables as saved (JSON: NaN is null), numbers within tolerance equal.
    Every figure the saved session holds is compared; figures a later build adds (a table or a column
    the saved session's build did not measure) are new, not differences."""
    old, new = saved.tables.to_dict(), fresh.tables.to_dict()
    differences = []
    for name in sorted(old):
        a, b = old[name], new.get(name, [])
        if len(a) != len(b):
            differences.append(f"{name}: {len(a)} rows then {len(b)} rows")
            continue
        for i, (ra, rb) in enumerate(zip(a, b)):
            differences += [f"{name} row {i} {key}: {ra.get(key)!r} then {rb.get(key)!r}"
                            for key in ra if not _same(ra.get(key), rb.get(key), tolerance)]
    return differences
