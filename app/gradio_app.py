"""The Gradio app: one tab module per area (app/ui/<tab>.py, each with build(state)), over one AppState.

Binds 127.0.0.1 unless told otherwise, never phones home (analytics off before gradio is imported),
serves files only from the catalog's online folders, and limits upload size.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported anywhere

import gradio as gr  # noqa: E402

from app.services.app_state import AppState  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
MAX_FILE_SIZE = "50mb"
TABS = [("Classify", "classify"), ("Search", "search"), ("Map", "map"), ("Audit", "audit"), ("Models", "models")]
CSS = ".cliplab-banner {padding: 0.6em 1em; border-radius: 6px; background: #fff7e0; color: #4a3b00;}"


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
                    module = importlib.import_module(f"app.ui.{module_name}")
                except ModuleNotFoundError as error:
                    if error.name != f"app.ui.{module_name}":
                        raise
                    gr.Markdown(f"The {title} tab is not part of this build yet.")
                    continue
                module.build(state)
        demo.load(lambda: banner(state), None, note)
        gr.Timer(5.0).tick(lambda: banner(state), None, note)  # a model switched in the Models tab
    return demo


def launch(state: AppState, host: str = DEFAULT_HOST, port: int | None = None, open_browser: bool = False,
           block: bool = True) -> tuple[gr.Blocks, str]:
    """Start the server; returns the app and its local URL (block=False returns at once, for tests)."""
    if host != DEFAULT_HOST:
        print(f"warning: cliplab listens on {host}: anyone who can reach this machine on port {port or 7860} "
              "can use the app and see the photos of indexed folders.", file=sys.stderr)
    demo = build_app(state)
    demo.queue(default_concurrency_limit=2)
    _, url, _ = demo.launch(server_name=host, server_port=port, inbrowser=open_browser, share=False,
                            prevent_thread_lock=True, allowed_paths=state.library_roots() or None,
                            max_file_size=MAX_FILE_SIZE, show_error=True, quiet=True, css=CSS, footer_links=[],
                            ssr_mode=False)
    # gradio reads this list on every file request: folders added later are appended to it
    state.allowed_paths = demo.allowed_paths
    print(f"cliplab is running at {url}", flush=True)
    if block:
        demo.block_thread()
    return demo, url
