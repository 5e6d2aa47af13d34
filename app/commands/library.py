"""The photo library commands: index, search, duplicates, export, texts.

    cliplab index ~/Pictures /media/usb/photos --model ViT-B/32
    cliplab index --skipped
    cliplab search '"2:dog on a beach" + ./ref.jpg - people' --after 2023-06-01 --cutoff 3 --sort date
    cliplab duplicates --threshold 0.95
    cliplab export embeddings.parquet
    cliplab texts add imagenet assets/imagenet_classes.txt && cliplab texts search imagenet photo.jpg
"""

from __future__ import annotations

import argparse
import json

from app.services import library as service
from indexes.vectors import KINDS


def _model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name or checkpoint path (default: $CLIPLAB_MODEL or demo)")


def index_main(args: argparse.Namespace) -> int:
    if args.skipped:
        rows = service.skipped_files()
        for path, reason in rows:
            print(f"{path}\t{reason}")
        print(f"{len(rows)} file(s) skipped")
        return 0
    run = service.index_folders(args.paths, service.load_bundle(args.model), batch_size=args.batch_size,
                                workers=args.workers, kind=args.index_kind, time_limit=args.time_limit)
    print(f"scan: {run.scan.summary()}")
    print(f"embedded {run.index.embedded}, skipped {run.index.skipped} in {run.index.seconds:.1f} s "
          f"({run.index.images_per_second:.1f} images/s); vector index: {run.vectors['kind']}, "
          f"{run.vectors['count']} vectors")
    if run.index.skipped:
        print("see why with `cliplab index --skipped`")
    return 0


def search_main(args: argparse.Namespace) -> int:
    query = f"@{args.like}" if args.like is not None else args.query
    if not query:
        raise SystemExit("give a QUERY or --like FILE_ID")
    page = service.search_library(query, service.load_bundle(args.model), limit=args.limit, page=args.page,
                                  folder=args.folder, after=args.after, before=args.before, types=tuple(args.type),
                                  cutoff=args.cutoff, sort=args.sort, kind=args.index_kind)
    if args.json:
        print(json.dumps([{"id": r.file_id, "path": r.path, "score": round(r.score, 5),
                           "captured_at": r.captured_at.isoformat() if r.captured_at else None}
                          for r in page.results], indent=1))
        return 0
    for n, r in enumerate(page.results, start=page.offset + 1):
        when = r.captured_at.strftime("%Y-%m-%d %H:%M") if r.captured_at else "-"
        print(f"{n:4d}  {r.score:.4f}  @{r.file_id:<6d} {when:16s}  {r.path}")
    cut = f", cut-off score {page.threshold:.4f}" if page.threshold is not None else ""
    print(f"{page.total} result(s){cut}; page {args.page}. More like one: `cliplab search --like ID`")
    return 0


def duplicates_main(args: argparse.Namespace) -> int:
    bundle = None if args.exact_only else service.load_bundle(args.model)
    groups = service.find_duplicates(bundle, threshold=args.threshold, burst_seconds=args.burst_seconds)
    for n, group in enumerate(groups, 1):
        keeper = group.keeper
        print(f"group {n} ({group.kind}, {len(group.members)} files)")
        for m in group.members:
            size = f"{m.width}x{m.height}" if m.width else "?"
            print(f"  {'keep' if m is keeper else '    '}  {size:>11s}  {m.path}")
    print(f"{len(groups)} group(s). Keeper: largest resolution, then earliest capture, then shortest path.")
    return 0


def export_main(args: argparse.Namespace) -> int:
    n = service.export_embeddings(args.output, service.load_bundle(args.model))
    print(f"wrote {n} embeddings to {args.output}")
    return 0


def texts_main(args: argparse.Namespace) -> int:
    if args.action == "add":
        print(f"collection {args.name}: {service.add_texts(args.name, args.file)} texts")
        return 0
    for hit in service.image_to_text(args.name, args.file, service.load_bundle(args.model), k=args.limit):
        print(f"{hit.score:.4f}  {'*' if hit.true_pair else ' '} {hit.text}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("index", help="index photo folders (incremental, crash-safe)",
                              description="Scan folders, embed new and changed photos, update the vector index.")
    p.add_argument("paths", nargs="*", help="folders to scan (none: embed what is pending)")
    _model_arg(p)
    p.add_argument("--skipped", action="store_true", help="list the files that could not be indexed, with reasons")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per core)")
    p.add_argument("--time-limit", type=float, default=30.0, help="seconds allowed to decode one file")
    p.add_argument("--index-kind", choices=KINDS, default="auto",
                   help="flat (exact), ivf (approximate), auto; a -fp16 or -int8 suffix stores 2 or 1 bytes a dimension")
    p.set_defaults(func=index_main)

    p = subparsers.add_parser("search", help="search the photo library by text, image, or both",
                              description="QUERY grammar: terms joined by standalone + and -, each "
                                          "[weight:] words | \"quoted words\" | image path | @file_id. "
                                          "See docs/library.md.")
    p.add_argument("query", nargs="?")
    _model_arg(p)
    p.add_argument("--like", type=int, help="more like this catalog file id")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--folder", help="only photos under this folder")
    p.add_argument("--after", help="captured on or after (YYYY-MM-DD)")
    p.add_argument("--before", help="captured before (YYYY-MM-DD)")
    p.add_argument("--type", action="append", default=[], help="file type (jpg, png, heic...); repeatable")
    p.add_argument("--cutoff", type=float, nargs="?", const=3.0, default=None,
                   help="drop results under mean + Z*std of the library's scores for the query (default Z=3)")
    p.add_argument("--sort", choices=["score", "date"], default="score")
    p.add_argument("--index-kind", choices=KINDS, default="auto",
                   help="flat (exact), ivf (approximate), auto; a -fp16 or -int8 suffix stores 2 or 1 bytes a dimension")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=search_main)

    p = subparsers.add_parser("duplicates", help="exact and near-duplicate photos, with a suggested keeper")
    _model_arg(p)
    p.add_argument("--threshold", type=float, default=0.95, help="cosine similarity for near-duplicates")
    p.add_argument("--burst-seconds", type=float, default=300.0, help="capture-time gap that splits a group")
    p.add_argument("--exact-only", action="store_true")
    p.set_defaults(func=duplicates_main)

    p = subparsers.add_parser("export", help="export embeddings + metadata (.parquet or .npz)")
    p.add_argument("output")
    _model_arg(p)
    p.set_defaults(func=export_main)

    p = subparsers.add_parser("texts", help="text collections: search texts with an image")
    p.add_argument("action", choices=["add", "search"])
    p.add_argument("name", help="collection name")
    p.add_argument("file", help="add: a .txt (one text a line) or captions .csv; search: an image")
    p.add_argument("--limit", type=int, default=10)
    _model_arg(p)
    p.set_defaults(func=texts_main)
