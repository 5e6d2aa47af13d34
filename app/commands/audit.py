"""`cliplab audit`: bias audits of a label set on a dataset with group columns (the paper's FairFace probes).

    cliplab audit --dataset FAIRFACE_DIR --labels paper --add child --sample 2000 --seed 0 --out report.html
    cliplab audit --dataset demo          # the demo model's world, its label set, search bias and gaps
    cliplab audit --dataset DOLLAR_STREET_DIR --preset datacomp   # worst-group accuracy by income and region
    cliplab audit list | show ID [--json|--csv] | rerun ID | diff A B
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cliplab.app.commands.models import add_model_arguments, load_model, model_options
from cliplab.app.services import audit as service
from cliplab.app.services import loading
from cliplab.app.services.audit import PAPER_THRESHOLDS, AuditOptions, AuditResult, to_frame
from cliplab.app.services.library import open_catalog
from cliplab.engine.errors import CliplabError


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliplabError(f"Give thresholds as comma-separated fractions (0.005,0.04), not {text!r}.") from None


def _names(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def _queries(entries: list[str]) -> list[str]:
    """Each entry a sentence, or a file whose every non-empty line is one query."""
    out: list[str] = []
    for entry in entries:
        path = Path(entry)
        if path.suffix.lower() in (".txt", ".csv") or path.is_file():
            if not path.is_file():
                raise CliplabError(f"No such query file: {entry}. Give sentences, or a file with one query per line.")
            out += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            out.append(entry)
    return out


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "audit", help="audit a label set for bias on a dataset with group columns (FairFace)",
        description="Run the paper's FairFace bias probes, or the same measurements for any label set and any "
                    "CSV with group columns; saves a session and writes a report. Also: audit list, "
                    "audit show ID, audit rerun ID, audit diff A B.")
    parser.add_argument("action", nargs="?", choices=list(ACTION_RUNS), help="manage saved sessions instead of running")
    parser.add_argument("ids", nargs="*", metavar="ID", help="session id(s) (a unique prefix is enough)")
    parser.add_argument("--dataset", help="FairFace's folder (fairface_label_{train,val}.csv), a Dollar Street or "
                                          "GeoDE folder, a CSV, or 'demo' (the demo model's world, written once)")
    parser.add_argument("--split", default="val", help="FairFace split: val (default) or train")
    parser.add_argument("--labels", help="label set: paper (default; demo for the demo dataset), paper_child, demo, "
                                         "or a YAML/JSON file")
    parser.add_argument("--add", help="comma-separated classes for a second label set B = labels + these "
                                      "(e.g. child: the paper's class-design experiment)")
    parser.add_argument("--sample", type=int, help="audit a random sample of N images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample, bootstrap and probe (default 0)")
    add_model_arguments(parser)
    parser.add_argument("--group-columns", help="comma-separated group columns (default for FairFace: race,gender,age)")
    parser.add_argument("--templates", nargs="+", default=[],
                        help="prompt-sensitivity variants: templates with {} or preset names/files (each line one variant)")
    parser.add_argument("--thresholds", default=",".join(f"{t:g}" for t in PAPER_THRESHOLDS),
                        help="multi-label thresholds as fractions (default 0.005,0.04: the paper's 0.5%% and 4%%)")
    parser.add_argument("--min-count", type=int, default=5, help="threshold tests skip labels given to fewer images (5)")
    parser.add_argument("--probe-folds", type=int, default=3, help="linear-probe cross-fitting folds; 0 skips it (3)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    parser.add_argument("--service-test", action="store_true", help="FairFace: only rows with service_test True")
    parser.add_argument("--padding", help="FairFace image release, recorded with the session (0.25 or 1.25)")
    parser.add_argument("--label-column", help="the CSV column holding each image's class: zero-shot accuracy per "
                                               "group, worst group and gap (Dollar Street and GeoDE: automatic)")
    parser.add_argument("--preset", choices=["paper", "datacomp"], default="paper",
                        help="report layout: paper (default) or datacomp (worst-group accuracy first; needs a label column)")
    parser.add_argument("--queries", nargs="+", default=[],
                        help="neutral search queries for search bias (sentences, or files with one per line); "
                             "default: the label set's own")
    parser.add_argument("--k", type=int, default=10, help="search bias: the top K images ranked per query (10)")
    parser.add_argument("--out", help="write the report: .html (default kind), .json or .csv")
    parser.add_argument("--json", action="store_true", help="show/diff: print JSON")
    parser.add_argument("--csv", action="store_true", help="show: print the tables as CSV")
    parser.set_defaults(func=main)


def _print_summary(result: AuditResult) -> None:
    prov = result.provenance
    precision = f", {prov['model']['precision']}" if prov["model"].get("precision") else ""
    print(f"audited {prov['dataset']['images']} images with {prov['model']['name']} "
          f"({prov['model']['fingerprint']}{precision}), label set {' vs '.join(v for v in prov['label_sets'].values() if v)}")
    for line in result.headline:
        print(f"  {line}")
    if result.warnings:
        print(f"  {len(result.warnings)} small-cell warning(s); see the report")
    for note in result.notes:
        print(f"  note: {note}")


def _list(args: argparse.Namespace) -> int:
    sessions = service.list_sessions(open_catalog())  # the sessions live in the catalog database
    if args.json:
        print(json.dumps(sessions, indent=1))
        return 0
    for s in sessions:
        print(f"{s['id']}  {s['created_at']}  {s['model']}  {s['label_sets']}  {s['images']} images  "
              f"{s['dataset']}" + (f"  (re-run of {s['rerun_of']})" if s["rerun_of"] else ""))
    return 0


def _show(args: argparse.Namespace) -> int:
    result = service.show(open_catalog(), args.ids[0])
    if args.out:
        print(f"wrote {service.export(result, args.out)}")
    elif args.json:
        print(json.dumps(result.to_dict(), indent=1))
    elif args.csv:
        to_frame(result).to_csv(sys.stdout, index=False)
    else:
        print(f"session {result.session_id}")
        _print_summary(result)
    return 0


def _rerun(args: argparse.Namespace) -> int:
    catalog = open_catalog()
    saved = service.show(catalog, args.ids[0])
    bundle = None  # the service loads the recorded model in the recorded precision
    if args.arch or args.allow_torchscript:
        bundle = loading.ModelBundle.load(**{**model_options(args), "model": saved.options.model,
                                             "precision": service.recorded_precision(saved)})
    fresh, differences = service.rerun(catalog, args.ids[0], args.out, bundle, device=args.device)
    _print_summary(fresh)
    print(f"session {fresh.session_id} (re-run of {saved.session_id})")
    if differences:
        print(f"{len(differences)} difference(s) from the saved session:")
        for line in differences[:20]:
            print(f"  {line}")
        return 1
    print("re-run matches the saved session: every table has the same numbers")
    return 0


def _diff(args: argparse.Namespace) -> int:
    result = service.diff(open_catalog(), *args.ids)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    print(f"{result.images} shared images; focus categories {', '.join(result.focus)}; "
          f"label sets {result.label_sets[0]} -> {result.label_sets[1]}")
    for row in result.label_set_diff:
        print(f"  {row.grouping.name:>8} {row.group.name:<20} n={row.n:<6} {row.share_a:6.1%} -> "
              f"{row.share_b:6.1%}  change {row.change:+.1%} [{row.change_low:+.1%}, "
              f"{row.change_high:+.1%}]  McNemar p={row.p:.2g}")
    return 0


ACTION_RUNS = {"list": _list, "show": _show, "rerun": _rerun, "diff": _diff}
IDS_NEEDED = {"list": 0, "show": 1, "rerun": 1, "diff": 2}


def main(args: argparse.Namespace) -> int:
    if args.action is None:
        return _run(args)
    needed = IDS_NEEDED[args.action]
    if len(args.ids) != needed:
        raise CliplabError(f"`cliplab audit {args.action}` takes {needed} session id(s), got {len(args.ids)}.")
    return ACTION_RUNS[args.action](args)


def _run(args: argparse.Namespace) -> int:
    if not args.dataset:
        raise CliplabError("Give --dataset (FairFace's folder or a CSV), or one of: audit list, show ID, "
                           "rerun ID, diff A B.")
    dataset, labels, columns = args.dataset, args.labels or "paper", _names(args.group_columns) or None
    if dataset == "demo":  # the demo model's world: its CSV, its group columns, its label set
        dataset, demo_columns = service.demo_dataset()
        labels, columns = args.labels or "demo", columns or _names(demo_columns)
    options = AuditOptions(dataset=dataset, labels=labels, add=_names(args.add), split=args.split,
                           sample=args.sample, seed=args.seed, model=args.model,
                           group_columns=columns, templates=args.templates,
                           thresholds=_floats(args.thresholds), min_count=args.min_count,
                           probe_folds=args.probe_folds, n_boot=args.bootstrap,
                           service_test_only=args.service_test, padding=args.padding,
                           label_column=args.label_column, search_queries=_queries(args.queries),
                           search_k=args.k, preset=args.preset)
    bundle = load_model(args)
    result = service.run(open_catalog(), options, args.out, bundle)  # the exact precision, as in the app
    _print_summary(result)
    if args.out:
        print(f"report: {args.out}")
    print(f"session {result.session_id}")
    return 0
