"""`cliplab models` lists the models and what is on disk; `cliplab download NAME|vocab|all` fetches them.

    cliplab models
    cliplab download ViT-B/32          # verified by SHA-256, resumable, converted once to safetensors
    cliplab download vocab             # the official BPE vocabulary only
"""

from __future__ import annotations

import argparse

from app.services import models as service


def _human(n: float | None, unit: str = "") -> str:
    if n is None:
        return "-"
    for suffix in ("", "K", "M", "G"):
        if abs(n) < 1000 or suffix == "G":
            return f"{n:.0f}{suffix}{unit}" if suffix == "" else f"{n:.1f}{suffix}{unit}"
        n /= 1000
    return str(n)


def list_main(args: argparse.Namespace) -> int:
    rows = service.list_models()
    header = ("name", "embed", "px", "params", "on disk", "size")
    table = [header] + [(r["name"], str(r["embed_dim"] or "-"), str(r["resolution"] or "-"), _human(r["params"]),
                         "yes" if r["downloaded"] else "no", _human(r["size_bytes"], "B")) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    demo = rows[-1]
    print(f"\ndemo: {demo['description']}")
    print_inference()
    if not all(r["downloaded"] for r in rows[:-1]):
        print("Fetch an official model with `cliplab download NAME` (or `cliplab download all`).")
    return 0


def print_inference() -> None:
    """What runs here and why (engine.runtime.describe)."""
    from engine.runtime import MODE_ENV, describe
    info = describe()
    onnx = f"ONNX Runtime {info['onnxruntime']}" if info["onnxruntime"] else "no ONNX Runtime (PyTorch only)"
    print(f"\ninference: CPU {info['cpu']}, {info['threads']} threads, {onnx}{', CUDA' if info['cuda'] else ''}")
    print(f"  audits, evaluations, saved classifications: {info['reproducible']} (exact, PyTorch)")
    if info["forced"]:
        print(f"  indexing and search: {info['forced']} (set by {MODE_ENV})")
    elif not info["choices"]:
        print("  indexing and search: the fastest safe mode, measured on first use per model")
    for choice in info["choices"]:
        print(f"  indexing and search with {choice.model or 'a model'}: {choice.mode} ({choice.reason})")


def download_main(args: argparse.Namespace) -> int:
    for path in service.download_models(args.names, progress=not args.quiet, base_url=args.base_url):
        print(f"ready: {path}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list the official models, the demo model, and what is downloaded")
    parser.set_defaults(func=list_main)
    parser = subparsers.add_parser(
        "download", help="download official CLIP weights (or the vocabulary) once",
        description="Download OpenAI's released weights: streamed, resumable, verified by SHA-256, then "
                    "converted once to safetensors in the models folder (under CLIPLAB_HOME).")
    parser.add_argument("names", nargs="+", metavar="NAME",
                        help="an official model (e.g. ViT-B/32 or ViT-B-32), 'vocab', or 'all'")
    parser.add_argument("--base-url", help="a mirror: models at BASE/<sha256>/<file>.pt, the vocabulary at "
                                           "BASE/bpe_simple_vocab_16e6.txt.gz (env CLIPLAB_DOWNLOAD_BASE)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=download_main)
