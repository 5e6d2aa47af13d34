"""cliplab overlap: the paper's data-overlap analysis (section 5) of an evaluation set against a
reference set, with the copy detector.

    cliplab overlap eval_folder/ training_photos/
    cliplab overlap eval.csv library --label-column species --json
    cliplab overlap eval_folder/ refs.npz --threshold 0.95
    cliplab overlap --describe training_photos/ refs.npz     # describe a reference set once
    cliplab overlap eval_folder/ training_photos/ --detector dct   # the training-free detector

The copy detector is the learned one unless --detector says otherwise: the first run trains it (about
two minutes, once per machine; `cliplab copy-detector --train` does it ahead).
"""

from __future__ import annotations

import argparse
import json

from cliplab.app.commands.classify import add_classifier_arguments, parse_scale
from cliplab.app.commands.copy_detector import add_detector_argument
from cliplab.app.commands.models import add_model_arguments, load_model
from cliplab.app.services import copy_detectors, overlap
from cliplab.app.services.classify import load_templates
from cliplab.app.services.library import open_catalog, printable


def overlap_main(args: argparse.Namespace) -> int:
    progress = copy_detectors.console_progress()
    if args.describe:
        n = overlap.save_reference(args.eval_set, args.reference_set, args.detector, progress)
        print(f"described {n} reference image(s) into {args.reference_set}")
        return 0
    catalog = open_catalog()
    needs_model = not overlap.has_predictions(args.eval_set, args.label_column)
    report = overlap.run_overlap(catalog, args.eval_set, args.reference_set,
                                 load_model(args) if needs_model else None, threshold=args.threshold,
                                 templates=load_templates(args.templates), label_column=args.label_column,
                                 scale=parse_scale(args.scale), detector=args.detector, on_progress=progress)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    for line in overlap.report_lines(report):
        print(line)
    shown = [p for p in report.pairs if p.counted][: args.pairs]
    if shown:
        print(f"pairs (evaluation image <- reference image, copy score), first {len(shown)} of "
              f"{sum(p.counted for p in report.pairs)}:")
        for p in shown:
            mark = {True: "confirmed", False: "rejected", None: ""}[p.decision]
            print(f"  {p.score:.3f}  {printable(p.eval_path)}  <-  {printable(p.reference_path)}  {mark}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("overlap", help="accuracy on evaluation images with and without a copy in a "
                                              "reference (training) set: Overlap / Clean / All")
    p.add_argument("eval_set", metavar="EVAL_SET",
                   help="image folder with one sub-folder per class, or a CSV with path and label columns "
                        "(a prediction column is used instead of a model)")
    p.add_argument("reference_set", metavar="REFERENCE_SET",
                   help="image folder, 'library' (the indexed photos), or a descriptor file from --describe")
    p.add_argument("--threshold", type=float, default=None, help="copy score (default: the detector's, "
                                                                 "chosen for high precision)")
    p.add_argument("--label-column", default="label", help="the CSV column with each image's true label")
    p.add_argument("--pairs", type=int, default=20, help="how many detected pairs to print")
    p.add_argument("--describe", action="store_true",
                   help="describe the images of the folder EVAL_SET into the file REFERENCE_SET (.npz), "
                        "for later runs against a large reference set")
    p.add_argument("--json", action="store_true")
    add_detector_argument(p)
    add_classifier_arguments(p)
    add_model_arguments(p)
    p.set_defaults(func=overlap_main)
