"""`cliplab watch [FOLDERS]`: keep the library current while it runs (new, changed, moved and deleted
photos reach the catalog within seconds; network shares are polled; a reconcile scan catches the rest).

    cliplab watch                      # every library folder
    cliplab watch ~/Pictures /mnt/nas/photos --poll /mnt/nas/photos --poll-interval 60
"""

from __future__ import annotations

import argparse
import signal
import threading

from cliplab.app.commands.library import _at_least
from cliplab.app.commands.models import add_model_arguments, load_model
from cliplab.app.services import watching
from cliplab.app.services.library import open_catalog, printable_text


def run(args: argparse.Namespace) -> int:
    catalog = open_catalog()
    bundle = load_model(args)
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    watcher = watching.start_watcher(
        catalog, bundle, args.folders or None, poll=tuple(args.poll), poll_all=args.poll_all,
        poll_interval=args.poll_interval, reconcile=args.reconcile_interval, settle=args.settle,
        workers=args.workers, on_batch=lambda line: print(printable_text(line), flush=True))
    print(f"watching with {bundle.name} (Ctrl-C to stop); a reconcile scan runs first", flush=True)
    shown = ""
    try:
        while not stop.wait(1.0):
            modes = "; ".join(f"{f.path}: {f.mode}{f' ({f.why})' if f.why else ''}"
                              for f in watching.status(catalog, watcher).folders)
            if modes != shown:
                print(printable_text(modes), flush=True)
                shown = modes
            if args.once and watcher.state.batches and watcher.wait_idle(0.1):
                break
    finally:
        watcher.stop()
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "watch", help="keep the library current: watch folders, poll network shares, reconcile",
        description="Watch library folders (none given: all of them) and index new, changed, moved and deleted "
                    "photos as they happen. Folders on network or FUSE file systems (NFS, SMB, sshfs...) are polled, "
                    "since they send no change events; a periodic reconcile scan catches anything missed. A share "
                    "that goes away marks its photos offline (never deleted). Killing it is safe: the next start "
                    "reconciles what changed meanwhile.")
    p.add_argument("folders", nargs="*", help="folders to watch (added to the library); none: every library folder")
    add_model_arguments(p, purpose="index")
    p.add_argument("--poll", metavar="FOLDER", action="append", default=[],
                   help="poll this folder instead of waiting for change events (repeatable)")
    p.add_argument("--poll-all", action="store_true", help="poll every folder (no native change events)")
    p.add_argument("--poll-interval", type=_at_least(0.1, float), default=watching.DEFAULTS["poll_interval"],
                   metavar="SECONDS", help="seconds between two looks at a polled folder (default 30)")
    p.add_argument("--reconcile-interval", type=_at_least(0, float), default=watching.DEFAULTS["reconcile"],
                   metavar="SECONDS", help="seconds between reconcile scans of every folder (default 3600; 0: only at "
                                           "start)")
    p.add_argument("--settle", type=_at_least(0, float), default=watching.DEFAULTS["settle"], metavar="SECONDS",
                   help="a file is taken once its size and time stay the same this long (default 2)")
    p.add_argument("--workers", type=_at_least(0), default=1, help="decoding processes (default 1)")
    p.add_argument("--once", action="store_true", help="stop after the first reconcile (and what it queued)")
    p.set_defaults(func=run)
