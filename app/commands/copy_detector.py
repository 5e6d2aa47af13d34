"""cliplab copy-detector: show or prepare the copy detector that `cliplab duplicates` and `cliplab
overlap` use (the learned one is trained once per machine, about two minutes, then kept).

    cliplab copy-detector                      # which detector, its threshold, whether it is prepared
    cliplab copy-detector --train              # prepare the learned detector now (else at first use)
    cliplab copy-detector --train --steps 3000 --seed 7 --output my-detector.safetensors
    cliplab duplicates --detector my-detector.safetensors
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace

from cliplab.app.services import copy_detectors
from cliplab.app.services.copy_detectors import Recipe


def add_detector_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detector", default=None,
                        help="copy detector: 'learned' (default, trained once at first use), 'dct' (no training) "
                             "or a file from `cliplab copy-detector --train --output`")


def copy_detector_main(args: argparse.Namespace) -> int:
    if args.train:
        recipe = replace(Recipe(), **{k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None})
        detector = copy_detectors.prepare(recipe, output=args.output, force=args.force,
                                          on_progress=None if args.quiet else copy_detectors.console_progress())
        kept = args.output or copy_detectors.recipe_path(recipe)
        print(f"copy detector {detector.name} ready: threshold {detector.threshold:.4f}, kept in {kept}"
              + ("" if args.output is None else f"; use it with --detector {kept}"))
        return 0
    info = copy_detectors.describe(args.detector)
    if args.json:
        print(json.dumps(asdict(info), indent=2))
        return 0
    if info.prepared:
        print(f"copy detector {info.name} ({info.choice}): threshold {info.threshold:.4f}"
              + (f", kept in {info.path}" if info.path else ", no training needed"))
        facts = info.facts
        if facts.get("calibration_recall") is not None:
            print(f"calibrated on {facts['calibration_pictures']} held-out pictures (no two different ones reach it, "
                  f"{facts['calibration_near_misses_above']} near-miss twin(s) do): it finds "
                  f"{100 * facts['calibration_recall']:.0f}% of their Appendix C copies; trained in "
                  f"{facts.get('train_seconds', '?')} s")
    else:
        print(f"the learned copy detector is not prepared yet: the first `cliplab duplicates` or `cliplab overlap` "
              f"trains it (about two minutes), or run `cliplab copy-detector --train` now; it will be kept in "
              f"{info.path}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("copy-detector", help="show or prepare the copy detector of duplicates and overlap")
    add_detector_argument(p)
    p.add_argument("--train", action="store_true", help="prepare the learned detector now (kept; --force: again)")
    p.add_argument("--force", action="store_true", help="with --train: train again even if one is kept")
    p.add_argument("--steps", type=_positive, default=None, help=f"with --train: training steps (default {Recipe.steps})")
    p.add_argument("--seed", type=int, default=None, help=f"with --train: the training seed (default {Recipe.seed})")
    p.add_argument("--output", default=None, help="with --train: where to keep it (default: the data folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=copy_detector_main)
