"""The Gradio app: one tab module per area (app/ui/<tab>.py, each with build(state)), over one AppState.

What the server hands out (docs/app.md, "What the app serves"):
- the page, its own uploads and results (Gradio's cache, kept in a folder under the data directory);
- generated thumbnails of indexed photos (the app's thumbnail cache, the only folder given to Gradio);
- `photo/{file_id}` and `thumb/{file_id}`: an indexed photo, or its thumbnail, looked up by catalog id.
No library folder is ever given to Gradio, so nothing else that lies in one (a `.secret`, `notes.txt`)
can be fetched by path. Binds 127.0.0.1 unless told otherwise; beyond loopback a login is required.
Every route sits behind app.services.access: on loopback only loopback host names (and those the person
adds) are answered, against DNS rebinding; with a login, wrong passwords are throttled.
Never phones home (analytics off before gradio is imported); upload size is limited.
"""

from __future__ import annotations

import importlib
import os
import secrets
import sys
from dataclasses import dataclass

from cliplab.app.services import paths

# before gradio is imported anywhere: its cache paths are read at import time
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("GRADIO_TEMP_DIR", str(paths.cache_dir("gradio")))
os.environ.setdefault("GRADIO_EXAMPLES_CACHE", str(paths.cache_dir("gradio-examples")))
os.environ.pop("GRADIO_ALLOWED_PATHS", None)  # nothing but the thumbnail cache, whatever the environment says

import gradio as gr  # noqa: E402
from fastapi import Request  # noqa: E402
from fastapi.responses import FileResponse, PlainTextResponse, Response  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from cliplab.app.services import access, serving, settings  # noqa: E402
from cliplab.app.services.app_state import AppState  # noqa: E402
from cliplab.engine.errors import CliplabError  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
DEFAULT_USER = "cliplab"
PASSWORD_VARIABLE = "CLIPLAB_APP_PASSWORD"
MAX_FILE_SIZE = "50mb"
TABS = [("Classify", "classify"), ("Search", "search"), ("Map", "map"), ("Audit", "audit"), ("Evaluate", "evaluate"),
        ("Overlap", "overlap"), ("Models", "models"), ("Settings", "settings")]
CSS = """
.cliplab-banner {padding: 0.6em 1em; border-radius: 6px; background: #fff7e0; color: #4a3b00;}
.cliplab-error {padding: 0.5em 0.9em; border-radius: 6px; background: #fdecea; color: #8a1c13;
                border-left: 4px solid #c92a2a; max-height: 12em; overflow: auto; overflow-wrap: anywhere;}
"""


def banner(state: AppState) -> str:
    if state.model_name != "demo":
        return f"Current model: **{state.model_name}**."
    return ("You are using cliplab's **demo model**: a small CLIP trained only on a synthetic world of "
            "coloured shapes (circles, squares, stars… in ten colours, on plain or patterned backgrounds) and "
            "a few rendered words. It reads colours, counts and words well, positions and shapes less so "
            "(see its model card). It knows nothing else. For real photos, download an official OpenAI model "
            "in the **Models** tab.")


def build_app(state: AppState) -> gr.Blocks:
    """The whole app; tabs whose module is missing show a note instead of failing the app."""
    with gr.Blocks(title="cliplab", analytics_enabled=False) as demo:
        gr.Markdown("# cliplab")
        note = gr.Markdown(banner(state), elem_classes=["cliplab-banner"], elem_id="banner")
        for title, module_name in TABS:
            with gr.Tab(title, id=module_name):
                try:
                    module = importlib.import_module(f"cliplab.app.ui.{module_name}")
                except ModuleNotFoundError as error:
                    if error.name != f"cliplab.app.ui.{module_name}":
                        raise
                    gr.Markdown(f"The {title} tab is not part of this build yet.")
                    continue
                module.build(state)
        demo.load(lambda: banner(state), None, note)
        gr.Timer(5.0).tick(lambda: banner(state), None, note)  # a model switched in the Models tab
    return demo


@dataclass
class Login:
    user: str
    password: str
    generated: bool


def login_for(host: str, password: str | None = None, user: str = DEFAULT_USER) -> Login | None:
    """None on loopback; beyond it the given password, CLIPLAB_APP_PASSWORD, or a new random one."""
    if host == DEFAULT_HOST and password is None:
        return None
    given = password or os.environ.get(PASSWORD_VARIABLE) or settings.app_password()
    if given is not None and len(given) < 8:
        raise CliplabError(f"The app password must have at least 8 characters; set a longer {PASSWORD_VARIABLE}.")
    return Login(user, given or secrets.token_urlsafe(12), given is None)


def exposure_note(host: str, port: int | None, login: Login | None) -> str:
    """What someone who can reach the address can do: said plainly, once, at start."""
    if login is None:
        return ""
    where = f"{host}:{port or 7860}"
    lines = [f"warning: cliplab listens on {where}. Anyone who can reach it and logs in can use every tab: "
             "see and search the photos of your library folders, add or remove library folders (and so read "
             "any image this account can read), classify, run audits and training, and switch or download models.",
             f"login: user {login.user!r}, password "
             + (f"{login.password!r} (made for this start; set {PASSWORD_VARIABLE} to choose one)"
                if login.generated else f"from {PASSWORD_VARIABLE} or the Settings tab")]
    return "\n".join(lines)


def _logged_in(app, request: Request) -> bool:
    """The same check as Gradio's own routes (its login cookie), for the photo routes added beside them."""
    if getattr(app, "auth", None) is None and getattr(app, "auth_dependency", None) is None:
        return True
    token = (request.cookies.get(f"access-token-{app.cookie_id}")
             or request.cookies.get(f"access-token-unsecure-{app.cookie_id}"))
    return app.tokens.get(token) is not None


def add_photo_routes(app, state: AppState) -> None:
    """`photo/{file_id}` and `thumb/{file_id}[?size=160]` on Gradio's own server: ids only, never paths."""

    def refused(request: Request) -> Response | None:
        if not _logged_in(app, request):
            return PlainTextResponse("Log in first.", status_code=401)
        return None

    async def photo(file_id: str, request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        try:
            path, media_type = serving.viewable(state.catalog, file_id)  # a RAW: its preview
        except serving.NotServable as error:
            return PlainTextResponse(str(error), status_code=404)
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private"},
                            content_disposition_type="inline")

    async def thumb(file_id: str, request: Request, size: int = serving.THUMBNAIL_SIZE) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        try:
            path = serving.thumbnail(state.catalog, file_id, size)
        except serving.NotServable as error:
            return PlainTextResponse(str(error), status_code=404)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private"})

    app.add_api_route("/photo/{file_id}", photo, methods=["GET"], include_in_schema=False)
    app.add_api_route("/thumb/{file_id}", thumb, methods=["GET"], include_in_schema=False)


def guard(host: str, login: Login | None, allowed_hosts: tuple[str, ...] = ()) -> Middleware:
    """The access check in front of every route (app.services.access): on loopback only loopback host
    names and the configured ones (DNS rebinding); with a login, wrong passwords throttled."""
    return Middleware(access.Guard, check_host=access.is_loopback(host), allowed_hosts=allowed_hosts,
                      throttle_logins=login is not None)


def launch(state: AppState, host: str = DEFAULT_HOST, port: int | None = None, open_browser: bool = False,
           block: bool = True, password: str | None = None,
           allowed_hosts: tuple[str, ...] = ()) -> tuple[gr.Blocks, str]:
    """Start the server; returns the app and its local URL (block=False returns at once, for tests).
    allowed_hosts: host names answered on loopback besides localhost and loopback addresses."""
    login = login_for(host, password)
    demo = build_app(state)
    demo.queue(default_concurrency_limit=2)
    # given to the FastAPI app Gradio makes, before it serves anything: every route passes the guard
    _, url, _ = demo.launch(server_name=host, server_port=port, inbrowser=open_browser, share=False,
                            prevent_thread_lock=True, allowed_paths=[str(serving.thumbnails_dir())],
                            auth=(login.user, login.password) if login else None,
                            auth_message="This cliplab app asks for the login printed where it was started. After "
                                         f"{access.FREE_TRIES} wrong passwords, each further try waits twice as long.",
                            max_file_size=MAX_FILE_SIZE, show_error=True, quiet=True, css=CSS, footer_links=[],
                            ssr_mode=False, app_kwargs={"middleware": [guard(host, login, allowed_hosts)]})
    add_photo_routes(demo.server_app, state)
    if login is not None:
        print(exposure_note(host, demo.server_port, login), file=sys.stderr, flush=True)
    print(f"cliplab is running at {url}", flush=True)
    if block:
        demo.block_thread()
    return demo, url
