"""The library's search parts: query grammar, query embedding, filters, pagination, relevance cut-off.

The one search users run is app.services.search.search (the app, the CLI and the Map all call it); it
uses these parts, and embeds queries with the handle in the library's recorded mode and preprocessing
(indexes.indexer.library_bundle).

Query grammar (what `cliplab search QUERY` and the app's search box accept):

    query := [sign] term (sign term)*        sign := "+" | "-"  (standing alone, between spaces)
    term  := [weight ":"] (words | "quoted words" | image path | @file_id)

- words up to the next standalone + or - form one text ("dog on a beach + sunset" is two terms;
  "t-shirt" stays one word); quotes keep a + or - inside a text, and a weight may sit inside
  the quotes: `"2:dog on a beach" + ./ref.jpg - people`;
- a term naming an existing image file (or starting with ./ ../ / ~) is an image query;
  `@123` is the stored embedding of catalog file 123 ("more like this");
- each term's embedding is L2-normalised, multiplied by its weight (default 1), added or
  subtracted, and the sum normalised again; scores are cosine similarities with that vector.

Limits: a weight is a finite number in (0, MAX_WEIGHT]; a text term has at most MAX_TEXT_CHARS
characters (CLIP reads 77 tokens); a page has 1..MAX_LIMIT results; a cut-off z is finite. Anything
else is refused with a sentence before any work is done.

Dates: a photo's date is its EXIF capture time, else its file time (indexes.catalog.photo_date);
`after`/`before` filter and `sort="date"` sort by it, and each result says which one it is.

Served paths: a result whose file now resolves outside the library's folders (a symlink changed
since the scan) is left out, by the same rule as the scan's (indexes.scan.inside_library).

Out of reach: the photos of a folder that is offline (marked so by a scan, or whose root is missing
now: an unplugged disk) and files marked unavailable are neither listed nor counted; they keep their
rows and embeddings and are found again once their folder is back (out_of_reach_ids).

Videos: each embedded frame of a video is a vector of its own (indexes.video), so the vector search,
filters (applied to the video's file: folder, date, type) and the cut-off reach frames as they reach
photos; a video is then one result, scored by its best frame, with its best time ranges (time_ranges:
frames within RANGE_MARGIN of its best, above the cut-off, adjacent ones merged). `@N` with a frame's
vector id is "more like this frame"; a video's own id is its first frame. Negative terms subtract as
for photos, so they push frames, not whole videos, away.

Relevance cut-off (optional, `cutoff=z`): the query is also scored against a random sample of
up to 1000 library items, which says what an unrelated photo scores for this query; results
whose score is below mean + z * std of that sample are dropped (z = 3 by default on the CLI:
keep what stands out from the library's background). Sorting by date happens after it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import torch
from sqlalchemy import select

from cliplab.engine.errors import CliplabError
from cliplab.indexes.catalog import (
    Catalog,
    Embedding,
    File,
    Folder,
    from_blobs,
    photo_date,
    split_vector_id,
    vector_id,
)
from cliplab.indexes.decode import decode_file
from cliplab.indexes.indexer import ModelBundle
from cliplab.indexes.records import AppliedLabel
from cliplab.indexes.scan import EXTENSIONS, inside_library, library_roots
from cliplab.indexes.shots import companion_ids, companions
from cliplab.indexes.vectors import VectorIndex
from cliplab.indexes.video import Span, frame_spans

_WEIGHT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*:\s*(.*)$", re.S)
MAX_WEIGHT = 100.0
MAX_TEXT_CHARS = 1000
MAX_LIMIT = 1000
MAX_FILE_ID = 2**63 - 1  # catalog ids are 64-bit integers (a video frame's term is its vector id)
SORTS = ("score", "date", "probability")  # probability: a label filter's top-label probability, highest first
RANGE_MARGIN = 0.02  # a video's frames within this of its best score are part of its matching ranges
MAX_RANGES = 3  # ranges listed per video


@dataclass
class Term:
    sign: int  # +1 or -1
    weight: float
    kind: str  # "text" | "image" | "file"
    value: str

    def __post_init__(self) -> None:
        # Every way of making a term (the typed grammar, the CLI options, the app) meets these limits.
        if self.sign not in (1, -1):
            raise CliplabError(f"A term's sign is +1 or -1, not {self.sign!r}.")
        if not (isinstance(self.weight, int | float) and math.isfinite(self.weight)
                and 0.0 < self.weight <= MAX_WEIGHT):
            raise CliplabError(f"A term's weight must be a positive number of at most {MAX_WEIGHT:g}, not {self.weight!r}; "
                               "use a minus sign (or --not) to push results away from a term.")
        if self.kind == "text" and len(self.value) > MAX_TEXT_CHARS:
            raise CliplabError(f"A search text of {len(self.value):,} characters is too long: CLIP reads at most 77 "
                               f"tokens (a few hundred characters), so give at most {MAX_TEXT_CHARS:,}.")
        if self.kind == "file" and (not (self.value.isascii() and self.value.isdigit()) or len(self.value) > 20
                                    or int(self.value) > MAX_FILE_ID):
            raise CliplabError(f"There is no catalog file @{self.value[:20]}: catalog ids are the numbers "
                               "search results show after @.")
        if self.kind not in ("text", "image", "file"):
            raise CliplabError(f"Unknown query term kind {self.kind!r}: text, image or file.")

    @property
    def factor(self) -> float:
        return self.sign * self.weight


def _split(query: str) -> list[tuple[int, str, bool]]:
    """(sign, raw text, was quoted) per term."""
    terms: list[tuple[int, str, bool]] = []
    sign, words, quoted = 1, [], False
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "+-" and (i + 1 == n or query[i + 1].isspace() or query[i + 1] in "\"'"):
            if words:
                terms.append((sign, " ".join(words), quoted))
                words, quoted = [], False
            elif terms or sign == -1:
                raise CliplabError(f"Two operators in a row in the query {query!r}: put a term between them.")
            sign = 1 if ch == "+" else -1
            i += 1
            continue
        if ch in "\"'":
            end = query.find(ch, i + 1)
            if end < 0:
                raise CliplabError(f"Unclosed quote in the query {query!r}.")
            words.append(query[i + 1:end])
            quoted = True
            i = end + 1
            continue
        j = i
        while j < n and not query[j].isspace():
            j += 1
        words.append(query[i:j])
        i = j
    if words:
        terms.append((sign, " ".join(words), quoted))
    elif terms or sign == -1:
        raise CliplabError(f"The query {query!r} ends with an operator: add a term after it.")
    return terms


def _looks_like_path(text: str) -> bool:
    if text.startswith(("./", "../", "/", "~")):
        return True
    return text.rpartition(".")[2].lower() in EXTENSIONS and os.path.isfile(os.path.expanduser(text))


def _weight(text: str, query: str) -> float:
    weight = float(text)
    if not math.isfinite(weight) or not 0.0 < weight <= MAX_WEIGHT:
        shown = text if len(text) <= 20 else text[:17] + "..."
        raise CliplabError(f"The weight {shown} in the query {_shown(query)} is not usable: give a number above 0 "
                           f"and at most {MAX_WEIGHT:g}, e.g. 2:dog.")
    return weight


def _shown(query: str) -> str:
    return repr(query if len(query) <= 80 else query[:77] + "...")


def parse_query(query: str) -> list[Term]:
    """The terms of a query string (see the module docstring)."""
    terms = []
    for sign, raw, quoted in _split(query):
        weight, text = 1.0, raw.strip()
        match = _WEIGHT.match(text)
        if match:
            weight, text = _weight(match.group(1), query), match.group(2).strip()
        if not text:
            raise CliplabError(f"Empty term in the query {_shown(query)}.")
        if re.fullmatch(r"@\d+", text):
            if len(text) > 20 or int(text[1:]) > MAX_FILE_ID:
                raise CliplabError(f"There is no catalog file {text[:22]}: catalog ids are the numbers `cliplab "
                                   "search` shows after @.")
            terms.append(Term(sign, weight, "file", text[1:]))
        elif not quoted and _looks_like_path(text):
            terms.append(Term(sign, weight, "image", os.path.expanduser(text)))
        else:
            if len(text) > MAX_TEXT_CHARS:
                raise CliplabError(f"A search text of {len(text):,} characters is too long: CLIP reads at most 77 "
                                   f"tokens (a few hundred characters), so give at most {MAX_TEXT_CHARS:,}.")
            terms.append(Term(sign, weight, "text", text))
    if not terms:
        raise CliplabError("The query is empty: give words, an image path, or @file_id.")
    return terms


def check_page(limit: int, offset: int = 0, cutoff: float | None = None, sort: str = "score") -> None:
    """Refuse a page request that cannot be served, with a sentence (every front end calls this)."""
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise CliplabError(f"The number of results per page must be between 1 and {MAX_LIMIT}, not {limit}.")
    if not isinstance(offset, int) or offset < 0:
        raise CliplabError(f"The page must start at result 0 or later, not {offset}: pages count from 1.")
    if cutoff is not None and not (isinstance(cutoff, int | float) and math.isfinite(cutoff)):
        raise CliplabError(f"The cut-off must be a finite number of standard deviations (e.g. 3), not {cutoff}.")
    if sort not in SORTS:
        raise CliplabError(f"Unknown sort {sort!r}: use score, date or probability.")


def file_embedding(catalog: Catalog, model_id: int, file_id: int, dim: int) -> np.ndarray:
    """The stored embedding of a photo, or of one video frame when file_id is a frame's vector id
    (indexes.catalog.vector_id; a video's own id is its first frame)."""
    file_id, frame = split_vector_id(int(file_id))
    with catalog.session() as session:
        blob = session.scalar(select(Embedding.vector).where(Embedding.file_id == file_id, Embedding.frame == frame,
                                                             Embedding.model_id == model_id))
    if blob is None:
        raise CliplabError(f"File {file_id} has no embedding with this model: index it first (`cliplab index`).")
    return from_blobs([blob], dim)[0]


def image_embedding(bundle: ModelBundle, path: str) -> np.ndarray:
    """A query image's embedding: decoded and preprocessed exactly as the library's photos (the handle's
    Preprocess, the same decode path), encoded in the handle's mode."""
    if not os.path.isfile(path):
        raise CliplabError(f"The query image {path} does not exist.")
    decoded = decode_file(0, path, bundle.preprocess, time_limit=60.0)
    if decoded.pixels is None:
        raise CliplabError(f"Cannot use {os.path.basename(path)} as a query: {decoded.reason}")  # an upload: its own name
    return bundle.encode_pixels(torch.from_numpy(decoded.pixels[None]))[0]


def query_vector(catalog: Catalog, bundle: ModelBundle, model_id: int, terms: list[Term]) -> np.ndarray:
    """The combined, normalised query embedding; bundle: the handle in the library's mode (library_bundle)."""
    texts = [t for t in terms if t.kind == "text"]
    text_vectors = bundle.encode_texts([t.value for t in texts]) if texts else None
    total = np.zeros(bundle.model.embed_dim, np.float64)
    for term in terms:
        if term.kind == "text":
            vector = text_vectors[texts.index(term)]
        elif term.kind == "image":
            vector = image_embedding(bundle, term.value)
        else:
            vector = file_embedding(catalog, model_id, int(term.value), bundle.model.embed_dim)
        total += term.factor * vector / max(np.linalg.norm(vector), 1e-12)
    norm = np.linalg.norm(total)
    if norm < 1e-9:
        raise CliplabError("The query's terms cancel out: change their weights.")
    return (total / norm).astype(np.float32)


@dataclass
class Filters:
    folder: str | None = None  # a folder subtree
    after: datetime | None = None  # capture time >= after
    before: datetime | None = None  # capture time < before
    types: tuple[str, ...] = ()  # extensions, e.g. ("jpg", "png")
    # a saved classifier applied to the library (indexes.labels): photos whose top label is `label` (any
    # label when None) with at least `min_probability`
    classifier: str | None = None
    label: str | None = None
    min_probability: float = 0.0

    def active(self) -> bool:
        return bool(self.folder or self.after or self.before or self.types or self.classifier)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)  # naive = local time, as photo_date reads file times


def out_of_reach_ids(catalog: Catalog) -> np.ndarray:
    """The files a search leaves out now: those of an offline folder (marked by a scan, or whose root
    is missing at this moment) and those marked unavailable (see the module docstring)."""
    with catalog.session() as session:
        folders = session.execute(select(Folder.id, Folder.path, Folder.online)).all()
        away = [folder_id for folder_id, path, online in folders if not online or not os.path.isdir(path)]
        query = select(File.id).where(File.unavailable.is_not(None) | File.folder_id.in_(away))
        return np.array(session.scalars(query).all(), np.int64)


def reachable_ids(catalog: Catalog, index: VectorIndex, filters: Filters | None) -> np.ndarray | None:
    """The vector ids a query may return (the filters applied to their files, what is out of reach left
    out, and the RAW files of shots another file stands for (indexes.shots: one result per shot); every
    frame of a video that passes); None when that is every vector of the index."""
    away = np.union1d(out_of_reach_ids(catalog), np.array(sorted(companion_ids(catalog)), np.int64))
    if not (filters is not None and filters.active()) and not len(away):
        return None
    ids = index.ids()
    files = split_vector_id(ids)[0]
    if filters is not None and filters.active():
        return ids[np.isin(files, np.setdiff1d(allowed_ids(catalog, filters, index.model_id), away))]
    return ids[~np.isin(files, away)]


def allowed_ids(catalog: Catalog, filters: Filters, model_id: int | None = None) -> np.ndarray:
    query = select(File.id).join(Folder, Folder.id == File.folder_id)
    if filters.classifier:
        labelled = select(AppliedLabel.file_id).where(AppliedLabel.classifier == filters.classifier,
                                                      AppliedLabel.model_id == model_id,
                                                      AppliedLabel.p1 >= float(filters.min_probability))
        if filters.label is not None:
            labelled = labelled.where(AppliedLabel.label1 == filters.label)
        query = query.where(File.id.in_(labelled))
    if filters.folder:
        root = os.path.abspath(os.path.expanduser(filters.folder)).rstrip(os.sep)
        query = query.where((File.path == root) | File.path.startswith(root + os.sep, autoescape=True))
    undated = File.captured_at.is_(None)
    if filters.after:  # photo_date's rule: the capture time, else the file time
        query = query.where((File.captured_at >= filters.after) | (undated & (File.mtime_ns >= _ns(filters.after))))
    if filters.before:
        query = query.where((File.captured_at < filters.before) | (undated & (File.mtime_ns < _ns(filters.before))))
    if filters.types:
        kinds = {t.lower().lstrip(".") for t in filters.types}
        kinds |= {"jpg", "jpeg"} if kinds & {"jpg", "jpeg"} else set()
        kinds |= {"tif", "tiff"} if kinds & {"tif", "tiff"} else set()
        query = query.where(File.ext.in_(sorted(kinds)))
    with catalog.session() as session:
        return np.array(session.scalars(query).all(), np.int64)


@dataclass(frozen=True)
class TimeRange:
    """A stretch of a video that matches a query: seconds from its start, the best frame's score, and
    that frame's vector id (a "file" term of it is "more like this frame") and time (its thumbnail)."""
    start: float
    end: float
    score: float
    frame_id: int
    at: float

    def label(self) -> str:
        return f"{clock(self.start)}-{clock(self.end)}"


def clock(seconds: float) -> str:
    """00:01:23 (whole seconds, the start rounded down)."""
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@dataclass
class Result:
    file_id: int
    path: str
    score: float  # a video's: its best frame's
    captured_at: datetime | None
    width: int | None
    height: int | None
    date: datetime | None = None  # photo_date: the capture time, else the file time...
    date_source: str | None = None  # ...and which: "capture" | "file"
    label: str | None = None  # with a probability sort: the top label of the filter's classifier...
    probability: float | None = None  # ...and its probability
    ranges: list[TimeRange] = field(default_factory=list)  # a video's best moments, best first ([] for photos)
    companions: list[str] = field(default_factory=list)  # the shot's other files (a RAW beside this JPEG)


@dataclass
class Page:
    results: list[Result]
    total: int  # results available (after filters and cut-off) within the candidate pool
    offset: int
    threshold: float | None = None  # the cut-off score used, if any
    terms: list[Term] = field(default_factory=list)


def background_threshold(index: VectorIndex, vector: np.ndarray, z: float, sample: int = 1000) -> float:
    """mean + z * std of the query's scores against a random sample of the library."""
    ids = index.ids()
    rng = np.random.default_rng(0)
    chosen = ids if len(ids) <= sample else rng.choice(ids, sample, replace=False)
    scores = np.stack([index.reconstruct(int(i)) for i in chosen]) @ vector
    return float(scores.mean() + z * scores.std())


def _best_per_file(scores: np.ndarray, ids: np.ndarray) -> dict[int, tuple[float, int]]:
    """file id -> (best score, its vector id), in score order (scores come best first)."""
    best: dict[int, tuple[float, int]] = {}
    for score, vid in zip(scores.tolist(), ids.tolist()):
        best.setdefault(int(split_vector_id(vid)[0]), (float(score), int(vid)))
    return best


def _ranked(index: VectorIndex, vector: np.ndarray, allowed: np.ndarray | None, k: int, wanted: int,
            exclude: tuple[int, ...], threshold: float | None) -> dict[int, tuple[float, int]]:
    """The best score of each file (a video by its best frame), best first: enough vectors are fetched
    that `wanted` files come out (a video's frames can fill the first places), or all there are."""
    available = len(allowed) if allowed is not None else index.count
    while True:
        scores, ids = index.search(vector[None], k, allowed)
        scores, ids = scores[0], ids[0]
        keep = ~np.isin(split_vector_id(ids)[0], np.array(exclude, np.int64))
        if threshold is not None:
            keep &= scores >= threshold
        best = _best_per_file(scores[keep], ids[keep])
        below = threshold is not None and len(scores) and scores[-1] < threshold
        if len(best) >= wanted or k >= available or below:
            return best
        k = min(available, 2 * k + wanted)


def search_vector(catalog: Catalog, index: VectorIndex, vector: np.ndarray, limit: int = 20, offset: int = 0,
                  filters: Filters | None = None, cutoff: float | None = None, sort: str = "score",
                  exclude: tuple[int, ...] = (), pool: int = 200) -> Page:
    """Results for a query vector, one per file (a video once, with its best time ranges); see search()
    for the arguments."""
    check_page(limit, offset, cutoff, sort)
    allowed = reachable_ids(catalog, index, filters)
    if allowed is not None and len(allowed) == 0 or index.count == 0:
        return Page([], 0, offset)
    want = offset + limit + len(exclude)
    k = max(want, pool) if (cutoff is not None or sort != "score") else want
    threshold = background_threshold(index, vector, cutoff) if cutoff is not None else None
    best = _ranked(index, vector, allowed, k, k - len(exclude), exclude, threshold)
    rows = files_by_id(catalog, list(best))
    roots = library_roots(catalog)
    results = []
    for file_id, (score, _vid) in best.items():
        row = rows.get(file_id)
        if row is None or not inside_library(row.disk_path, roots):
            continue
        date, source = photo_date(row.captured_at, row.mtime_ns)
        results.append(Result(file_id, row.path, score, row.captured_at, row.width, row.height, date, source))
    if sort == "date":
        results.sort(key=lambda r: (r.date, -r.score))
    elif sort == "probability":
        results = by_probability(catalog, index.model_id, filters, results)
    page = results[offset:offset + limit]
    # the page's videos get their ranges (only the page's: a cut-off may have scored the whole library)
    spans = frame_spans(catalog, index.model_id, [r.file_id for r in page if rows[r.file_id].duration_ms is not None])
    for result in page:
        if result.file_id in spans:
            result.ranges = time_ranges(index, vector, result.file_id, spans[result.file_id], threshold)
    with_companions(catalog, page)
    return Page(page, len(results), offset, threshold)


def time_ranges(index: VectorIndex, vector: np.ndarray, file_id: int, spans: list[Span],
                threshold: float | None = None) -> list[TimeRange]:
    """A video's matching moments, best first (at most MAX_RANGES): its frames scoring within
    RANGE_MARGIN of its best frame (and above the cut-off, when one is set), adjacent ones merged into
    one range from the first one's start to the last one's end, scored by the best of them."""
    ids = np.array([vector_id(file_id, s.frame) for s in spans], np.int64)
    present = np.isin(ids, index.ids())  # a damaged frame sent back to be embedded again is absent
    have = [s for s, p in zip(spans, present) if p]
    if not have:
        return []
    scores = np.stack([index.reconstruct(int(i)) for i in ids[present]]) @ vector
    floor = float(scores.max()) - RANGE_MARGIN
    if threshold is not None:
        floor = max(floor, threshold)
    ranges: list[TimeRange] = []
    previous = None
    for span, score in zip(have, scores.tolist()):
        if score < floor:
            previous = None
            continue
        if previous is not None and previous.frame + 1 == span.frame:
            last = ranges[-1]
            better = score > last.score
            ranges[-1] = TimeRange(last.start, span.end, max(last.score, score),
                                   vector_id(file_id, span.frame) if better else last.frame_id,
                                   span.start if better else last.at)
        else:
            ranges.append(TimeRange(span.start, span.end, score, vector_id(file_id, span.frame), span.start))
        previous = span
    ranges.sort(key=lambda r: (-r.score, r.start))
    return ranges[:MAX_RANGES]


def by_probability(catalog: Catalog, model_id: int, filters: Filters | None, results: list[Result]) -> list[Result]:
    """The results ordered by their top label's probability under the filter's classifier, highest first (then
    score); each result carries that label and probability."""
    if filters is None or not filters.classifier:
        raise CliplabError("Sorting by probability needs a label filter: choose a classifier applied to the library.")
    rows: dict[int, tuple[str, float]] = {}  # a video by its most confident frame
    with catalog.session() as session:
        for file_id, label, p in session.execute(
                select(AppliedLabel.file_id, AppliedLabel.label1, AppliedLabel.p1).where(
                    AppliedLabel.classifier == filters.classifier, AppliedLabel.model_id == model_id,
                    AppliedLabel.file_id.in_([r.file_id for r in results]))):
            if file_id not in rows or p > rows[file_id][1]:
                rows[file_id] = (label, p)
    for result in results:
        result.label, result.probability = rows.get(result.file_id, (None, None))
    return sorted(results, key=lambda r: (-(r.probability or 0.0), -r.score))


def with_companions(catalog: Catalog, results: list[Result]) -> list[Result]:
    """Fill each result's companions: the other files of its shot (indexes.shots)."""
    found = companions(catalog, [r.file_id for r in results])
    for result in results:
        result.companions = found.get(result.file_id, [])
    return results


def files_by_id(catalog: Catalog, ids) -> dict[int, File]:
    """The catalog rows of these files (those that still exist), by id."""
    with catalog.session() as session:
        return {row.id: row for row in session.scalars(select(File).where(File.id.in_([int(i) for i in ids])))}


def file_of(ids):
    """The file id of vector ids (a photo's is itself; a video frame's, its video's)."""
    return split_vector_id(ids)[0]


def file_statuses(catalog: Catalog, ids: list[int]) -> dict[int, str]:
    """Each existing file's status (pending | ok | skipped), by id."""
    with catalog.session() as session:
        return dict(session.execute(select(File.id, File.status).where(File.id.in_([int(i) for i in ids]))).all())
