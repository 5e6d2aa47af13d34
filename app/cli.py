"""The `cliplab` command: one subcommand module per area under app/commands/."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from cliplab.engine.errors import CliplabError

# Each module in app/commands/ defines register(subparsers) and sets func on its parsers.
COMMAND_MODULES = [
    "models",
    "classify",
    "eval",
    "audit",
    "app",
    "library",
    "watch",
    "train",
    "dashboard",
    "captions",
    "labels",
    "overlap",
    "copy_detector",
    "clip",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cliplab",
        description="CLIP from scratch: classify with your own classes, search your photos, "
                    "audit class design, train.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"cliplab.app.commands.{name}").register(sub)
    return parser


# Exit codes: 0 done, 2 a user error (one sentence after "error: ", as argparse's own usage errors),
# 1 a bug (a sentence; the traceback only with CLIPLAB_DEBUG=1), 130 interrupted.
USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # option actions may already check values (search terms)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except CliplabError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: a sentence for the user, the trace only on request
        if os.environ.get("CLIPLAB_DEBUG"):
            raise
        print(f"error: {type(error).__name__}: {error} (set CLIPLAB_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
