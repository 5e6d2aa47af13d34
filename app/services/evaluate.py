"""Evaluation on a user's labelled images: zero-shot, linear probe, k-shot probes, retrieval.

Datasets are image folders (class = sub-folder) or `path,label` CSVs (engine.evaldata); image
features are computed once per (model, dataset) and cached. Class names for prompts are the
folder/label names with underscores shown as spaces. save_run stores a finished evaluation in the
catalog that was opened (app.services.eval_store) for the dashboard.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cliplab.app.services import eval_store, serving
from cliplab.app.services.loading import provenance
from cliplab.engine.errors import CliplabError
from cliplab.engine.evaldata import LabelledImages, dataset_features, load_dataset, stratified_split
from cliplab.engine.features import encode_images
from cliplab.engine.heads import few_shot_heads
from cliplab.engine.images import ImageLoadError, load_image
from cliplab.engine.probe import effective_shots, few_shot, fit_linear_probe
from cliplab.engine.retrieval import recall_at_k
from cliplab.engine.zeroshot import DEFAULT_SCALE, build_classifier, embed_prompts
from cliplab.indexes.catalog import Catalog
from cliplab.indexes.indexer import ModelBundle
from cliplab.indexes.scan import fingerprint
from cliplab.trainer.data import CAPTION_COLUMNS, IMAGE_COLUMNS


def prompt_name(label: str) -> str:
    return label.replace("_", " ").strip()


def classification_metrics(probs: np.ndarray, targets: np.ndarray, classnames: Sequence[str]) -> dict:
    """top-1, top-5 (with >= 5 classes), mean per-class recall, per-class accuracy, confusion matrix
    (rows = true class, columns = predicted)."""
    pred = probs.argmax(axis=1)
    n_classes = len(classnames)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (targets, pred), 1)
    support = confusion.sum(axis=1)
    correct = np.diag(confusion)
    per_class = pd.DataFrame(dict(label=list(classnames), images=support, correct=correct,
                                  accuracy=np.where(support > 0, correct / np.maximum(support, 1), np.nan)))
    metrics = dict(images=int(len(targets)), classes=n_classes, top1=float(np.mean(pred == targets)),
                   mean_per_class_recall=float(per_class.accuracy[support > 0].mean()),
                   per_class=per_class, confusion=confusion)
    if n_classes >= 5:
        top5 = np.argsort(-probs, axis=1)[:, :5]
        metrics["top5"] = float(np.mean((top5 == targets[:, None]).any(axis=1)))
    return metrics


def save_confusion(confusion: np.ndarray, classnames: Sequence[str], out_dir: Path, title: str) -> list[Path]:
    """The confusion matrix as a PNG (matplotlib) and an interactive, self-contained HTML (plotly)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    out_dir.mkdir(parents=True, exist_ok=True)
    n = len(classnames)
    size = min(4 + 0.35 * n, 30)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(confusion, cmap="Blues")
    if n <= 60:
        ax.set_xticks(range(n), classnames, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classnames, fontsize=8)
    if n <= 20:
        for (i, j), v in np.ndenumerate(confusion):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > confusion.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    png = out_dir / "confusion.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    heat = go.Figure(go.Heatmap(z=confusion, x=list(classnames), y=list(classnames), colorscale="Blues",
                                hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>"))
    heat.update_layout(title=title, xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed")
    html = out_dir / "confusion.html"
    heat.write_html(html, include_plotlyjs=True)  # self-contained: opens offline
    return [png, html]


def _json_ready(metrics: dict) -> dict:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, pd.DataFrame):
            out[key] = value.to_dict(orient="records")
        elif isinstance(value, np.ndarray):
            out[key] = value.tolist()
        else:
            out[key] = value
    return out


def write_report(metrics: dict, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(_json_ready(metrics), indent=2, default=float) + "\n")
    return path


def zero_shot_probs(bundle: ModelBundle, dataset: LabelledImages, templates: list[str],
                    scale: float | str = DEFAULT_SCALE, progress: bool = True) -> np.ndarray:
    model, preprocess, tokenizer = bundle.inference_model, bundle.preprocess, bundle.tokenizer
    classifier = build_classifier(model, tokenizer, [prompt_name(c) for c in dataset.classnames], templates,
                                  progress=progress, scale=scale)
    return classifier.probs(dataset_features(model, preprocess, dataset, project=True, progress=progress))


def eval_zeroshot(bundle: ModelBundle, dataset_path: str | Path, templates: list[str], out_dir: str | Path | None = None,
                  scale: float | str = DEFAULT_SCALE, progress: bool = True) -> dict:
    """Zero-shot metrics on a labelled dataset; with out_dir, confusion PNG/HTML and a JSON report there."""
    dataset = load_dataset(dataset_path)
    metrics = classification_metrics(zero_shot_probs(bundle, dataset, templates, scale, progress),
                                     dataset.targets, dataset.classnames)
    metrics.update(dataset=dataset.name, templates=len(templates))
    if out_dir is not None:
        out_dir = Path(out_dir)
        metrics["files"] = [str(p) for p in save_confusion(metrics["confusion"], dataset.classnames, out_dir,
                                                           f"zero-shot confusion: {dataset.name}")]
        metrics["files"].append(str(write_report(metrics, out_dir, "zeroshot")))
    return metrics


def probe_features(bundle: ModelBundle, dataset: LabelledImages, joint: bool, progress: bool) -> np.ndarray:
    """The paper's probe input: features before the projection (ViT), or the joint embedding."""
    model, preprocess = bundle.inference_model, bundle.preprocess
    return dataset_features(model, preprocess, dataset, project=joint, progress=progress)


def eval_probe(bundle: ModelBundle, dataset_path: str | Path, test_path: str | Path | None = None, joint: bool = False,
               seed: int = 0, out_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Logistic-regression probe (appendix A.3). Without a test set the dataset is split 60/20/20
    (train/validation/test, stratified, seeded); with one, the dataset is split 80/20 train/validation."""
    dataset = load_dataset(dataset_path)
    features = probe_features(bundle, dataset, joint, progress)
    labels = np.array(dataset.labels)
    if test_path is None:
        train, val, test = stratified_split(labels, (0.6, 0.2, 0.2), seed)
        test_x, test_y = features[test], labels[test]
    else:
        train, val = stratified_split(labels, (0.8, 0.2), seed)
        test_set = load_dataset(test_path)
        test_x, test_y = probe_features(bundle, test_set, joint, progress), np.array(test_set.labels)
    if min(len(train), len(val), len(test_y)) == 0:
        raise CliplabError("The dataset is too small to split into train, validation and test parts; "
                           "add images (a few per class at least) or pass a separate test set.")
    probe = fit_linear_probe(features[train], labels[train], features[val], labels[val])
    classnames = list(probe.classes)
    index = {c: i for i, c in enumerate(classnames)}
    known = np.array([y in index for y in test_y])
    probs = probe.predict_proba(test_x[known])
    metrics = classification_metrics(probs, np.array([index[y] for y in test_y[known]]), classnames)
    metrics.update(dataset=dataset.name, C=probe.C, search=[dict(C=c, val_accuracy=s) for c, s in probe.visited],
                   features="joint embedding" if joint else "before the projection", train=len(train),
                   validation=len(val), test=int(known.sum()))
    if out_dir is not None:
        metrics["files"] = [str(write_report(metrics, Path(out_dir), "probe"))]
    return metrics


def eval_fewshot(bundle: ModelBundle, dataset_path: str | Path, templates: list[str], shots: Sequence[int] = (1, 2, 4, 8, 16),
                 seeds: Sequence[int] = (0, 1, 2), joint: bool = False, out_dir: str | Path | None = None,
                 scale: float | str = DEFAULT_SCALE, progress: bool = True) -> dict:
    """Zero-shot, k-shot linear probes and the improved head (engine.heads: k examples per class with the
    zero-shot weights as the prior) on one dataset (paper figure 6): half of each class is the labelled pool,
    the other half the test set for all three; the probe and the head learn from the same draws."""
    dataset = load_dataset(dataset_path)
    labels = np.array(dataset.labels)
    pool, test = stratified_split(labels, (0.5, 0.5), seed=0)
    features = probe_features(bundle, dataset, joint, progress)
    table = few_shot(features[pool], labels[pool], shots, seeds, features[test], labels[test])
    model, tokenizer = bundle.inference_model, bundle.tokenizer
    classifier = build_classifier(model, tokenizer, [prompt_name(c) for c in dataset.classnames], templates,
                                  progress=progress, scale=scale)
    joint_x = normalize_rows(dataset_features(model, bundle.preprocess, dataset, project=True, progress=progress))
    targets = dataset.targets
    zero_shot = float(np.mean(classifier.probs(joint_x[test]).argmax(axis=1) == targets[test]))
    improved = few_shot_heads(classifier.weights, classifier.logit_scale, joint_x[pool], targets[pool], shots, seeds,
                              joint_x[test], targets[test])
    metrics = dict(dataset=dataset.name, zero_shot_top1=zero_shot, fewshot=table, improved=improved, pool=len(pool),
                   test=len(test), effective_shots=effective_shots(zero_shot, table), chance=1 / len(dataset.classnames),
                   features="joint embedding" if joint else "before the projection")
    if out_dir is not None:
        out_dir = Path(out_dir)
        metrics["files"] = [str(plot_fewshot(table, zero_shot, out_dir, dataset.name, improved)),
                            str(write_report(metrics, out_dir, "fewshot"))]
    return metrics


def normalize_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def plot_fewshot(table: pd.DataFrame, zero_shot: float, out_dir: Path, name: str,
                 improved: pd.DataFrame | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(table.shots, 100 * table["mean"], yerr=100 * table["std"], marker="o", capsize=3,
                label="linear probe (mean ± std over seeds)")
    if improved is not None and len(improved):
        ax.errorbar(improved.shots, 100 * improved["mean"], yerr=100 * improved["std"], marker="s", capsize=3,
                    color="tab:green", label="improved head (zero-shot prior)")
    ax.axhline(100 * zero_shot, color="tab:red", linestyle="--", label="zero-shot")
    ax.set_xscale("log", base=2)
    ticks = sorted(set(table.shots) | (set(improved.shots) if improved is not None else set()))
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.set_xlabel("labelled examples per class")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"zero-shot vs few-shot: {name}")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "fewshot.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_captions(path: str | Path) -> tuple[list[Path], list[str], list[int]]:
    """A CSV with `image,caption` columns (or the training CSV's `filepath,caption`), one row per caption (an image may have several)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CliplabError(f"The captions file {path} does not exist.")
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    # A header row uses the trainer's column names (image/filepath/path..., caption/text...).
    if rows and len(rows[0]) >= 2 and rows[0][0].strip().lower() in IMAGE_COLUMNS \
            and rows[0][1].strip().lower() in CAPTION_COLUMNS:
        rows = rows[1:]
    if not rows or any(len(r) < 2 or not r[0].strip() or not r[1].strip() for r in rows):
        raise CliplabError(f"{path}: every row needs an image path and a caption (columns image,caption).")
    images: dict[Path, int] = {}
    owners, captions = [], []
    for image, caption in ((r[0].strip(), r[1].strip()) for r in rows):
        image_path = Path(image).expanduser()
        image_path = image_path if image_path.is_absolute() else path.parent / image_path
        owners.append(images.setdefault(image_path, len(images)))
        captions.append(caption)
    return list(images), captions, owners


def eval_retrieval(bundle: ModelBundle, captions_path: str | Path, prefix: str = "", ks: Sequence[int] = (1, 5, 10),
                   progress: bool = True) -> dict:
    """Image<->text recall@K with several captions per image (appendix E.1); prefix e.g. "a photo of "
    is prepended to every caption."""
    model, preprocess, tokenizer = bundle.inference_model, bundle.preprocess, bundle.tokenizer
    paths, captions, owners = read_captions(captions_path)

    def images():
        for p in paths:
            try:
                yield load_image(p, min_size=model.image_resolution)
            except ImageLoadError as error:
                raise CliplabError(f"Cannot use {p} for retrieval ({error.reason}); fix or remove it.") from None

    image_features = encode_images(model, preprocess, images(), progress=progress, total=len(paths))
    text_features, _ = embed_prompts(model, tokenizer, [prefix + c for c in captions], progress=progress)
    result = recall_at_k(image_features, text_features, owners, ks)
    result.update(prefix=prefix)
    return result


def dataset_hash(entries: Iterable[tuple[str, Path]]) -> str:
    """sha256 over sorted (label or caption, image content fingerprint) pairs. The fingerprint is the
    catalog's (blake2b of the whole file, which the evaluation reads anyway); the same images under
    the same labels give the same hash wherever they lie, folder or CSV."""
    digest = hashlib.sha256()
    for text, image in sorted((text, fingerprint(path)) for text, path in entries):
        digest.update(f"{text}\t{image}\n".encode())
    return digest.hexdigest()


def save_run(catalog: Catalog, kind: str, bundle: ModelBundle, dataset_path: str | Path, metrics: dict,
             options: dict | None = None) -> str:
    """Store a finished evaluation in catalog (kind: zeroshot | probe | fewshot | retrieval, metrics as the
    eval_* function returned them) with the model, the dataset's path and hash and the options it
    ran with, and the model's provenance (precision included); returns the run id."""
    path = Path(dataset_path).expanduser().resolve()
    if kind == "retrieval":
        images, captions, owners = read_captions(path)
        entries = [(caption, images[owner]) for caption, owner in zip(captions, owners)]
    else:
        dataset = load_dataset(path)
        entries = list(zip(dataset.labels, dataset.paths))
    made_with = provenance(bundle)
    stored = {**metrics, "options": options or {}, "provenance": made_with}
    return eval_store.save_eval_run(catalog, kind, bundle.name or "unnamed", made_with["fingerprint"], str(path),
                                    stored, dataset_hash=dataset_hash(entries), precision=made_with["precision"])


# -- the app's Evaluate tab: one action, run as a background job, results as tables --------------------

KINDS = {"zero-shot": "zeroshot", "linear probe": "probe", "few-shot": "fewshot", "retrieval": "retrieval"}
EVAL_STAGES = (("checking the dataset", 0.02), ("embedding the images and scoring", 0.1), ("saving the run", 0.95))


@dataclass
class EvalOutcome:
    """A finished evaluation as a page shows it: the headline numbers, the detail tables, the saved run."""
    kind: str  # zeroshot | probe | fewshot | retrieval
    run_id: str | None
    dataset: str
    headline: pd.DataFrame  # metric, value
    detail: pd.DataFrame  # per class (zero-shot, probe), per k (few-shot), per direction and K (retrieval)
    metrics: dict = field(default_factory=dict)
    confusion: np.ndarray | None = None
    classnames: list[str] = field(default_factory=list)


def library_dataset(catalog: Catalog, kind: str, typed: str) -> Path:
    """The dataset a person named in the app, checked as every path typed in the page is: it lies in one of
    their library folders (a labelled image folder, a `path,label` CSV or a captions CSV), and so does
    every image it lists."""
    typed = (typed or "").strip()
    if not typed:
        raise CliplabError("Name the dataset: an image folder with one sub-folder per class, or a CSV of path,label "
                           "rows (a captions CSV of image,caption rows for retrieval), inside a library folder.")
    real = Path(os.path.realpath(os.path.expanduser(typed)))
    path = serving.library_folder(catalog, typed) if real.is_dir() else serving.library_file(catalog, typed)
    if kind == "retrieval":
        if path.is_dir():
            raise CliplabError("Retrieval reads a captions CSV (image,caption rows), not a folder.")
        listed = read_captions(path)[0]
    else:
        listed = load_dataset(path).paths
    for image in listed:
        serving.library_file(catalog, image)  # an image listed by a CSV must lie in the library too
    return path


def _percent_rows(pairs: Iterable[tuple[str, float | int | None]]) -> pd.DataFrame:
    rows = [(name, f"{100 * value:.2f}%" if isinstance(value, float) else ("" if value is None else str(value)))
            for name, value in pairs]
    return pd.DataFrame(rows, columns=["metric", "value"])


def _classification_outcome(kind: str, metrics: dict, run_id: str | None, extra: list) -> EvalOutcome:
    pairs = [("images", metrics["images"]), ("classes", metrics["classes"]), ("top-1", metrics["top1"])]
    if "top5" in metrics:
        pairs.append(("top-5", metrics["top5"]))
    pairs += [("mean per-class recall", metrics["mean_per_class_recall"]), *extra]
    per_class = metrics["per_class"].copy()
    per_class["accuracy"] = per_class["accuracy"].map(lambda a: f"{100 * a:.2f}%" if a == a else "")
    return EvalOutcome(kind, run_id, str(metrics["dataset"]), _percent_rows(pairs), per_class, metrics,
                       metrics["confusion"], list(per_class["label"]))


def evaluate_for_app(catalog: Catalog, bundle: ModelBundle, kind: str, dataset: str | Path, templates: list[str],
                     shots: Sequence[int] = (1, 2, 4, 8, 16), seeds: int = 3, prefix: str = "", save: bool = True,
                     on_progress: Callable[[str, float], None] | None = None) -> EvalOutcome:
    """The Evaluate tab's action (kind: zeroshot | probe | fewshot | retrieval), the same functions as
    `cliplab eval`; the run is saved in the catalog as the CLI saves it (save=False: not)."""
    def stage(index: int) -> None:
        if on_progress is not None:
            on_progress(*EVAL_STAGES[index])

    if kind not in KINDS.values():
        raise CliplabError(f"Unknown evaluation {kind!r}: choose one of {', '.join(KINDS)}.")
    stage(0)
    path = library_dataset(catalog, kind, str(dataset))
    stage(1)
    if kind == "zeroshot":
        metrics = eval_zeroshot(bundle, path, templates, progress=False)
        options = {"templates": templates}
    elif kind == "probe":
        metrics = eval_probe(bundle, path, progress=False)
        options = {"joint": False, "seed": 0}
    elif kind == "fewshot":
        if not shots or min(shots) < 1 or seeds < 1:
            raise CliplabError("Give the shots as positive whole numbers (e.g. 1, 2, 4) and at least one seed.")
        metrics = eval_fewshot(bundle, path, templates, shots, tuple(range(seeds)), progress=False)
        options = {"templates": templates, "shots": list(shots), "seeds": seeds}
    else:
        metrics = eval_retrieval(bundle, path, prefix=prefix, progress=False)
        options = {"prefix": prefix}
    stage(2)
    run_id = save_run(catalog, kind, bundle, path, metrics, {"model": bundle.name, **options}) if save else None
    return _outcome(kind, metrics, run_id, path)


def _outcome(kind: str, metrics: dict, run_id: str | None, path: Path) -> EvalOutcome:
    if kind == "zeroshot":
        return _classification_outcome(kind, metrics, run_id, [("templates", metrics["templates"])])
    if kind == "probe":
        split = f"{metrics['train']} / {metrics['validation']} / {metrics['test']}"
        return _classification_outcome(kind, metrics, run_id, [("regularisation C", f"{metrics['C']:.3g}"),
                                                               ("train / validation / test images", split)])
    if kind == "fewshot":
        table = metrics["fewshot"].drop(columns=["accuracies"], errors="ignore").copy()
        improved = metrics.get("improved")
        if improved is not None and len(improved):
            heads = improved.set_index("shots")
            table = table.merge(heads[["mean", "std"]].rename(columns={"mean": "improved head mean",
                                                                        "std": "improved head std"}),
                                left_on="shots", right_index=True, how="outer").sort_values("shots")
        effective = metrics["effective_shots"]
        headline = _percent_rows([("zero-shot top-1", metrics["zero_shot_top1"]), ("chance", metrics["chance"]),
                                  ("pool / test images", f"{metrics['pool']} / {metrics['test']}"),
                                  ("zero-shot matches a", f"{effective:.1f}-shot probe" if effective is not None
                                   else "probe with more examples than measured")])
        return EvalOutcome(kind, run_id, str(metrics["dataset"]), headline, table, metrics)
    detail = pd.DataFrame([{"direction": direction.replace("_", " "), "K": k, "recall": value}
                           for direction in ("image_to_text", "text_to_image")
                           for k, value in metrics[direction].items()])
    headline = _percent_rows([("images", metrics["n_images"]), ("captions", metrics["n_texts"]),
                              *((f"{d.replace('_', ' ')} R@{k}", v) for d in ("image_to_text", "text_to_image")
                                for k, v in metrics[d].items())])
    return EvalOutcome(kind, run_id, path.name, headline, detail, metrics)
