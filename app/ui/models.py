"""Models tab: the current model, the nine official models (download + verify, switch), a local
checkpoint in any supported format, and training runs followed through their JSONL log."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from app.services import models as service
from app.services.app_state import AppState
from app.services.first_start import add_and_index
from app.ui import training
from app.ui.common import shown_errors
from engine import download as downloads
from engine import paths


def _size(n) -> str:
    return "-" if n is None or pd.isna(n) else f"{n / 1e6:.0f} MB"


def model_table() -> pd.DataFrame:
    rows = service.list_models()
    return pd.DataFrame([{"model": r["name"], "embed dim": r["embed_dim"] or "-",
                          "image px": r["resolution"] or "-",
                          "parameters": f"{r['params'] / 1e6:.0f} M" if r["params"] else "-",
                          "on disk": "yes" if r["downloaded"] else "no", "size": _size(r["size_bytes"])}
                         for r in rows])


def current(state: AppState) -> str:
    b = state.bundle
    return (f"**Current model:** {state.model_name} — embedding {b.model.embed_dim}, images "
            f"{b.model.image_resolution} px, fingerprint `{b.fingerprint[:12]}`.")


def download_status(state: AppState) -> str:
    job = state.jobs.latest("download")
    if job is None:
        return ""
    if job.state == "running":
        part = sum(p.stat().st_size for p in paths.models_dir().rglob("*.part"))
        return f"{job.title}: {part / 1e6:.0f} MB so far…"
    return f"{job.title}: " + ("done, verified by SHA-256." if job.state == "done" else f"failed: {job.error}")


def reindex_library(state: AppState) -> None:
    """Embed the library with the new model in the background, so Search and Map work with it."""
    roots, last = state.library_roots(), state.jobs.latest("index")
    if roots and (last is None or last.finished):
        state.jobs.start("index", f"indexing the library with {state.model_name}",
                         lambda job: add_and_index(state, roots, job))


def build(state: AppState) -> None:
    now = gr.Markdown(elem_id="models-current")
    table = gr.Dataframe(label="Models", interactive=False, elem_id="models-table")
    with gr.Row():
        choice = gr.Dropdown(label="Model", choices=[r["name"] for r in service.list_models()], value="demo",
                             elem_id="models-choice")
        download = gr.Button("Download and verify")
        switch = gr.Button("Switch to this model", variant="primary", elem_id="models-switch")
    downloading = gr.Markdown()
    with gr.Row():
        checkpoint = gr.Textbox(label="…or load a local checkpoint (our folder, an OpenAI .pt, an open_clip or "
                                      "Hugging Face checkpoint)", placeholder="/path/to/checkpoint",
                                elem_id="models-checkpoint")
        load = gr.Button("Load checkpoint", elem_id="models-load")
    message = gr.Markdown(elem_id="models-message")

    def refresh():
        return current(state), model_table(), download_status(state)

    @shown_errors
    def do_switch(name):
        if not name:
            raise gr.Error("Pick a model first.")
        state.switch_model(name)
        reindex_library(state)
        return (*refresh(), f"Switched to {state.model_name}. The library is being indexed with it in the "
                            "background (see Search → Library and indexing).")

    @shown_errors
    def do_load(path):
        if not (path or "").strip():
            raise gr.Error("Type the path of a checkpoint file or folder.")
        state.switch_model(path.strip())
        reindex_library(state)
        return (*refresh(), f"Loaded {path.strip()} as the current model.")

    def start_download(name):
        if not name or name == "demo":
            raise gr.Error("The demo model ships with cliplab; pick an official model to download.")
        downloads.resolve_name(name)  # an unknown name fails here, as a sentence
        state.jobs.start("download", f"downloading {name}", lambda job: service.download_models([name], progress=False))
        return download_status(state)

    switch.click(do_switch, choice, [now, table, downloading, message])
    load.click(do_load, checkpoint, [now, table, downloading, message])
    download.click(shown_errors(start_download), choice, downloading)
    gr.Timer(2.0).tick(lambda: download_status(state), None, downloading)
    gr.on(triggers=None, fn=refresh, inputs=None, outputs=[now, table, downloading])
    with gr.Accordion("Train or fine-tune", open=False):
        training.build(state)
