"""The app's Search tab over indexes.search: a query string and/or a dropped image, filters typed as
text, pages, the score distribution for the cut-off histogram, the indexing panel's facts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from app.services.app_state import AppState
from engine.errors import CliplabError
from indexes.catalog import File, Folder
from indexes.scan import skipped
from indexes.search import Filters, Page, allowed_ids, parse_query, query_vector, search_vector
from indexes.vectors import VectorIndex, open_index

PER_PAGE = 24
HISTOGRAM_SAMPLE = 5000  # scores drawn for the histogram: enough for its shape on any library


def vector_index(state: AppState) -> VectorIndex:
    """The current model's FAISS index, opened once per model and brought up to date on every call."""
    bundle = state.bundle
    model_id = bundle.register(state.catalog)
    cache = state.__dict__.setdefault("_vector_indexes", {})
    if model_id not in cache:
        cache[model_id] = open_index(state.catalog, model_id)
    else:
        cache[model_id].sync()
    return cache[model_id]


def parse_date(text: str | None, what: str) -> datetime | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CliplabError(f"The {what} date {text!r} is not a date: write it as YYYY-MM-DD.") from None


def make_filters(folder: str | None = None, after: str | None = None, before: str | None = None,
                 types: list[str] | None = None) -> Filters:
    folder = (folder or "").strip() or None
    if folder and not Path(folder).expanduser().is_dir():
        raise CliplabError(f"The folder filter {folder} does not exist (or is not a folder).")
    return Filters(folder=folder, after=parse_date(after, "from"), before=parse_date(before, "to"),
                   types=tuple(types or ()))


def full_query(text: str | None, image_path: str | None) -> str:
    """The typed query plus the dropped image as one more (quoted-path) term."""
    text = (text or "").strip()
    if image_path:
        if not os.path.isfile(image_path):
            raise CliplabError(f"The dropped image {image_path} is gone; drop it again.")
        return f"{text} + {image_path}" if text else image_path
    if not text:
        raise CliplabError("Type what you are looking for (e.g. 'a red circle'), or drop an image.")
    return text


@dataclass
class SearchView:
    page: Page
    pages: int
    histogram: np.ndarray  # scores of (a sample of) the library for this query
    query: str


def search_library(state: AppState, text: str | None, image_path: str | None = None, page: int = 1,
                   per_page: int = PER_PAGE, filters: Filters | None = None, cutoff: float | None = None,
                   sort: str = "score") -> SearchView:
    """One page of results (page counts from 1) and the scores for the cut-off histogram."""
    query = full_query(text, image_path)
    index = vector_index(state)
    if index.count == 0:
        raise CliplabError("The library has no indexed photos yet: add a folder in the indexing panel below.")
    bundle = state.bundle
    terms = parse_query(query)
    vector = query_vector(state.catalog, bundle, bundle.register(state.catalog), terms)
    exclude = tuple(int(t.value) for t in terms if t.kind == "file" and t.sign > 0)
    page = max(1, int(page))
    result = search_vector(state.catalog, index, vector, per_page, (page - 1) * per_page, filters, cutoff, sort,
                           exclude, pool=max(200, page * per_page))
    result.terms = terms
    if cutoff is None and sort == "score":  # search_vector counts only the candidates it fetched
        pool_size = len(allowed_ids(state.catalog, filters)) if filters and filters.active() else index.count
        result.total = max(result.total, pool_size - len(exclude))
    scores, _ = index.search(vector[None], min(index.count, HISTOGRAM_SAMPLE))
    return SearchView(result, max(1, -(-result.total // per_page)), scores[0], query)


@dataclass
class LibrarySummary:
    folders: list[tuple[str, bool, int]]  # path, online, files
    indexed: int
    skipped: list[tuple[str, str]]  # path, reason


def library_summary(state: AppState, limit: int = 200) -> LibrarySummary:
    with state.catalog.session() as session:
        counts = dict(session.execute(select(File.folder_id, func.count()).group_by(File.folder_id)).all())
        folders = [(f.path, f.online, counts.get(f.id, 0))
                   for f in session.scalars(select(Folder).order_by(Folder.path))]
        indexed = session.scalar(select(func.count()).select_from(File).where(File.status == "ok"))
    return LibrarySummary(folders, indexed, skipped(state.catalog)[:limit])  # files, folders, links, FIFOs


def file_id_of(state: AppState, path: str) -> int:
    with state.catalog.session() as session:
        file_id = session.scalar(select(File.id).where(File.path == path))
    if file_id is None:
        raise CliplabError(f"{path} is not in the library.")
    return int(file_id)
