"""Searching the photo library: the one service behind `cliplab search`, the Search tab and the Map.

A query is a list of structured terms (indexes.search.Term: sign, weight, kind "text" | "image" |
"file", value), built by each front end: the CLI from its repeatable --text/--image/--not/
--not-image/--like options (any characters in a path work) and its optional typed query, the app
from the search box, the dropped image and a map selection. The typed grammar (`parse_terms`) is
only a convenience for what a person types; nothing passes between layers as a query string.

Queries (texts and images) are embedded as the library was: in the mode and under the preprocessing the
catalog recorded for the model's vectors (indexes.indexer.library_bundle), whatever mode the handle that
front end holds resolves to; a library made under other preprocessing is refused with a sentence until it
is indexed again.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from cliplab.app.services import labels
from cliplab.app.services.classifiers import load_classifier
from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import Catalog
from cliplab.indexes.indexer import ModelBundle, library_bundle
from cliplab.indexes.library import online_roots
from cliplab.indexes.scan import inside_library
from cliplab.indexes.search import (
    SORTS,
    Filters,
    Result,
    Term,
    TimeRange,
    file_of,
    file_statuses,
    files_by_id,
    parse_query,
    query_vector,
    reachable_ids,
    search_vector,
    with_companions,
)
from cliplab.indexes.vectors import VectorIndex, open_index

__all__ = ["Filters", "ImageScope", "Result", "SearchView", "Term", "TimeRange", "describe_terms", "embed_query", "file_term",
           "image_term", "make_filters", "parse_date", "parse_terms", "search", "text_term"]

PER_PAGE = 24
MIN_POOL = 200  # candidates fetched for a date sort without a cut-off
HISTOGRAM_SIZE = 5000  # scores kept for the cut-off histogram: enough for its shape on any library


# -- building terms (indexes.search.Term checks sign, weight, text length and id range) ------------

def text_term(text: str, weight: float = 1.0, sign: int = 1) -> Term:
    text = (text or "").strip()
    if not text:
        raise CliplabError("A text term is empty: type some words.")
    return Term(sign, float(weight), "text", text)


def image_term(path: str | Path, weight: float = 1.0, sign: int = 1) -> Term:
    """An image file as a query term; the path is taken whole (spaces, ' - ', '+' and quotes included)."""
    text = os.path.expanduser(str(path or "").strip())
    if not text:
        raise CliplabError("An image term has no path: give the image's file.")
    return Term(sign, float(weight), "image", text)


def file_term(file_id: int | str, weight: float = 1.0, sign: int = 1) -> Term:
    """A catalogued photo (its stored embedding: "more like this"); ids are ASCII digits (int() would also
    take '١' or '１')."""
    text = str(file_id).strip().lstrip("@")
    if not (text.isascii() and text.isdigit()):
        raise CliplabError(f"{file_id!r} is not a photo id: ids are whole numbers, as in @123.")
    return Term(sign, float(weight), "file", str(int(text)))


def parse_terms(typed: str | None) -> list[Term]:
    """The terms of what a person typed in the query grammar (indexes.search); [] for nothing typed."""
    return parse_query(typed) if (typed or "").strip() else []


@dataclass(frozen=True)
class ImageScope:
    """Where a query image may come from when whoever searches is not the machine's owner at a shell (the
    app, maybe reached over the network): a file inside an online library folder (symlinks and `..`
    resolved), or one of `uploads`, the files the front end itself received (an image dropped in the app,
    which Gradio keeps in its own cache). The CLI passes no scope: its user names their own files."""
    uploads: tuple[str, ...] = ()

    def refuses(self, catalog: Catalog, path: str) -> bool:
        real = os.path.realpath(path)
        if real in {os.path.realpath(upload) for upload in self.uploads}:
            return False
        return not inside_library(real, [os.path.realpath(root) for root in online_roots(catalog)])


def check_terms(catalog: Catalog, terms: list[Term], images: ImageScope | None = None) -> list[Term]:
    """The terms, checked with a sentence for each problem: something to search with, images that
    exist and are files (and, with a scope, lie inside it), photo ids that are indexed photos of this library."""
    if not terms:
        raise CliplabError("Nothing to search with: type words, drop an image, or pick photos (more like these).")
    for term in terms:
        # before anything looks at the file: one sentence whether it exists, is an image or is neither
        if term.kind == "image" and images is not None and images.refuses(catalog, term.value):
            raise CliplabError(f"{term.value} is not inside one of your library folders: drop the image on the "
                               "image box instead, or add its folder in Search → Library and indexing first.")
        if term.kind == "image" and not os.path.isfile(term.value):
            raise CliplabError(f"The query image {term.value} does not exist (or is not a file).")
    ids = [file_of(int(t.value)) for t in terms if t.kind == "file"]  # a video frame's term names its video
    if ids:
        status = file_statuses(catalog, ids)
        for file_id in ids:
            if file_id not in status:
                raise CliplabError(f"There is no photo @{file_id} in the library; pick a photo from the results "
                                   "or the map to search for more like it.")
            if status[file_id] == "skipped":
                raise CliplabError(f"Photo @{file_id} could not be indexed (see the skipped files), so it cannot be "
                                   "searched with; pick another photo.")
    return terms


def describe_terms(catalog: Catalog, terms: list[Term]) -> str:
    """What a query is, in words: `photo @12 (beach.jpg) + image cat.png - 'stripes'` (a photo by its id
    and name, an image by its file name, words as typed), so a page can say what its results answer."""
    ids = [file_of(int(t.value)) for t in terms if t.kind == "file"]
    names = {i: Path(row.path).name for i, row in files_by_id(catalog, ids).items()} if ids else {}
    parts = []
    for term in terms:
        if term.kind == "text":
            what = repr(term.value)
        elif term.kind == "image":
            what = f"image {Path(term.value).name}"
        else:
            number = int(term.value)
            what = f"photo @{number}" + (f" ({names[file_of(number)]})" if file_of(number) in names else "")
        weight = f"{term.weight:g}×" if term.weight != 1 else ""
        sign = "- " if term.sign < 0 else ("+ " if parts else "")
        parts.append(f"{sign}{weight}{what}")
    return " ".join(parts)


# -- filters --------------------------------------------------------------------------------------

def parse_date(text: str | None, what: str = "date") -> datetime | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CliplabError(f"The {what} {text!r} is not a date: write it as YYYY-MM-DD (or YYYY-MM-DDTHH:MM).") \
            from None


def make_filters(folder: str | None = None, after: str | None = None, before: str | None = None,
                 types: list[str] | tuple[str, ...] | None = None, classifier: str | None = None,
                 label: str | None = None, min_probability: float | None = None,
                 catalog: Catalog | None = None) -> Filters:
    """Filters from what a person gave. A label filter (a saved classifier, optionally one of its classes and a
    least probability) needs the catalog: an unknown class is refused, and without a probability the
    classifier's own threshold applies (below it a photo is "none of these")."""
    folder = (folder or "").strip() or None
    if folder and not Path(folder).expanduser().is_dir():
        raise CliplabError(f"The folder filter {folder} does not exist (or is not a folder).")
    classifier, label = (classifier or "").strip() or None, (label or "").strip() or None
    least = 0.0 if min_probability is None else float(min_probability)
    if label and not classifier:
        raise CliplabError(f"To filter by the label {label!r}, also choose the classifier that gives it.")
    if classifier:
        if catalog is None:
            raise ValueError("a label filter needs the catalog")
        spec = load_classifier(catalog, classifier)
        if label is not None and label not in spec["classes"]:
            raise CliplabError(f"{label!r} is not a class of the classifier {classifier!r}.")
        if not 0.0 <= least <= 1.0:
            raise CliplabError(f"The least probability is between 0 and 1, not {min_probability}.")
        if min_probability is None and spec.get("threshold") is not None:
            least = float(spec["threshold"])
    return Filters(folder=str(Path(folder).expanduser().resolve()) if folder else None,
                   after=parse_date(after, "from date"), before=parse_date(before, "to date"),
                   types=tuple(types or ()), classifier=classifier, label=label, min_probability=least)


# -- the search -----------------------------------------------------------------------------------

@dataclass
class SearchView:
    """One page of results. total: the photos this query can return (indexed photos only, after the
    filters and the cut-off); page is clamped to pages; threshold: the cut-off as a cosine (never
    above 1), None without one; threshold_unreachable: the cut-off asked for more than any score can be."""
    results: list[Result]
    total: int
    page: int
    pages: int
    per_page: int
    threshold: float | None
    threshold_unreachable: bool
    histogram: np.ndarray | None  # the query's scores over (the best part of) the library
    terms: list[Term] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the page should say about the query (texts cut)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


class NothingIndexed(CliplabError):
    """No photo is indexed with the model yet (each front end says how to add a folder its own way)."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(f"No photos are indexed with the model {model} yet: add a folder of photos to the library "
                         "first.")


def open_vector_index(catalog: Catalog, bundle: ModelBundle, kind: str = "auto", index_cache=None) -> VectorIndex:
    """The model's vector index, up to date; NothingIndexed when no photo is indexed with this model."""
    model_id = bundle.register(catalog)
    index = index_cache.get(model_id, kind) if index_cache is not None else open_index(catalog, model_id, kind)
    if index.count == 0:
        raise NothingIndexed(bundle.name)
    return index


def search(catalog: Catalog, bundle: ModelBundle, terms: list[Term], page: int = 1, per_page: int = PER_PAGE,
           filters: Filters | None = None, cutoff: float | None = None, sort: str = "score",
           index_cache=None, kind: str = "auto", histogram: bool = False,
           within: list[int] | None = None, images: ImageScope | None = None) -> SearchView:
    """One page (counted from 1) of the photos nearest to the terms' combined embedding.

    Photos named by positive file terms are left out of their own results ("more like this"), unless
    `within` is given: then the results are exactly those photos (a map selection), ranked by the
    query, filters and cut-off not applied. index_cache: the app's AppState.vector_indexes (None opens
    the index). cutoff: z of the relevance cut-off (None = off). images: where image terms may come from
    (the app passes an ImageScope; None, the CLI's, takes any file)."""
    if sort not in SORTS:
        raise CliplabError(f"Unknown sort {sort!r}: use score, date or probability.")
    if cutoff is not None and (not math.isfinite(float(cutoff)) or float(cutoff) < 0):
        raise CliplabError(f"The cut-off is a number of standard deviations, 0 or more, not {cutoff!r}.")
    if int(per_page) < 1:
        raise CliplabError("Show at least one result per page.")
    check_terms(catalog, terms, images)
    if filters is not None and filters.classifier:
        labels.apply(catalog, bundle, filters.classifier)  # photos added or changed since get their labels first
    elif sort == "probability":
        raise CliplabError("Sorting by probability needs a label filter: choose a classifier applied to the library.")
    index = open_vector_index(catalog, bundle, kind, index_cache)
    vector = embed_query(catalog, bundle, terms)
    if within is not None:
        return _search_within(catalog, index, vector, within, page, per_page, sort, terms)
    exclude = tuple(dict.fromkeys(file_of(int(t.value)) for t in terms if t.kind == "file" and t.sign > 0))
    candidates = _candidates(catalog, index, filters)
    excluded = int(np.isin(np.array(exclude, np.int64), candidates).sum()) if len(candidates) else 0
    whole = cutoff is not None or sort == "probability"  # every candidate is scored, then cut or ordered
    pool = len(candidates) if whole else max(MIN_POOL, int(page) * int(per_page))

    def fetch(number: int):
        return search_vector(catalog, index, vector, per_page, (number - 1) * per_page, filters,
                             float(cutoff) if cutoff is not None else None, sort, exclude, pool=pool)

    number = max(1, int(page))
    result = fetch(number)
    if cutoff is None and sort == "score":
        total = len(candidates) - excluded  # every indexed candidate is a result, in score order
    else:
        total = result.total  # the whole pool was scored (cut-off), or the pool is what a date sort orders
    pages = max(1, -(-total // per_page))
    if number > pages:
        number = pages
        result = fetch(number)
    threshold = result.threshold
    unreachable = threshold is not None and threshold > 1.0
    scores = None
    if histogram:
        scores = index.search(vector[None], min(index.count, HISTOGRAM_SIZE))[0][0]
    return SearchView(result.results, total, number, pages, per_page,
                      min(threshold, 1.0) if threshold is not None else None, unreachable, scores, list(terms),
                      long_text_notes(bundle, terms))


def long_text_notes(bundle: ModelBundle, terms: list[Term]) -> list[str]:
    """A note for each text longer than the text tower reads (77 tokens for CLIP's, the transformer's limit
    for a multilingual tower): it is searched by its beginning, cut to fit, and the page says so."""
    notes = []
    for term in terms:
        if term.kind != "text":
            continue
        try:
            bundle.tokenizer([term.value], truncate=False)
        except CliplabError:
            shown = term.value if len(term.value) <= 40 else term.value[:39] + "…"
            notes.append(f'The text "{shown}" is longer than the {bundle.model.context_length} tokens the text '
                         "tower reads: only its beginning was searched.")
    return notes


def embed_query(catalog: Catalog, bundle: ModelBundle, terms: list[Term]) -> np.ndarray:
    """The terms' combined embedding, made as the library's vectors were: the handle in the library's
    recorded mode, with the library's preprocessing (refused when it is not the handle's)."""
    model_id = bundle.register(catalog)
    return query_vector(catalog, library_bundle(catalog, bundle, model_id), model_id, terms)


def _candidates(catalog: Catalog, index: VectorIndex, filters: Filters | None) -> np.ndarray:
    """The indexed photos a query may return: the index's ids, narrowed by the filters and without what is
    out of reach (indexes.search.reachable_ids), so files that could not be indexed, are still pending,
    or lie on an unplugged disk are never counted."""
    ids = index.ids()
    allowed = reachable_ids(catalog, index, filters)
    return np.unique(file_of(ids if allowed is None else np.intersect1d(ids, allowed)))  # a video's frames: one file


def _search_within(catalog: Catalog, index: VectorIndex, vector: np.ndarray, file_ids: list[int], page: int,
                   per_page: int, sort: str, terms: list[Term]) -> SearchView:
    """Exactly the given indexed photos, ranked by the query (score, or capture date then score)."""
    ids = np.intersect1d(index.ids(), np.array(list(dict.fromkeys(int(i) for i in file_ids)), np.int64))
    if not len(ids):
        raise CliplabError("None of the selected photos is indexed with this model; draw the map again and "
                           "select photos on it.")
    scores = np.stack([index.reconstruct(int(i)) for i in ids]) @ vector
    rows = files_by_id(catalog, ids)
    results = [Result(int(i), rows[int(i)].path, float(score), rows[int(i)].captured_at, rows[int(i)].width,
                      rows[int(i)].height) for i, score in zip(ids, scores) if int(i) in rows]
    results.sort(key=lambda r: (-r.score, r.file_id))
    if sort == "date":
        results.sort(key=lambda r: (r.captured_at is None, r.captured_at or datetime.min, -r.score))
    pages = max(1, -(-len(results) // per_page))
    number = min(max(1, int(page)), pages)
    start = (number - 1) * per_page
    return SearchView(with_companions(catalog, results[start:start + per_page]), len(results), number, pages,
                      per_page, None, False, None, list(terms))
