"""`cliplab captions`: nearest texts of an image, nearest images of a text, and stepping through a
captioned dataset both ways, against a collection file (captions CSV, .txt, or classifier:NAME).

    cliplab captions --collection flickr.csv --image dog.jpg -k 5
    cliplab captions --collection flickr.csv --text "a dog on a beach"
    cliplab captions --collection flickr.csv --browse-image 12
"""

from __future__ import annotations

import argparse

from cliplab.app.commands.models import add_model_arguments, load_model
from cliplab.app.services import captions as service
from cliplab.app.services.library import open_catalog

MARK_HELP = "* marks a true pair (the image's own caption, or the caption's own image)"


def register(subparsers) -> None:
    p = subparsers.add_parser("captions", help="image -> text and text -> image over a captions CSV or text list",
                              description="Rank the texts of a collection for an image, the images of a captioned "
                                          f"dataset for a text, or browse the dataset both ways. {MARK_HELP}.")
    p.add_argument("--collection", required=True, metavar="CSV|TXT",
                   help="a captions CSV (image,caption rows, as `cliplab eval retrieval` reads), a .txt with one "
                        "text per line, or classifier:NAME (a saved classifier's classes)")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", metavar="PATH", help="rank the collection's texts for this image")
    query.add_argument("--text", help="rank the dataset's images for this text (captions CSV only)")
    query.add_argument("--browse-image", type=int, metavar="N", help="image N of the dataset (0-based): its nearest "
                                                                     "captions and the rank of its own")
    query.add_argument("--browse-caption", type=int, metavar="N", help="caption N of the dataset (0-based): its "
                                                                       "nearest images and the rank of its own")
    p.add_argument("-k", type=int, default=10, help="how many results to show (default 10)")
    add_model_arguments(p)
    p.set_defaults(func=run)


def print_texts(matches: list[service.TextMatch]) -> None:
    print(f"{'rank':>4}  {'score':>7}  true  text")
    for m in matches:
        print(f"{m.rank:>4}  {m.score:>7.4f}  {'*' if m.true_pair else ' ':^4}  {m.text}")


def print_images(matches: list[service.ImageMatch]) -> None:
    print(f"{'rank':>4}  {'score':>7}  true  image")
    for m in matches:
        print(f"{m.rank:>4}  {m.score:>7.4f}  {'*' if m.true_pair else ' ':^4}  {m.path}")


def run(args: argparse.Namespace) -> int:
    bundle = load_model(args)
    catalog = open_catalog()  # classifier:NAME and collection:NAME are read from it
    if args.image is not None:
        print_texts(service.image_to_texts(bundle, args.image, args.collection, args.k, catalog=catalog))
    elif args.text is not None:
        print_images(service.text_to_images(bundle, args.text, args.collection, args.k, catalog=catalog))
    else:
        side = "image" if args.browse_image is not None else "caption"
        index = args.browse_image if side == "image" else args.browse_caption
        step = service.browse(bundle, args.collection, index, side, args.k, catalog=catalog)
        if side == "image":
            print(f"image {step.index} of {step.total}: {step.image}")
            print("its captions: " + " | ".join(step.true_captions))
            print(f"rank of its best caption among all captions: {step.rank}\n")
            print_texts(step.texts)
        else:
            print(f"caption {step.index} of {step.total}: {step.text}")
            print(f"its image: {step.image}")
            print(f"rank of its image among all images: {step.rank}\n")
            print_images(step.images)
    print(f"\n{MARK_HELP}.")
    return 0
