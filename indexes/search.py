"""Searching the library: query grammar, filters, pagination, relevance cut-off, more-like-this.

Query grammar (what `cliplab search QUERY` and search() accept):

    query := [sign] term (sign term)*        sign := "+" | "-"  (standing alone, between spaces)
    term  := [weight ":"] (words | "quoted words" | image path | @file_id)

- words up to the next standalone + or - form one text ("dog on a beach + sunset" is two terms;
  "t-shirt" stays one word); quotes keep a + or - inside a text, and a weight may sit inside
  the quotes: `"2:dog on a beach" + ./ref.jpg - people`;
- a term naming an existing image file (or starting with ./ ../ / ~) is an image query;
  `@123` is the stored embedding of catalog file 123 ("more like this");
- each term's embedding is L2-normalised, multiplied by its weight (default 1), added or
  subtracted, and the sum normalised again; scores are cosine similarities with that vector.

Relevance cut-off (optional, `cutoff=z`): the query is also scored against a random sample of
up to 1000 library items, which says what an unrelated photo scores for this query; results
whose score is below mean + z * std of that sample are dropped (z = 3 by default on the CLI:
keep what stands out from the library's background). Sorting by date happens after it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import torch
from sqlalchemy import select

from engine.errors import CliplabError
from indexes.catalog import Catalog, Embedding, File, Folder, from_blobs
from indexes.decode import decode_file
from indexes.indexer import ModelBundle, library_bundle
from indexes.scan import EXTENSIONS
from indexes.vectors import VectorIndex

_WEIGHT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*:\s*(.*)$", re.S)


@dataclass
class Term:
    sign: int  # +1 or -1
    weight: float
    kind: str  # "text" | "image" | "file"
    value: str

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


def parse_query(query: str) -> list[Term]:
    """The terms of a query string (see the module docstring)."""
    terms = []
    for sign, raw, quoted in _split(query):
        weight, text = 1.0, raw.strip()
        match = _WEIGHT.match(text)
        if match:
            weight, text = float(match.group(1)), match.group(2).strip()
        if not text:
            raise CliplabError(f"Empty term in the query {query!r}.")
        if re.fullmatch(r"@\d+", text):
            terms.append(Term(sign, weight, "file", text[1:]))
        elif not quoted and _looks_like_path(text):
            terms.append(Term(sign, weight, "image", os.path.expanduser(text)))
        else:
            terms.append(Term(sign, weight, "text", text))
    if not terms:
        raise CliplabError("The query is empty: give words, an image path, or @file_id.")
    return terms


def file_embedding(catalog: Catalog, model_id: int, file_id: int, dim: int) -> np.ndarray:
    with catalog.session() as session:
        blob = session.scalar(select(Embedding.vector).where(Embedding.file_id == file_id,
                                                             Embedding.model_id == model_id))
    if blob is None:
        raise CliplabError(f"File {file_id} has no embedding with this model: index it first (`cliplab index`).")
    return from_blobs([blob], dim)[0]


def image_embedding(bundle: ModelBundle, path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise CliplabError(f"The query image {path} does not exist.")
    decoded = decode_file(0, path, bundle.resolution, time_limit=60.0)
    if decoded.pixels is None:
        raise CliplabError(f"Cannot use {path} as a query: {decoded.reason}")
    return bundle.encode_pixels(torch.from_numpy(decoded.pixels[None]))[0]


def query_vector(catalog: Catalog, bundle: ModelBundle, model_id: int, terms: list[Term]) -> np.ndarray:
    """The combined, normalised query embedding."""
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

    def active(self) -> bool:
        return bool(self.folder or self.after or self.before or self.types)


def allowed_ids(catalog: Catalog, filters: Filters) -> np.ndarray:
    query = select(File.id).join(Folder, Folder.id == File.folder_id)
    if filters.folder:
        root = os.path.abspath(os.path.expanduser(filters.folder)).rstrip(os.sep)
        query = query.where((File.path == root) | File.path.startswith(root + os.sep, autoescape=True))
    if filters.after:
        query = query.where(File.captured_at >= filters.after)
    if filters.before:
        query = query.where(File.captured_at < filters.before)
    if filters.types:
        kinds = {t.lower().lstrip(".") for t in filters.types}
        kinds |= {"jpg", "jpeg"} if kinds & {"jpg", "jpeg"} else set()
        kinds |= {"tif", "tiff"} if kinds & {"tif", "tiff"} else set()
        query = query.where(File.ext.in_(sorted(kinds)))
    with catalog.session() as session:
        return np.array(session.scalars(query).all(), np.int64)


@dataclass
class Result:
    file_id: int
    path: str
    score: float
    captured_at: datetime | None
    width: int | None
    height: int | None


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


def search_vector(catalog: Catalog, index: VectorIndex, vector: np.ndarray, limit: int = 20, offset: int = 0,
                  filters: Filters | None = None, cutoff: float | None = None, sort: str = "score",
                  exclude: tuple[int, ...] = (), pool: int = 200) -> Page:
    """Results for a query vector; see search() for the arguments."""
    allowed = allowed_ids(catalog, filters) if filters is not None and filters.active() else None
    if allowed is not None and len(allowed) == 0 or index.count == 0:
        return Page([], 0, offset)
    want = offset + limit + len(exclude)
    k = max(want, pool) if (cutoff is not None or sort == "date") else want
    scores, ids = index.search(vector[None], k, allowed)
    scores, ids = scores[0], ids[0]
    keep = ~np.isin(ids, np.array(exclude, np.int64))
    scores, ids = scores[keep], ids[keep]
    threshold = None
    if cutoff is not None:
        threshold = background_threshold(index, vector, cutoff)
        keep = scores >= threshold
        scores, ids = scores[keep], ids[keep]
    with catalog.session() as session:
        rows = {row.id: row for row in session.scalars(select(File).where(File.id.in_([int(i) for i in ids])))}
    results = [Result(int(i), rows[int(i)].path, float(s), rows[int(i)].captured_at, rows[int(i)].width,
                      rows[int(i)].height) for s, i in zip(scores, ids) if int(i) in rows]
    if sort == "date":
        results.sort(key=lambda r: (r.captured_at is None, r.captured_at or datetime.min, -r.score))
    elif sort != "score":
        raise CliplabError(f"Unknown sort {sort!r}: use score or date.")
    return Page(results[offset:offset + limit], len(results), offset, threshold)


def search(catalog: Catalog, bundle: ModelBundle, index: VectorIndex, query: str, limit: int = 20, offset: int = 0,
           filters: Filters | None = None, cutoff: float | None = None, sort: str = "score") -> Page:
    """Search with a query string (grammar in the module docstring).

    limit/offset: the page; filters: folder subtree, capture-date range, file types; cutoff: z of
    the relevance cut-off (None = off); sort: "score" or "date" (after the cut-off). A query made of
    one @file_id (more like this) leaves that file out of its own results."""
    terms = parse_query(query)
    model_id = bundle.register(catalog)
    bundle = library_bundle(catalog, bundle, model_id)  # the query is embedded as the library was
    vector = query_vector(catalog, bundle, model_id, terms)
    exclude = tuple(int(t.value) for t in terms if t.kind == "file" and t.sign > 0)
    page = search_vector(catalog, index, vector, limit, offset, filters, cutoff, sort, exclude)
    page.terms = terms
    return page


def more_like_this(catalog: Catalog, bundle: ModelBundle, index: VectorIndex, file_id: int, **kwargs) -> Page:
    return search(catalog, bundle, index, f"@{file_id}", **kwargs)
