"""`cliplab models` lists the releases (size, ImageNet top-1, on disk or not); `cliplab download NAME|vocab|all`
fetches them.

    cliplab models
    cliplab download ViT-B/32          # verified by SHA-256, resumable, converted once to safetensors
    cliplab download ViT-L-14-dfn2b    # from the Hugging Face hub, verified by the hash the hub reports
    cliplab download vocab             # the official BPE vocabulary only
"""

from __future__ import annotations

import argparse

from cliplab.app.services import models as service
from cliplab.app.services.loading import MODE_NAMES, ModelBundle, default_model

ARCH_HELP = ("the architecture of a checkpoint that does not say its activation and head width: a name "
             "(ViT-B-32 is GELU as in open_clip, ViT-B-32-quickgelu QuickGELU, ViT-B/32 OpenAI's; `cliplab models "
             "--arches` lists them) or 'gelu' / 'quickgelu' (every shape from the file, heads 64 wide; "
             "'gelu,head_width=80')")
TORCHSCRIPT_HELP = ("load a TorchScript archive that is not an official OpenAI release. RISK: a TorchScript file is "
                    "a program and runs when it is loaded; use only a file you trust (better: its state dict as "
                    "safetensors)")


PRECISIONS = {"reproducible": ("auto", "fp32", "bf16", "fp16"), "index": MODE_NAMES}  # the one vocabulary
PRECISION_HELP = {
    "reproducible": "mode: fp32 (exact, default), bf16, fp16 (CUDA), or auto (the fastest safe of these on this "
                    "machine); results record it",
    "index": "inference mode for new libraries: auto (default: the fastest safe mode on this machine, measured once), "
             "fp32 (exact), bf16, fp16 (CUDA), onnx-fp32 or onnx-int8; a library keeps the mode it was indexed in "
             "and its queries are embedded in it",
}


TEXT_MODEL_HELP = ("a multilingual text tower (e.g. M-CLIP/XLM-Roberta-Large-Vit-B-32, downloaded first, or its "
                   "folder) that embeds the texts instead of the model's own text tower; it must be one made for "
                   "the model's image tower (`cliplab models` shows what each pairs with), and then searches a "
                   "library indexed with that model without re-embedding a photo")


def add_model_arguments(parser: argparse.ArgumentParser, purpose: str = "reproducible",
                        text_model: bool = False) -> None:
    """--model, --device, --precision, --arch and --allow-torchscript: the options of every command that
    loads a model, with one default model ($CLIPLAB_MODEL, else demo). purpose: what the command's results
    are ('reproducible' or 'index'), which decides the default mode; load_model(args) reads them.
    text_model: also --text-model, a paired multilingual text tower (commands that embed texts)."""
    parser.add_argument("--model", default=default_model(),
                        help="an official name (e.g. ViT-B/32, downloaded first), 'demo' or a checkpoint path "
                             "(default: $CLIPLAB_MODEL, else demo)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--precision", choices=PRECISIONS[purpose], default=None, help=PRECISION_HELP[purpose])
    _add_checkpoint_arguments(parser)
    if text_model:
        parser.add_argument("--text-model", default=None, metavar="NAME", help=TEXT_MODEL_HELP)
    parser.set_defaults(model_purpose=purpose)


def _add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", help=ARCH_HELP)
    parser.add_argument("--allow-torchscript", action="store_true", help=TORCHSCRIPT_HELP)


def model_options(args: argparse.Namespace) -> dict:
    """The one loader's keyword arguments (ModelBundle.load) from the options add_model_arguments declared."""
    return {"model": args.model, "device": args.device, "precision": args.precision,
            "purpose": getattr(args, "model_purpose", "reproducible"), "arch": args.arch,
            "allow_torchscript": args.allow_torchscript,
            **({"text_model": args.text_model} if getattr(args, "text_model", None) else {})}


def load_model(args: argparse.Namespace) -> ModelBundle:
    """The model handle a command's options name, through the one loader."""
    return ModelBundle.load(**model_options(args))


def _human(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for suffix in ("", "K", "M", "G"):
        if abs(n) < 1000 or suffix == "G":
            return f"{n:.0f}{suffix}{unit}" if suffix == "" else f"{n:.1f}{suffix}{unit}"
        n /= 1000
    return str(n)


def list_main(args: argparse.Namespace) -> int:
    if args.arches:
        print("\n".join(service.architecture_names()))
        print("gelu / quickgelu (every shape from the file, heads 64 wide; e.g. gelu,head_width=80)")
        return 0
    rows = service.list_models()
    header = ("name", "embed", "px", "params", "on disk", "size", "ImageNet", "architecture", "trained on")
    table = [header] + [(r["name"], str(r["embed_dim"] or "-"), str(r["resolution"] or "-"), _human(r["params"]),
                         "yes" if r["downloaded"] else "no",
                         _human(r["size_bytes"] if r["downloaded"] else r["download_bytes"], "B"),
                         f"{r['imagenet_top1']:.2f}" if r["imagenet_top1"] else "-", r["arch"] or "-", r["data"])
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print_multilingual([r for r in rows if r.get("kind")])
    demo = rows[-1]
    print(f"\ndemo: {demo['description']}")
    print("ImageNet: published zero-shot top-1 (%, open_clip's results table); size: the download, or the "
          "folder once on disk.")
    print_inference()
    if not all(r["downloaded"] for r in rows[:-1]):
        print("Fetch one with `cliplab download NAME` (`cliplab download all` fetches OpenAI's nine).")
    return 0


def print_multilingual(rows: list[dict]) -> None:
    """What each multilingual release pairs with, its languages and its published multilingual figures."""
    if not rows:
        return
    print("\nmultilingual (search and classify in other languages; a text tower pairs with the image model named, "
          "e.g. `cliplab search --model ViT-B/32 --text-model M-CLIP/XLM-Roberta-Large-Vit-B-32 \"ein Hund\"`):")
    for row in rows:
        pairs = f"pairs with {', '.join(row['pairs_with'])}" if row["kind"] == "text-tower" else "a whole CLIP"
        figures = row.get("retrieval") or {}
        scores = " ".join(f"{lang} {value:g}" for lang, value in (figures.get("scores") or {}).items())
        print(f"  {row['name']}: {pairs}; {row['languages']}")
        if scores:
            print(f"    {scores}  ({figures.get('metric', '')})")


def print_inference() -> None:
    """What runs here and why (the models service's inference summary)."""
    for line in service.inference_lines():
        print(line)


def download_main(args: argparse.Namespace) -> int:
    for path in service.download_models(args.names, progress=not args.quiet, base_url=args.base_url):
        print(f"ready: {path}")
    return 0


def convert_main(args: argparse.Namespace) -> int:
    folder = service.import_checkpoint(args.checkpoint, arch=args.arch, allow_torchscript=args.allow_torchscript,
                                       name=args.name)
    print(f"ready: {folder}  (load it with --model {folder}; every command and the app read it as it is)")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the released models (size, ImageNet top-1), the demo model, "
                                                  "and what is downloaded")
    parser.add_argument("--arches", action="store_true", help="list the architecture names --arch accepts")
    parser.set_defaults(func=list_main)
    parser = subparsers.add_parser(
        "convert", help="convert a checkpoint once to cliplab's format (its architecture then travels with it)",
        description="Read a checkpoint in any format cliplab loads (naming its architecture with --arch where the "
                    "file does not say it) and write cliplab's folder: model.safetensors + config.json with the "
                    "architecture and preprocessing, under the models folder.")
    parser.add_argument("checkpoint", help="the checkpoint file or folder")
    parser.add_argument("--name", help="the converted model's name (default: the file's name)")
    _add_checkpoint_arguments(parser)
    parser.set_defaults(func=convert_main)
    parser = subparsers.add_parser(
        "download", help="download released CLIP weights (or the vocabulary) once",
        description="Download released weights by name (`cliplab models` lists them): streamed, resumable, "
                    "verified by SHA-256 (pinned for OpenAI's, as the hub reports it for the others), then "
                    "converted once to safetensors in the models folder (under CLIPLAB_HOME).")
    parser.add_argument("names", nargs="+", metavar="NAME",
                        help="a release (e.g. ViT-B/32, ViT-B-32, ViT-H-14-laion2b), 'vocab', or 'all' (OpenAI's nine)")
    parser.add_argument("--base-url", help="a mirror: models at BASE/<sha256>/<file>.pt, the vocabulary at "
                                           "BASE/bpe_simple_vocab_16e6.txt.gz (env CLIPLAB_DOWNLOAD_BASE)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=download_main)
