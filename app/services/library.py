"""The photo library as the CLI and the app use it: index, list skips, search, duplicates, export, texts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

from engine.errors import CliplabError
from indexes.catalog import Catalog, open_catalog
from indexes.duplicates import Group, exact_duplicates, near_duplicates
from indexes.export import export
from indexes.indexer import IndexReport, ModelBundle, index_pending
from indexes.scan import ScanReport, scan, skipped
from indexes.search import Filters, Page, check_page, search
from indexes.texts import TextHit, TextIndex, add_collection, read_texts
from indexes.vectors import VectorIndex, open_index
from indexes.writer import writer_lock


def default_model() -> str:
    return os.environ.get("CLIPLAB_MODEL", "demo")


def load_bundle(model: str | None = None, device: str | None = None) -> ModelBundle:
    return ModelBundle.load(model or default_model(), device=device)


@dataclass
class IndexRun:
    scan: ScanReport
    index: IndexReport
    vectors: dict


def index_folders(paths: list[str], bundle: ModelBundle, catalog: Catalog | None = None, batch_size: int = 32,
                  workers: int | None = None, kind: str = "auto", progress: bool = True,
                  time_limit: float = 30.0) -> IndexRun:
    """Scan the folders, embed what is new or changed, and bring the vector index up to date."""
    catalog = catalog or open_catalog()
    with writer_lock(catalog):  # one writer per catalog, from the scan to the saved vector index
        scanned = scan(catalog, paths) if paths else ScanReport()
        report = index_pending(catalog, bundle, batch_size=batch_size, workers=workers, progress=progress,
                               time_limit=time_limit)
        index = open_index(catalog, bundle.register(catalog), kind)
    return IndexRun(scanned, report, {"kind": index.kind, "count": index.count})


def skipped_files(catalog: Catalog | None = None) -> list[tuple[str, str]]:
    """Files that could not be indexed and what scans could not catalogue (folders, links, FIFOs), with why."""
    return skipped(catalog or open_catalog())


def vector_index(catalog: Catalog, bundle: ModelBundle, kind: str = "auto") -> VectorIndex:
    index = open_index(catalog, bundle.register(catalog), kind)
    if index.count == 0:
        raise CliplabError(f"No photos are indexed with the model {bundle.name} yet: run `cliplab index FOLDER` first.")
    return index


def parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CliplabError(f"{text!r} is not a date: write it as YYYY-MM-DD (or YYYY-MM-DDTHH:MM).") from None


def search_library(query: str, bundle: ModelBundle, catalog: Catalog | None = None, limit: int = 20, page: int = 1,
                   folder: str | None = None, after: str | None = None, before: str | None = None,
                   types: tuple[str, ...] = (), cutoff: float | None = None, sort: str = "score",
                   kind: str = "auto") -> Page:
    catalog = catalog or open_catalog()
    if not isinstance(page, int) or page < 1:
        raise CliplabError(f"Pages count from 1, not {page}.")
    check_page(limit, 0, cutoff, sort)
    filters = Filters(folder, parse_date(after), parse_date(before), tuple(types))
    return search(catalog, bundle, vector_index(catalog, bundle, kind), query, limit=limit,
                  offset=(page - 1) * limit, filters=filters, cutoff=cutoff, sort=sort)


def find_duplicates(bundle: ModelBundle | None, catalog: Catalog | None = None, threshold: float | None = None,
                    burst_seconds: float = 300.0) -> list[Group]:
    """Exact groups, then (with a model) near-duplicate groups."""
    catalog = catalog or open_catalog()
    groups = exact_duplicates(catalog)
    if bundle is not None:
        groups += near_duplicates(catalog, vector_index(catalog, bundle), threshold, burst_seconds, exact=groups)
    return groups


def export_embeddings(path: str, bundle: ModelBundle, catalog: Catalog | None = None) -> int:
    catalog = catalog or open_catalog()
    return export(catalog, bundle.register(catalog), path)


def add_texts(name: str, path: str, catalog: Catalog | None = None) -> int:
    catalog = catalog or open_catalog()
    texts, images = read_texts(path)
    add_collection(catalog, name, texts, images, source=str(path))
    return len(texts)


def image_to_text(name: str, image: str, bundle: ModelBundle, catalog: Catalog | None = None,
                  k: int = 10) -> list[TextHit]:
    from indexes.search import image_embedding
    catalog = catalog or open_catalog()
    return TextIndex(catalog, bundle, name).search(image_embedding(bundle, image), k, image_path=image)
