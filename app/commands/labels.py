"""`cliplab labels apply|show|threshold|review|label|improve|export NAME`: a saved classifier on the library.

    cliplab labels apply pets                      # label every indexed photo (kept current by `cliplab index`)
    cliplab labels show pets --label cat --min-probability 0.6
    cliplab labels threshold pets --set suggested  # "none of these" below it
    cliplab labels review pets                     # where it is unsure; then
    cliplab labels label pets 123 dog --person Ada # confirm or correct one photo
    cliplab labels improve pets                    # a head from the labelled examples
    cliplab labels export pets pets.json --onnx pets.onnx
"""

from __future__ import annotations

import argparse
import getpass

from cliplab.app.commands.models import add_model_arguments, load_model
from cliplab.app.services import classifiers, labels
from cliplab.app.services.library import open_catalog
from cliplab.engine.errors import CliplabError


def register(subparsers) -> None:
    parser = subparsers.add_parser("labels", help="apply a saved classifier to the library, review and improve it")
    sub = parser.add_subparsers(dest="labels_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("name", metavar="NAME", help="a saved classifier (save one from the Classify tab)")
        add_model_arguments(p)
        p.set_defaults(func=func)
        return p

    action("apply", "label every indexed photo with the classifier (new, changed, removed photos only after that)",
           run_apply)
    show = action("show", "the library by label, most probable first", run_show)
    show.add_argument("--label", help="only photos whose top label is this class")
    show.add_argument("--min-probability", type=float, default=None,
                      help="the least top-label probability (default: the classifier's threshold)")
    show.add_argument("--sort", choices=["probability", "path"], default="probability")
    show.add_argument("--limit", type=int, default=50)
    threshold = action("threshold", "the suggested \"none of these\" threshold and photos left per threshold",
                       run_threshold)
    threshold.add_argument("--set", dest="set_to", help="save a threshold: a probability, 'suggested' or 'none'")
    review = action("review", "the photos it is least sure about, and each class's most and least confident",
                    run_review)
    review.add_argument("--per-grid", type=int, default=8)
    label = action("label", "confirm or correct the label of one photo (stored as a labelled example)", run_label)
    label.add_argument("photo", metavar="ID", help="the photo's id (the number after @)")
    label.add_argument("label", metavar="LABEL", help="its right class")
    label.add_argument("--person", default=None, help="who is labelling (default: your user name)")
    action("improve", "a head from the labelled examples, kept only if not worse than zero-shot", run_improve)
    export = action("export", "one small file (and optionally an ONNX model with the image tower)", run_export)
    export.add_argument("file", metavar="FILE", help="the classifier file to write (JSON)")
    export.add_argument("--onnx", help="also write the image tower and the head as one ONNX model here")


def run_apply(args: argparse.Namespace) -> int:
    print(labels.apply(open_catalog(), load_model(args), args.name).summary)
    return 0


def run_show(args: argparse.Namespace) -> int:
    rows, total = labels.labelled_photos(open_catalog(), load_model(args), args.name, args.label,
                                         args.min_probability, args.sort, max(1, args.limit))
    for row in rows:
        top = ", ".join(f"{label} {100 * p:.1f}%" for label, p in row.top)
        print(f"@{row.file_id:<6d} {top:50s}  {row.path}")
    print(f"{total} photo(s)" + (f", {len(rows)} shown" if len(rows) < total else ""))
    return 0


def run_threshold(args: argparse.Namespace) -> int:
    catalog, bundle = open_catalog(), load_model(args)
    result = labels.thresholds(catalog, bundle, args.name)
    if args.set_to is not None:
        value = {"suggested": result.suggested, "none": None}.get(args.set_to.strip().lower(), args.set_to)
        chosen = classifiers.set_threshold(catalog, args.name, value)
        result = labels.thresholds(catalog, bundle, args.name)
        print("threshold removed" if chosen is None else f"threshold set to {chosen:g}")
    print(f"suggested threshold {result.suggested:g} (saved: {result.current if result.current is not None else 'none'})"
          f" over {result.photos} photos")
    for value, count in result.counts:
        print(f"  {value:>6.3f}  {count:>6d} photo(s) left unlabelled (\"none of these\")")
    return 0


def run_review(args: argparse.Namespace) -> int:
    result = labels.review(open_catalog(), load_model(args), args.name, per_grid=max(1, args.per_grid))

    def show(title: str, items) -> None:
        print(title)
        for item in items:
            second = f" / {item.second} {100 * item.second_probability:.1f}%" if item.second else ""
            mark = f"  [labelled {item.confirmed}]" if item.confirmed else ""
            print(f"  @{item.file_id:<6d} {item.label} {100 * item.probability:.1f}%{second}  {item.path}{mark}")

    show("least sure (smallest margin between the top two):", result.unsure)
    for cls, (most, least) in result.by_class.items():
        show(f"{cls}: most confident", most)
        show(f"{cls}: least confident", least)
    print("Confirm or correct one: `cliplab labels label NAME ID LABEL`")
    return 0


def run_label(args: argparse.Namespace) -> int:
    text = str(args.photo).strip().lstrip("@")
    if not (text.isascii() and text.isdigit()):
        raise CliplabError(f"{args.photo!r} is not a photo id: ids are whole numbers, as in @123.")
    example = labels.label_photo(open_catalog(), load_model(args), args.name, int(text), args.label,
                                 args.person or getpass.getuser())
    print(f"{example.action} @{text} as {example.label!r} (by {example.person})")
    return 0


def run_improve(args: argparse.Namespace) -> int:
    print(labels.improve_classifier(open_catalog(), load_model(args), args.name).message)
    return 0


def run_export(args: argparse.Namespace) -> int:
    for path in labels.export_classifier(open_catalog(), load_model(args), args.name, args.file, args.onnx):
        print(f"wrote {path}")
    return 0
