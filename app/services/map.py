"""The library map: a 2-D UMAP layout of the catalog's embeddings, its colours, hits and selections.

UMAP's numba code compiles on the first fit of a process (tens of seconds on a small CPU), so
start_warm_up() runs a tiny fit in a background thread when the app starts. Layouts are cached
on disk per (model, library state): the same photos embedded by the same model give the same
map without refitting. Nearest neighbours come from FAISS (exact inner product on normalised
vectors), which is much faster than UMAP's own search at library sizes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from cliplab.app.services.search import ImageScope, SearchView, Term, file_term, search
from cliplab.engine.errors import CliplabError
from cliplab.engine.paths import cache_dir
from cliplab.indexes.catalog import Catalog, damaged_rows, from_blobs, photo_date
from cliplab.indexes.indexer import ModelBundle, library_bundle
from cliplab.indexes.library import embedded_photos

COLOUR_BY = ("folder", "date", "zero-shot top-1", "my classes")
KEEP_LAYOUTS = 20  # cached layouts kept (the newest); each library change writes a new one
MIN_UMAP_POINTS = 8  # fewer points: a PCA layout (UMAP's graph needs a few neighbours per point)
N_NEIGHBORS = 15


@dataclass
class LibraryPoints:
    """The embedded photos of one model, in file-id order."""
    file_ids: np.ndarray  # int64 [n]
    paths: list[str]
    folders: list[str]  # the photo's folder, relative to the parent of its indexed root
    dates: list[datetime]  # capture time (EXIF) or else the file's modification time
    vectors: np.ndarray  # float32 [n, d], L2-normalised
    state_key: str  # names (model, library state): the layout cache key

    def __len__(self) -> int:
        return len(self.file_ids)


def library_points(catalog: Catalog, bundle: ModelBundle) -> LibraryPoints:
    """Every photo of an online folder with an embedding by bundle's model."""
    rows, version = embedded_photos(catalog, bundle.register(catalog))
    vectors = from_blobs([r.vector for r in rows], bundle.model.embed_dim)
    sound = ~damaged_rows(vectors)  # a damaged stored vector is never placed (indexes.vectors re-embeds it)
    rows, vectors = [r for r, ok in zip(rows, sound) if ok], vectors[sound]
    ids = np.array([r.id for r in rows], dtype=np.int64)
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{bundle.fingerprint}:{version}:".encode())
    digest.update(ids.tobytes())
    return LibraryPoints(
        file_ids=ids, paths=[r.path for r in rows],
        folders=[_folder_label(r.path, r.root) for r in rows],
        dates=[photo_date(r.captured_at, r.mtime_ns)[0] for r in rows],
        vectors=vectors, state_key=digest.hexdigest())


def _folder_label(path: str, root: str) -> str:
    parent = os.path.dirname(path)
    return os.path.relpath(parent, os.path.dirname(root.rstrip(os.sep)) or os.sep)


# -- layout -------------------------------------------------------------------------------------

def _neighbours(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (self first) by cosine distance."""
    import faiss
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    sims, ids = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
    return ids.astype(np.int64), np.clip(1.0 - sims, 0.0, None).astype(np.float32)


def _pca_layout(vectors: np.ndarray) -> np.ndarray:
    if len(vectors) < 2:
        return np.zeros((len(vectors), 2), np.float32)
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1]))).astype(np.float32)


def compute_layout(vectors: np.ndarray, n_neighbors: int = N_NEIGHBORS, seed: int | None = None,
                   n_epochs: int = 200) -> np.ndarray:
    """2-D coordinates [n, 2] for L2-normalised vectors [n, d]. seed=None lets UMAP use every core
    (a fixed seed makes it single-threaded and reproducible)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) < MIN_UMAP_POINTS:
        return _pca_layout(vectors)
    k = min(n_neighbors, len(vectors) - 1)
    ids, dists = _neighbours(vectors, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs/random_state and precomputed-knn notices
        import umap
        reducer = umap.UMAP(n_neighbors=k, metric="cosine", precomputed_knn=(ids, dists, None), n_epochs=n_epochs,
                            init="pca", random_state=seed, n_jobs=1 if seed is not None else -1)
        return reducer.fit_transform(vectors).astype(np.float32)


def layout(points: LibraryPoints, progress: bool = False) -> np.ndarray:
    """The cached layout of these points, computed (and saved atomically) on first request."""
    path = cache_dir("umap") / f"{points.state_key}.npy"
    if path.is_file():
        xy = np.load(path)
        if xy.shape == (len(points), 2):
            return xy
    xy = compute_layout(points.vectors)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, xy)
    os.replace(tmp, path)
    old = sorted(path.parent.glob("*.npy"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP_LAYOUTS:]
    for stale in old:
        if stale != path:
            stale.unlink(missing_ok=True)
    return xy


# -- warm-up ------------------------------------------------------------------------------------

_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None
_warmed = threading.Event()


def _warm() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype(np.float32)
    compute_layout(x / np.linalg.norm(x, axis=1, keepdims=True), n_neighbors=5, n_epochs=10)
    _warmed.set()


def start_warm_up() -> threading.Thread:
    """Compile UMAP's numba code in a background thread, once per process."""
    global _warm_thread
    with _warm_lock:
        if _warm_thread is None:
            _warm_thread = threading.Thread(target=_warm, name="cliplab-umap-warm-up", daemon=True)
            _warm_thread.start()
        return _warm_thread


def warmed_up() -> bool:
    return _warmed.is_set()


# -- colours, hits, selections ------------------------------------------------------------------

def decimal_year(moment: datetime) -> float:
    start = datetime(moment.year, 1, 1)
    return moment.year + (moment - start).total_seconds() / (datetime(moment.year + 1, 1, 1) - start).total_seconds()


def date_ticks(dates: list[datetime], count: int = 6) -> list[tuple[float, str]]:
    """Colour-bar ticks for a date colouring: (decimal year, readable date), evenly over the range;
    months when the photos span more than a few weeks, days otherwise."""
    if not dates:
        return []
    low, high = min(dates), max(dates)
    if high == low:
        return [(decimal_year(low), low.strftime("%Y-%m-%d"))]
    step = (high - low) / (count - 1)
    style = "%b %Y" if (high - low).days > 60 else "%Y-%m-%d"
    ticks, seen = [], set()
    for k in range(count):
        moment = low + k * step
        label = moment.strftime(style)
        if label not in seen:
            seen.add(label)
            ticks.append((decimal_year(moment), label))
    return ticks


def zero_shot_top1(catalog: Catalog, points: LibraryPoints, bundle: ModelBundle, classes: list[str],
                   templates: list[str]) -> list[str]:
    """Each photo's most probable class of a zero-shot classifier, its prompts embedded as the library's
    photos were (the library's recorded mode, as a search query)."""
    from cliplab.engine.zeroshot import build_classifier
    if len(classes) < 2:
        raise CliplabError("Colouring by zero-shot top-1 needs at least two class names, one per line.")
    encoder = library_bundle(catalog, bundle).encoder  # the cache is keyed for models, not encoders: skip it
    classifier = build_classifier(encoder, bundle.tokenizer, classes, templates, cache=False)
    if not len(points):
        return []
    return [classifier.classnames[i] for i in classifier.probs(points.vectors).argmax(axis=1)]


def nearest_class(points: LibraryPoints, my_classes: dict[str, list[int]]) -> list[str]:
    """Each photo's nearest class made from a selection (cosine to the class's mean embedding)."""
    if not my_classes:
        raise CliplabError("There are no classes made from selections yet: select photos on the map with the "
                           "lasso or box tool, name the class and press 'Selection → class'.")
    names = list(my_classes)
    rows = {int(i): n for n, i in enumerate(points.file_ids)}
    centroids = []
    for name in names:
        members = [rows[i] for i in my_classes[name] if i in rows]
        if not members:
            raise CliplabError(f"None of the photos of class {name!r} is on this map any more; remove the class.")
        mean = points.vectors[members].mean(axis=0)
        centroids.append(mean / max(np.linalg.norm(mean), 1e-12))
    return [names[i] for i in (points.vectors @ np.stack(centroids).T).argmax(axis=1)]


def parse_selection(text: str | None, points: LibraryPoints) -> list[int]:
    """File ids of a selection sent by the page ("12,15,20"), kept only if they are on the map."""
    ids = [int(part) for part in (text or "").replace(" ", "").split(",") if part.isdigit()]
    on_map = set(points.file_ids.tolist())
    chosen = list(dict.fromkeys(i for i in ids if i in on_map))
    if not chosen:
        raise CliplabError("Nothing is selected: pick the lasso or box tool above the map and draw around "
                           "some photos first.")
    return chosen


def selection_terms(file_ids: list[int]) -> list[Term]:
    """The query 'photos like these': one file term per selected photo (structured, never a string)."""
    return [file_term(i) for i in file_ids]


def selection_search(catalog: Catalog, bundle: ModelBundle, file_ids: list[int], per_page: int = 24,
                     index_cache=None) -> SearchView:
    """Exactly the selected photos, ranked by their similarity to the selection as a whole."""
    return search(catalog, bundle, selection_terms(file_ids), per_page=per_page, within=file_ids,
                  index_cache=index_cache)


def add_class(my_classes: dict[str, list[int]], name: str, file_ids: list[int]) -> dict[str, list[int]]:
    """A new class (or more members for an existing one) from a selection; returns a new dict."""
    name = (name or "").strip()
    if not name:
        raise CliplabError("Type a name for the class made from the selection.")
    if not file_ids:
        raise CliplabError("Select some photos on the map first (the lasso or box tool above it), then make them "
                           "a class.")
    updated = {k: list(v) for k, v in my_classes.items()}
    updated[name] = list(dict.fromkeys(updated.get(name, []) + list(file_ids)))
    return updated


def export_classes(points: LibraryPoints, my_classes: dict[str, list[int]], out: str | Path) -> Path:
    """A `path,label` CSV of the classes made from selections (the format `cliplab eval` reads)."""
    import csv
    if not my_classes:
        raise CliplabError("There are no classes made from selections to export yet.")
    where = dict(zip(points.file_ids.tolist(), points.paths))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        for name, ids in my_classes.items():
            writer.writerows([where[i], name] for i in ids if i in where)
    return out


def search_hits(terms: list[Term], bundle: ModelBundle, catalog: Catalog, limit: int = 50,
                index_cache=None) -> list[int]:
    """File ids of a library search's first results (none for no terms); an image path typed in the map's
    search box must lie in a library folder, as in the Search tab."""
    if not terms:
        return []
    return [r.file_id for r in search(catalog, bundle, terms, per_page=limit, index_cache=index_cache,
                                      images=ImageScope()).results]


# -- the figure ---------------------------------------------------------------------------------

def map_figure(points: LibraryPoints, xy: np.ndarray, by: str, labels: list | None = None,
               hits: list[int] | None = None):
    """An interactive Plotly scatter: one trace per category (or a date colour scale), the search
    hits ringed on top; each point carries [file id, path] for hover thumbnails and selections."""
    import plotly.graph_objects as go

    fig = go.Figure()
    # WebGL past a few thousand dots: SVG scatter gets sluggish there
    Scatter = go.Scattergl if len(points) > 5000 else go.Scatter  # noqa: N806
    custom = np.array([[int(i), p] for i, p in zip(points.file_ids, points.paths)], dtype=object).reshape(-1, 2)
    hover = "%{customdata[1]}<extra>%{fullData.name}</extra>"
    if by == "date":
        years = np.array([decimal_year(d) for d in points.dates])
        ticks = date_ticks(points.dates)
        fig.add_trace(Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name="photos",
                              customdata=np.column_stack([custom, [d.strftime("%Y-%m-%d") for d in points.dates]]),
                              hovertemplate="%{customdata[1]}<br>%{customdata[2]}<extra></extra>",
                              marker=dict(size=7, color=years, colorscale="Viridis", showscale=True,
                                          colorbar=dict(title="date", tickvals=[t for t, _ in ticks],
                                                        ticktext=[label for _, label in ticks]))))
    else:
        values = np.array(labels if labels is not None else points.folders, dtype=object)
        for category in sorted(set(values.tolist()), key=str):
            mask = values == category
            fig.add_trace(Scatter(x=xy[mask, 0], y=xy[mask, 1], mode="markers", name=str(category),
                                     customdata=custom[mask], hovertemplate=hover, marker=dict(size=7)))
    if hits:
        mask = np.isin(points.file_ids, np.array(hits, dtype=np.int64))
        fig.add_trace(Scatter(x=xy[mask, 0], y=xy[mask, 1], mode="markers", name=f"search hits ({mask.sum()})",
                                 customdata=custom[mask], hovertemplate=hover,
                                 marker=dict(size=13, color="rgba(0,0,0,0)", line=dict(color="crimson", width=2.5))))
    # one title, on the left: the legend (or the date colour bar) has the right-hand side to itself
    fig.update_layout(dragmode="lasso", height=620, showlegend=by != "date" or bool(hits),
                      margin=dict(l=10, r=10, t=50, b=10), legend_title_text=by,
                      xaxis=dict(visible=False), yaxis=dict(visible=False), hovermode="closest",
                      title=dict(text=f"{len(points)} photos", x=0.01, xanchor="left"))
    return fig
