"""`cliplab train`: contrastive pre-training from scratch or fine-tuning, one CPU to many GPUs.

    cliplab train --preset demo                              # the demo model, from nothing
    cliplab train --data pairs.csv --model ViT-B/32 --steps 10000 --batch-size 256
    cliplab train --data shards/{000..099}.tar --init ViT-B/32 --lr 1e-5 --steps 2000
    torchrun --nproc_per_node 4 -m cliplab.app.cli train --data ... # data-parallel, features gathered
    cliplab train --out RUN_DIR --resume latest              # continue an interrupted run
"""

from __future__ import annotations

import argparse
import json

from cliplab.app.services import training as service
from cliplab.app.services.loading import check_device
from cliplab.app.services.training import DEMO_SHAPE, PRESETS, TrainOptions

_DEFAULTS = TrainOptions()


def train_main(args: argparse.Namespace) -> int:
    check_device(args.device)  # a sentence, not torch's AssertionError, for --device cuda without a GPU
    values = {k: v for k, v in vars(args).items() if k not in ("func", "command", "quiet")}
    values["progress"] = not args.quiet
    summary = service.start_training(values)
    if "final" in summary:
        print(json.dumps(summary, indent=2))
    return 0


def _bool(text: str) -> bool:
    return text.lower() in ("1", "true", "yes", "on")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a CLIP from scratch or fine-tune one on image-text pairs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Contrastive training as in the CLIP paper: symmetric cross-entropy over the scaled "
                    "cosine similarities, AdamW with decoupled weight decay on weights only, warm-up then "
                    "cosine decay, learnable temperature clamped at 100. Writes log.jsonl, curves.png/.html, "
                    "checkpoints/ and final/ into the run folder. Under torchrun every process trains a "
                    "shard of each batch (gloo on CPU, NCCL on GPU).",
        epilog=f"Presets: {', '.join(f'{n} ({v})' for n, v in PRESETS.items())}\n\n"
               "Unset options take the preset's value, else the default shown.",
    )
    arg = parser.add_argument
    arg("--preset", choices=sorted(PRESETS), help="a named recipe; 'demo' trains the demo model into assets/demo")
    arg("--data", help="'synthetic' (the generated world), a .csv/.tsv of image path + caption, a folder of "
                       "images with .txt captions beside them, or WebDataset shards (a.tar or 'dir/{000..009}.tar') "
                       f"(default {_DEFAULTS.data})")
    arg("--model", help="an architecture name (ViT-B/32, RN50, ...) or a custom shape such as "
                        f"'{DEMO_SHAPE}' (default {_DEFAULTS.model})")
    arg("--init", help="fine-tune from this checkpoint: an official name, 'demo', or a path engine.load accepts; "
                       "its architecture and vocabulary are used (--model is ignored)")
    arg("--resolution", type=int, help="train at this image size (pixels); with --init the checkpoint's image "
                                       "positional embedding is resized bicubically, as the paper fine-tunes "
                                       "ViT-L/14 at 336 px (default: the model's own)")
    arg("--out", help="the run folder (default CLIPLAB_HOME/runs/<date-time>)")
    arg("--resume", help="'latest' (the newest complete checkpoint in --out) or a checkpoints/step_N folder")
    arg("--batch-size", type=int, help=f"global contrastive batch over all processes (default {_DEFAULTS.batch_size})")
    arg("--accum", type=int, help="split each batch into this many micro-batches; features are cached so every "
                                  f"micro-batch still sees all negatives (default {_DEFAULTS.accum})")
    arg("--steps", type=int, help="optimiser steps to train")
    arg("--epochs", type=float, help="passes over a finite data set (instead of --steps)")
    arg("--lr", type=float, help=f"peak learning rate (default {_DEFAULTS.lr})")
    arg("--warmup", type=int, help=f"linear warm-up steps, capped at a fifth of the run (default {_DEFAULTS.warmup})")
    arg("--wd", type=float, help=f"decoupled weight decay on weight matrices only (default {_DEFAULTS.wd})")
    arg("--grad-clip", type=float, help="clip the global gradient norm to this value (default off)")
    arg("--precision", choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast precision: bf16, fp16 (CUDA, with a grad scaler), fp32; auto = fastest safe for the "
             "device (fp32 on a CPU without native bf16)")
    arg("--grad-checkpointing", type=_bool, metavar="true|false",
        help="recompute each residual block in the backward pass: less memory, ~30%% more compute")
    arg("--workers", type=int, help=f"DataLoader worker processes (default {_DEFAULTS.workers})")
    arg("--eval-every", type=int, help="evaluate zero-shot accuracy and retrieval R@1/5/10 on held-out data every "
                                       f"N steps, 0 = never (default {_DEFAULTS.eval_every})")
    arg("--eval-samples", type=int, help=f"held-out images per task / pairs (default {_DEFAULTS.eval_samples})")
    arg("--eval-data", help="held-out image-caption pairs for retrieval when --data is not synthetic")
    arg("--contrast-group", type=int, help="synthetic data: draw samples in groups of N that differ in one "
                                           "attribute only, hard negatives for each other (default 1 = independent)")
    arg("--save-every", type=int, help=f"checkpoint every N steps (default {_DEFAULTS.save_every})")
    arg("--log-every", type=int, help=f"log a train record every N steps (default {_DEFAULTS.log_every})")
    arg("--seed", type=int, help=f"seed of the model, the data order and the synthetic world (default {_DEFAULTS.seed})")
    arg("--device", help="cpu, cuda or cuda:N (default cuda when available)")
    arg("--vocab", type=int, help="train a byte-level BPE vocabulary with this many merges on the captions")
    arg("--merges", help="a BPE merges file to use (default: the official CLIP vocabulary)")
    arg("--context-length", type=int, help="text context length (default: the model's)")
    arg("--export", help="also write the final model, fp16, to this folder")
    arg("--max-minutes", type=float, help="stop and save after this many minutes")
    arg("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=train_main)
