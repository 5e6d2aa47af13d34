"""`cliplab dashboard`: the Streamlit dashboard over saved audit sessions and evaluation runs."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dashboard", help="browse saved audit sessions and evaluation runs (Streamlit)",
                                   description="Start the read-only dashboard. It listens on 127.0.0.1 only, "
                                               "unless --listen says otherwise.")
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    parser.add_argument("--listen", metavar="ADDRESS", default=None,
                        help="listen on ADDRESS (e.g. 0.0.0.0) instead of 127.0.0.1: others on the network can "
                             "then read your audit results")
    parser.set_defaults(func=run)


def command(port: int, host: str = DEFAULT_HOST) -> list[str]:
    script = Path(__file__).resolve().parents[1] / "dashboard.py"
    return [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
            "--server.port", str(port), "--server.address", host, "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "viewer"]


def run(args: argparse.Namespace) -> int:
    host = args.listen or DEFAULT_HOST
    if host != DEFAULT_HOST:
        print(f"warning: the dashboard listens on {host}: anyone who can reach this machine on port {args.port} "
              "can read your audit sessions and evaluation runs.", file=sys.stderr)
    print(f"cliplab dashboard at http://{host}:{args.port}/", flush=True)
    if os.name == "posix":  # become Streamlit, so a stop signal reaches it and leaves no orphan server
        os.execv(sys.executable, command(args.port, host))
    return subprocess.call(command(args.port, host))
