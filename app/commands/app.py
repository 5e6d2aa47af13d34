"""`cliplab app`: start the Gradio app (first start prepares the demo photos and indexes them)."""

from __future__ import annotations

import argparse

from cliplab.app.commands.models import add_model_arguments, model_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("app", help="open the app in the browser (Gradio)",
                                   description="Start the local app. It listens on 127.0.0.1 only, unless "
                                               "--listen says otherwise; then it asks for a login.")
    add_model_arguments(parser)
    parser.add_argument("--port", type=int, default=None, help="port (default 7860 or the next free one)")
    parser.add_argument("--listen", metavar="ADDRESS", default=None,
                        help="listen on ADDRESS (e.g. 0.0.0.0) instead of 127.0.0.1: anyone who can reach it and "
                             "logs in can see and search your library's photos, add and remove library folders, "
                             "and run every tab. The login is user 'cliplab' with the password in "
                             "CLIPLAB_APP_PASSWORD, or one made and printed at start")
    parser.add_argument("--allow-host", metavar="NAME", action="append", default=[],
                        help="also answer requests addressed to NAME (repeatable; also CLIPLAB_APP_HOSTS=\"a,b\"). On "
                             "loopback the app answers only localhost and loopback addresses, so that a web page "
                             "cannot reach it under a name of its own (DNS rebinding)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    parser.add_argument("--demo-photos", type=int, default=120, metavar="N",
                        help="photos in the demo folder made on first start (0: none)")
    parser.add_argument("--wait-first-start", action="store_true",
                        help="prepare and index the demo photos before serving (default: in the background)")
    parser.add_argument("--no-watch", action="store_true",
                        help="do not watch the library's folders (new photos then need `cliplab index`)")
    parser.add_argument("--poll", metavar="FOLDER", action="append", default=[],
                        help="poll this library folder instead of waiting for change events (repeatable; network "
                             "and FUSE folders are polled anyway)")
    parser.add_argument("--poll-interval", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between two looks at a polled folder (default 30)")
    parser.add_argument("--reconcile-interval", type=float, default=3600.0, metavar="SECONDS",
                        help="seconds between reconcile scans of every library folder (default 3600)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cliplab.app.gradio_app import DEFAULT_HOST, launch, login_for  # gradio loads only for this command
    from cliplab.app.services import settings
    from cliplab.app.services.app_state import AppState
    from cliplab.app.services.first_start import first_start, needs_first_start

    host = args.listen or DEFAULT_HOST
    login_for(host)  # a too-short password fails before anything loads
    options = model_options(args)
    del options["purpose"]  # the app's model is the exact one; indexing and search take it in SEARCH mode
    state = AppState(**options)
    settings.apply(state)  # the Settings tab's choices: the pixel limit, the inference mode of search
    print(f"model: {state.bundle.name}", flush=True)  # loads now: a missing model fails before the server starts
    if args.demo_photos and needs_first_start(state):
        print(f"first start: drawing {args.demo_photos} demo photos and indexing them with {state.model_name}"
              + (" (the app opens when they are ready)" if args.wait_first_start
                 else " in the background; Search and Map fill in as they are indexed"), flush=True)
        job = state.jobs.start("index", "first start: demo photos", lambda j: first_start(state, args.demo_photos, j))
        if args.wait_first_start:
            state.jobs.wait(job)
            print(f"first start failed: {job.error}" if job.error else
                  f"first start: {job.log[-2] if len(job.log) > 1 else job.message}", flush=True)
    if not args.no_watch:  # the library keeps itself current: new photos appear without a rescan
        state.start_watching(poll=tuple(args.poll), poll_interval=max(0.1, args.poll_interval),
                             reconcile=max(0.0, args.reconcile_interval))
    launch(state, host=host, port=args.port, open_browser=not args.no_browser, allowed_hosts=tuple(args.allow_host))
    return 0
