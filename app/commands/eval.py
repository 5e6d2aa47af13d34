"""`cliplab eval zeroshot|probe|fewshot|retrieval`: measure a model on your own labelled data."""

from __future__ import annotations

import argparse
from pathlib import Path

from cliplab.app.commands.classify import add_classifier_arguments, parse_scale
from cliplab.app.commands.models import add_model_arguments, load_model
from cliplab.app.services.classify import load_templates
from cliplab.app.services.evaluate import eval_fewshot, eval_probe, eval_retrieval, eval_zeroshot, save_run
from cliplab.app.services.library import open_catalog
from cliplab.engine.errors import CliplabError

DATASET_HELP = "an image folder with one sub-folder per class, or a CSV file with path,label columns"


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model: zero-shot, linear probe, few-shot, retrieval")
    sub = parser.add_subparsers(dest="eval_command", metavar="KIND", required=True)

    zs = sub.add_parser("zeroshot", help="zero-shot accuracy, per-class accuracy and a confusion matrix")
    zs.add_argument("dataset", metavar="DATASET", help=DATASET_HELP)
    add_classifier_arguments(zs)
    add_common(zs)
    zs.set_defaults(func=run_zeroshot)

    probe = sub.add_parser("probe", help="logistic-regression linear probe (paper appendix A.3)")
    probe.add_argument("dataset", metavar="DATASET", help=DATASET_HELP)
    probe.add_argument("--test", help="a separate test dataset (otherwise a 60/20/20 split of DATASET)")
    probe.add_argument("--joint", action="store_true",
                       help="use the joint embedding instead of the features before the projection")
    probe.add_argument("--seed", type=int, default=0, help="seed of the split")
    add_common(probe)
    probe.set_defaults(func=run_probe)

    few = sub.add_parser("fewshot", help="zero-shot, k-shot linear probes and the improved head (figure 6)")
    few.add_argument("dataset", metavar="DATASET", help=DATASET_HELP)
    few.add_argument("--shots", default="1,2,4,8,16", help="examples per class (default 1,2,4,8,16)")
    few.add_argument("--seeds", type=int, default=3, help="sampling seeds per k (default 3)")
    few.add_argument("--joint", action="store_true", help="probe on the joint embedding")
    add_classifier_arguments(few)
    add_common(few)
    few.set_defaults(func=run_fewshot)

    ret = sub.add_parser("retrieval", help="image<->text recall@1/5/10 with several captions per image")
    ret.add_argument("captions", metavar="CAPTIONS.csv", help="a CSV with image,caption rows (paths relative to it)")
    ret.add_argument("--prefix", default="", help='text put before every caption, e.g. "a photo of " (appendix E.1)')
    add_model_arguments(ret)
    add_no_save(ret)
    ret.set_defaults(func=run_retrieval)


def add_common(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--out", help="folder for the report files (default: eval-<dataset name> here)")
    add_no_save(parser)


def add_no_save(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-save", dest="save", action="store_false",
                        help="do not store the run in the catalog database (the dashboard lists stored runs)")


def record(args: argparse.Namespace, kind: str, bundle, dataset: str, metrics: dict, options: dict) -> None:
    if args.save:
        run_id = save_run(open_catalog(), kind, bundle, dataset, metrics, {"model": str(args.model), **options})
        print(f"\nsaved as evaluation run {run_id} (see it with `cliplab dashboard`)")


def out_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else Path(f"eval-{Path(args.dataset).stem or 'dataset'}")


def print_metrics(metrics: dict) -> None:
    line = f"top-1 {100 * metrics['top1']:.2f}%"
    if "top5" in metrics:
        line += f"   top-5 {100 * metrics['top5']:.2f}%"
    line += f"   mean per-class recall {100 * metrics['mean_per_class_recall']:.2f}%"
    print(f"{metrics['images']} images, {metrics['classes']} classes")
    print(line)
    table = metrics["per_class"]
    width = max(5, *(len(str(c)) for c in table.label))
    print(f"\n{'class':<{width}}  images  accuracy")
    for row in table.itertuples():
        print(f"{row.label:<{width}}  {row.images:>6}  {100 * row.accuracy:>7.2f}%")


def run_zeroshot(args: argparse.Namespace) -> int:
    bundle = load_model(args)
    metrics = eval_zeroshot(bundle, args.dataset, load_templates(args.templates), out_dir(args),
                            scale=parse_scale(args.scale))
    print_metrics(metrics)
    print("\n" + "\n".join(f"wrote {f}" for f in metrics["files"]))
    record(args, "zeroshot", bundle, args.dataset, metrics, {"templates": args.templates, "scale": args.scale})
    return 0


def run_probe(args: argparse.Namespace) -> int:
    bundle = load_model(args)
    metrics = eval_probe(bundle, args.dataset, args.test, joint=args.joint, seed=args.seed,
                         out_dir=out_dir(args))
    print(f"linear probe on {metrics['features']}: C = {metrics['C']:.3g} "
          f"({len(metrics['search'])} values searched); train {metrics['train']}, "
          f"validation {metrics['validation']}, test {metrics['test']}")
    print_metrics(metrics)
    print("\n" + "\n".join(f"wrote {f}" for f in metrics["files"]))
    record(args, "probe", bundle, args.dataset, metrics,
           {"test": args.test, "joint": args.joint, "seed": args.seed})
    return 0


def run_fewshot(args: argparse.Namespace) -> int:
    try:
        shots = [int(s) for s in args.shots.split(",") if s.strip()]
    except ValueError:
        raise CliplabError(f"--shots takes comma-separated whole numbers, not {args.shots!r}.") from None
    if args.seeds < 1 or not shots or min(shots) < 1:
        raise CliplabError("--shots and --seeds must be positive.")
    bundle = load_model(args)
    metrics = eval_fewshot(bundle, args.dataset, load_templates(args.templates), shots,
                           tuple(range(args.seeds)), joint=args.joint, out_dir=out_dir(args),
                           scale=parse_scale(args.scale))
    print(f"pool {metrics['pool']} images, test {metrics['test']} images; chance {100 * metrics['chance']:.1f}%")
    print(f"zero-shot top-1: {100 * metrics['zero_shot_top1']:.2f}%")
    for row in metrics["fewshot"].itertuples():
        print(f"{row.shots:>3}-shot probe: {100 * row.mean:.2f}% ± {100 * row.std:.2f} ({row.seeds} seeds)")
    for row in metrics["improved"].itertuples():
        print(f"{row.shots:>3}-shot improved head (zero-shot prior): {100 * row.mean:.2f}% ± {100 * row.std:.2f} "
              f"({row.seeds} seeds)")
    effective = metrics["effective_shots"]
    print("zero-shot matches a " + (f"{effective:.1f}-shot probe" if effective is not None
                                    else "probe with more examples than measured"))
    print("\n" + "\n".join(f"wrote {f}" for f in metrics["files"]))
    record(args, "fewshot", bundle, args.dataset, metrics, {"templates": args.templates, "scale": args.scale,
                                                            "shots": shots, "seeds": args.seeds, "joint": args.joint})
    return 0


def run_retrieval(args: argparse.Namespace) -> int:
    bundle = load_model(args)
    result = eval_retrieval(bundle, args.captions, prefix=args.prefix)
    print(f"{result['n_images']} images, {result['n_texts']} captions"
          + (f', prefix "{args.prefix}"' if args.prefix else ""))
    for direction in ("image_to_text", "text_to_image"):
        print(f"{direction.replace('_', ' '):<14} " + "   ".join(
            f"R@{k} {100 * v:.2f}%" for k, v in result[direction].items()))
    record(args, "retrieval", bundle, args.captions, result, {"prefix": args.prefix})
    return 0
