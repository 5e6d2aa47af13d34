"""`cliplab classify IMAGE... --classes "cat,dog"`: zero-shot probabilities for your own classes."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cliplab.app.commands.models import add_model_arguments, load_model
from cliplab.app.services.classify import (
    TEMPLATE_PRESETS,
    classify_images,
    classify_with_file,
    export_csv,
    folder_images,
    load_templates,
    parse_classes,
)
from cliplab.engine.errors import CliplabError


def add_classifier_arguments(parser: argparse.ArgumentParser, default_templates: str = "default") -> None:
    parser.add_argument("--templates", default=default_templates,
                        help=f"prompt templates: {', '.join(TEMPLATE_PRESETS)} or a file with one template "
                             f"per line, '{{}}' for the class name (default: {default_templates})")
    parser.add_argument("--scale", default="100",
                        help="softmax temperature: 100 (as the reference notebooks, default) or 'model' "
                             "for the model's own learned scale")


def parse_scale(text: str) -> float | str:
    if text == "model":
        return text
    try:
        return float(text)
    except ValueError:
        raise CliplabError(f"--scale takes a number or 'model', not {text!r}.") from None


def register(subparsers) -> None:
    parser = subparsers.add_parser("classify", help="zero-shot classify images with your own class names",
                                   description="Print each image's class probabilities under your label set. "
                                               "A folder argument classifies every image inside it.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    parser.add_argument("--classes", help='comma-separated class names, e.g. "cat,dog,bird"')
    parser.add_argument("--classes-file", help="a file with one class name per line")
    parser.add_argument("--classifier", metavar="FILE",
                        help="an exported classifier file (`cliplab labels export`): its classes, weights and "
                             "threshold instead of --classes")
    add_classifier_arguments(parser)
    add_model_arguments(parser, text_model=True)
    parser.add_argument("--top", type=int, default=5, help="labels shown per image (default 5)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="also list every label with probability >= P (a fraction: 0.04 = 4%%)")
    parser.add_argument("--csv", help="write every image's probabilities to this CSV file")
    parser.add_argument("--truncate", action="store_true",
                        help="cut prompts longer than the model's context (77 tokens) to fit, instead of refusing them")
    parser.set_defaults(func=run)


def expand_paths(items: list[str]) -> list[Path]:
    paths: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            paths += folder_images(path)
        elif path.exists():
            paths.append(path)
        else:
            raise CliplabError(f"{item} does not exist.")
    return paths


def display_names(paths: list[Path]) -> list[str]:
    """File names, or paths relative to their common folder when names repeat (blue/0.png, red/0.png)."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    common = Path(os.path.commonpath([p.resolve() for p in paths]))
    return [str(p.resolve().relative_to(common)) for p in paths]


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise CliplabError("--top must be at least 1.")
    if args.classifier:
        if args.classes or args.classes_file:
            raise CliplabError("--classifier brings its own classes: leave out --classes and --classes-file.")
        paths = expand_paths(args.images)
        result = classify_with_file(load_model(args), paths, args.classifier, k=args.top, threshold=args.threshold,
                                    progress=len(paths) > 8)
        classes = result.classifier.classnames
    else:
        classes = parse_classes(args.classes, args.classes_file)
        templates = load_templates(args.templates)
        paths = expand_paths(args.images)
        result = classify_images(load_model(args), paths, classes, templates, k=args.top, threshold=args.threshold,
                                 scale=parse_scale(args.scale), progress=len(paths) > 8, truncate=args.truncate)
    names = display_names(result.paths)
    width = max(len(n) for n in names + ["image"])
    if len(classes) <= args.top:  # every probability fits: one column per class
        label_width = max(8, *(len(c) for c in classes))
        print(f"{'image':<{width}}  " + "  ".join(f"{c:>{label_width}}" for c in classes))
        for name, row in zip(names, result.probs):
            print(f"{name:<{width}}  " + "  ".join(f"{100 * p:>{label_width - 1}.1f}%" for p in row))
    else:
        for name, top in zip(names, result.top):
            print(f"{name:<{width}}  " + "  ".join(f"{label} {100 * p:.1f}%" for label, p in top))
    if result.above_threshold is not None:
        print(f"\nlabels with probability >= {100 * result.threshold:g}%:")
        for name, labels in zip(names, result.above_threshold):
            print(f"{name:<{width}}  " + (", ".join(f"{label} ({100 * p:.1f}%)" for label, p in labels) or "-"))
    if len(result.paths) > 1:
        counts = ", ".join(f"{c}: {n}" for c, n, _share in result.count_rows() if n)
        print(f"\ntop-1 counts over {len(result.paths)} images: {counts}")
    for path, reason in result.skipped:
        print(f"skipped {path} ({reason})")
    if args.csv:
        print(f"wrote {export_csv(result, args.csv)}")
    return 0
