"""`cliplab app`: start the Gradio app (first start prepares the demo photos and indexes them)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("app", help="open the app in the browser (Gradio)",
                                   description="Start the local app. It listens on 127.0.0.1 only, unless "
                                               "--listen says otherwise.")
    parser.add_argument("--model", default="demo", help="model to start with: demo, an official name or a "
                                                        "checkpoint path (default demo)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860 or the next free one)")
    parser.add_argument("--listen", metavar="ADDRESS", default=None,
                        help="listen on ADDRESS (e.g. 0.0.0.0) instead of 127.0.0.1: others on the network can "
                             "then use the app and see your indexed photos")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    parser.add_argument("--demo-photos", type=int, default=120, metavar="N",
                        help="photos in the demo folder made on first start (0: none)")
    parser.add_argument("--wait-first-start", action="store_true",
                        help="prepare and index the demo photos before serving (default: in the background)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.gradio_app import DEFAULT_HOST, launch  # gradio loads only for this command
    from app.services.app_state import AppState
    from app.services.first_start import first_start, needs_first_start

    state = AppState(model=args.model)
    print(f"model: {state.bundle.name}", flush=True)  # loads now: a missing model fails before the server starts
    if args.demo_photos and needs_first_start(state):
        job = state.jobs.start("index", "first start: demo photos", lambda j: first_start(state, args.demo_photos, j))
        if args.wait_first_start:
            state.jobs.wait(job)
            print(job.error or f"first start: {job.log[-2] if len(job.log) > 1 else job.message}", flush=True)
    launch(state, host=args.listen or DEFAULT_HOST, port=args.port, open_browser=not args.no_browser)
    return 0
