"""The photo library commands: index (and remove) folders, search, duplicates, export, texts.

    cliplab index ~/Pictures /media/usb/photos --model ViT-B/32
    cliplab index --skipped
    cliplab index --remove ~/Pictures/old
    cliplab search '"2:dog on a beach" + ./ref.jpg - people' --after 2023-06-01 --cutoff 3 --sort date
    cliplab search --image "IMG_1234 - Copy.jpg" --weight 2 --text sunset --not people --not-image crowd.jpg
    cliplab duplicates --threshold 0.95
    cliplab export embeddings.parquet
    cliplab texts add imagenet assets/imagenet_classes.txt && cliplab texts search imagenet photo.jpg
"""

from __future__ import annotations

import argparse
import json
import math

from cliplab.app.commands.copy_detector import add_detector_argument
from cliplab.app.commands.models import add_model_arguments, load_model
from cliplab.app.services import captions, copy_detectors, library, search
from cliplab.app.services.library import KINDS, open_catalog, printable, printable_text
from cliplab.engine.errors import CliplabError


def _at_least(minimum: float, kind=int):
    """An argparse type: a finite number >= minimum, refused with a sentence otherwise."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is not a number of at least {minimum:g}")
        return value
    return parse


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def index_main(args: argparse.Namespace) -> int:
    catalog = open_catalog()
    if args.skipped:
        rows = library.skipped_files(catalog)
        for path, reason in rows:
            print(f"{printable(path)}\t{printable_text(reason)}")
        print(f"{len(rows)} file(s) skipped")
        return 0
    if args.remove:
        if args.paths:
            raise CliplabError("`cliplab index --remove FOLDER` removes one folder; give the folders to add in a "
                               "separate command.")
        removed = library.remove_folder(catalog, args.remove)
        print(f"removed {printable(args.remove)} from the library: {removed} file(s) and their embeddings (the files on disk "
              "are untouched)")
        return 0
    run = library.add_folders(catalog, load_model(args), args.paths, confirm_system=args.confirm_system,
                              batch_size=args.batch_size, workers=args.workers, kind=args.index_kind,
                              progress=True, time_limit=args.time_limit)
    print(f"scan: {run['scan']}")
    for note in run["notes"]:
        print(printable_text(note))
    print(f"embedded {run['embedded']}, skipped {run['skipped']} in {run['seconds']:.1f} s "
          f"({run['images_per_second']:.1f} images/s); vector index: {run['vectors']['kind']}, "
          f"{run['vectors']['count']} vectors")
    if run["skipped"]:
        print("see why with `cliplab index --skipped`")
    return 0


class TermAction(argparse.Action):
    """Appends one structured query term per option, in command-line order; --weight W sets the
    weight of the term just before it. Values are taken whole: a path may hold any character."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        terms = list(getattr(namespace, "terms", None) or [])
        if self.dest == "weight":
            if not terms:
                parser.error("--weight W sets the weight of the term before it: put it after --text, --image, "
                             "--not, --not-image or --like")
            terms[-1] = search.Term(terms[-1].sign, float(value), terms[-1].kind, terms[-1].value)
        else:
            make, sign = {"text": (search.text_term, 1), "image": (search.image_term, 1),
                          "not": (search.text_term, -1), "not_image": (search.image_term, -1),
                          "like": (search.file_term, 1), "not_like": (search.file_term, -1)}[self.dest]
            terms.append(make(value, sign=sign))
        namespace.terms = terms


def search_terms(args: argparse.Namespace) -> list[search.Term]:
    """The typed query's terms (the grammar), then the option terms in their order."""
    terms = search.parse_terms(args.query) + list(args.terms or [])
    if not terms:
        raise CliplabError("Give something to search with: a QUERY, or --text, --image, --like ID "
                           "(and --not / --not-image to push results away).")
    return terms


def search_main(args: argparse.Namespace) -> int:
    terms = search_terms(args)
    catalog = open_catalog()
    try:
        view = search.search(catalog, load_model(args), terms, page=args.page, per_page=args.limit,
                             filters=search.make_filters(args.folder, args.after, args.before, args.type,
                                                         args.classifier, args.label, args.min_probability, catalog),
                             cutoff=args.cutoff, sort=args.sort, kind=args.index_kind)
    except search.NothingIndexed as error:
        raise CliplabError(f"No photos are indexed with the model {error.model} yet: run `cliplab index FOLDER` "
                           "first.") from None
    if args.json:
        print(json.dumps([{"id": r.file_id, "path": r.path, "score": round(r.score, 5),
                           "captured_at": r.captured_at.isoformat() if r.captured_at else None,
                           "date": r.date.isoformat() if r.date else None, "date_source": r.date_source,
                           "ranges": [{"start": t.start, "end": t.end, "score": round(t.score, 5), "frame_id": t.frame_id,
                                       "at": t.at}
                                      for t in r.ranges],
                           "companions": r.companions}
                          for r in view.results], indent=1))
        return 0
    on_disk = library.disk_paths(catalog, [r.file_id for r in view.results])
    for n, r in enumerate(view.results, start=view.offset + 1):
        # the date the filters and --sort date use: the capture time, else the file time (marked)
        when = r.date.strftime("%Y-%m-%d %H:%M") + (" file" if r.date_source == "file" else "") if r.date else "-"
        label = f"{r.label} {100 * r.probability:.1f}%  " if r.label is not None else ""
        print(f"{n:4d}  {r.score:.4f}  @{r.file_id:<6d} {when:21s}  {label}{printable(on_disk.get(r.file_id, r.path))}")
        for moment in r.ranges:  # a video's best moments: `cliplab clip` takes such a line as it is
            print(f"      {printable(r.path)}  {moment.label()}  {moment.score:.4f}  (frame @{moment.frame_id})")
        for other in r.companions:  # the shot's other files (a RAW beside this JPEG): one photo, not two results
            print(f"{'':42s}+ {printable(other)}")
    cut = ""
    if view.threshold_unreachable:
        cut = f", no photo scores above a cut-off of z={args.cutoff:g} (it would need a cosine above 1)"
    elif view.threshold is not None:
        cut = f", cut-off score {view.threshold:.4f}"
    print(f"{view.total} result(s){cut}; page {view.page} of {view.pages}. Dates marked \"file\" have no capture "
          "time. More like one: `cliplab search --like ID`" + ("; a video's moment: `cliplab clip 'PATH  RANGE' OUT.mp4`"
                                                                  if any(r.ranges for r in view.results) else ""))
    for note in view.notes:
        print(f"note: {note}")
    return 0


def duplicates_main(args: argparse.Namespace) -> int:
    catalog = open_catalog()
    groups = library.find_duplicates(catalog, threshold=args.threshold, burst_seconds=args.burst_seconds,
                                     exact_only=args.exact_only, detector=args.detector,
                                     on_progress=copy_detectors.console_progress())
    on_disk = library.disk_paths(catalog, [m.file_id for group in groups for m in group.members])
    for n, group in enumerate(groups, 1):
        keeper = group.keeper
        if group.kind == "exact":
            print(f"group {n} (exact copies, {len(group.members)} files)")
        else:
            print(f"group {n} (similar pictures, copies to the detector: {len(group.members)} files, copy score >= "
                  f"{group.threshold:.2f})")
        for m in group.members:
            size = f"{m.width}x{m.height}" if m.width else "?"
            print(f"  {'keep' if m is keeper else '    '}  {size:>11s}  {printable(on_disk.get(m.file_id, m.path))}")
    notes = [note for kind, note in (("exact", library.KEEPER_RULE), ("similar", library.SIMILAR_NOTE))
             if any(g.kind == kind for g in groups)]
    print(" ".join([f"{len(groups)} group(s).", *notes]))
    return 0


def export_main(args: argparse.Namespace) -> int:
    n = library.export_embeddings(args.output, load_model(args), open_catalog())
    print(f"wrote {n} embeddings to {args.output}")
    return 0


def texts_main(args: argparse.Namespace) -> int:
    catalog = open_catalog()
    if args.action == "add":
        print(f"collection {args.name}: {library.add_texts(catalog, args.name, args.file)} texts")
        return 0
    # the same image -> text feature (and caches) as `cliplab captions --image`
    bundle = load_model(args)
    for hit in captions.image_to_texts(bundle, args.file, captions.COLLECTION_PREFIX + args.name, k=args.limit,
                                       catalog=catalog):
        print(f"{hit.score:.4f}  {'*' if hit.true_pair else ' '} {hit.text}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("index", help="index photo folders (incremental, crash-safe); remove a folder",
                              description="Scan folders, embed new and changed photos, update the vector index.")
    p.add_argument("paths", nargs="*", help="folders to scan (none: embed what is pending)")
    add_model_arguments(p, purpose="index")
    p.add_argument("--skipped", action="store_true", help="list the files that could not be indexed, with reasons")
    p.add_argument("--remove", metavar="FOLDER", help="take a library folder out of the catalog with its files' rows "
                                                      "and embeddings (the files on disk are untouched)")
    p.add_argument("--confirm-system", action="store_true",
                   help="index a system folder (/, /etc, /usr, your whole home folder, ...) anyway")
    p.add_argument("--batch-size", type=_at_least(1), default=32)
    p.add_argument("--workers", type=_at_least(0), default=None, help="decoding processes (default: one per core)")
    p.add_argument("--time-limit", type=_at_least(0.1, float), default=30.0, help="seconds allowed to decode one file")
    p.add_argument("--index-kind", choices=KINDS, default="auto",
                   help="flat (exact), ivf (approximate), auto; a -fp16 or -int8 suffix stores 2 or 1 bytes a dimension")
    p.set_defaults(func=index_main)

    p = subparsers.add_parser(
        "search", help="search the photo library by text, image, or both",
        description="QUERY grammar: terms joined by standalone + and -, each [weight:] words | \"quoted words\" | "
                    "image path | @file_id. The options add terms whole, so any path works (also one with ' - ' "
                    "or spaces): --text, --image, --like, and --not, --not-image, --not-like to push results "
                    "away; --weight W after a term weights it. See docs/library.md.")
    p.add_argument("query", nargs="?", help="a query in the grammar above (optional with term options)")
    add_model_arguments(p, purpose="index", text_model=True)
    p.set_defaults(terms=[])
    term = p.add_argument_group("query terms (repeatable, in order)")
    term.add_argument("--text", action=TermAction, metavar="TEXT", help="a text term, taken whole")
    term.add_argument("--image", action=TermAction, metavar="PATH", help="an image file, taken whole")
    term.add_argument("--like", action=TermAction, metavar="FILE_ID", help="more like this catalog photo")
    term.add_argument("--not", action=TermAction, dest="not", metavar="TEXT", help="push results away from a text")
    term.add_argument("--not-image", action=TermAction, metavar="PATH", help="push results away from an image")
    term.add_argument("--not-like", action=TermAction, metavar="FILE_ID", help="push results away from a photo")
    term.add_argument("--weight", action=TermAction, type=float, metavar="W",
                      help="the weight of the term just before (default 1)")
    p.add_argument("--limit", type=_at_least(1), default=20, help="results per page (1-1000, default 20)")
    p.add_argument("--page", type=_at_least(1), default=1)
    p.add_argument("--folder", help="only photos under this folder")
    p.add_argument("--after", help="captured on or after (YYYY-MM-DD)")
    p.add_argument("--before", help="captured before (YYYY-MM-DD)")
    p.add_argument("--type", action="append", default=[], help="file type (jpg, png, heic...); repeatable")
    p.add_argument("--cutoff", type=_finite, nargs="?", const=3.0, default=None,
                   help="drop results under mean + Z*std of the library's scores for the query (default Z=3)")
    p.add_argument("--classifier", help="only photos labelled by this saved classifier (see `cliplab labels`)")
    p.add_argument("--label", help="with --classifier: only photos whose top label is this class")
    p.add_argument("--min-probability", type=float, default=None,
                   help="with --classifier: the least top-label probability (default: the classifier's threshold)")
    p.add_argument("--sort", choices=["score", "date", "probability"], default="score",
                   help="probability: the --classifier's top-label probability, highest first")
    p.add_argument("--index-kind", choices=KINDS, default="auto",
                   help="flat (exact), ivf (approximate), auto; a -fp16 or -int8 suffix stores 2 or 1 bytes a dimension")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=search_main)

    p = subparsers.add_parser("duplicates", help="exact copies (with a suggested keeper) and similar pictures")
    p.add_argument("--threshold", type=_finite, default=None,
                   help="copy-detector score for similar pictures (default: the detector's, see docs/library.md)")
    p.add_argument("--burst-seconds", type=_at_least(0, float), default=300.0,
                   help="capture-time gap that splits a group")
    p.add_argument("--exact-only", action="store_true")
    add_detector_argument(p)
    p.set_defaults(func=duplicates_main)

    p = subparsers.add_parser("export", help="export embeddings + metadata (.parquet or .npz)")
    p.add_argument("output")
    add_model_arguments(p, purpose="index")
    p.set_defaults(func=export_main)

    p = subparsers.add_parser("texts", help="text collections: search texts with an image",
                              description="Store a text collection in the catalog, or rank its texts for an image "
                                          "(the same feature as `cliplab captions --collection collection:NAME`).")
    p.add_argument("action", choices=["add", "search"])
    p.add_argument("name", help="collection name")
    p.add_argument("file", help="add: a .txt (one text a line) or captions .csv; search: an image")
    p.add_argument("--limit", type=_at_least(1), default=10)
    add_model_arguments(p)
    p.set_defaults(func=texts_main)
