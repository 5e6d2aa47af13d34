"""Models tab: the current model, the release table (size, published ImageNet top-1, downloaded or not;
download + verify, switch), a local checkpoint in any supported format (with its architecture when the
file does not say it, and an explicit opt-in for a non-official TorchScript archive), and training runs
followed through their JSONL log. A download is a server-side job: the page polls it, so its progress
bar survives a refresh."""

from __future__ import annotations

from html import escape

import gradio as gr
import pandas as pd

from cliplab.app.services import models as service
from cliplab.app.services.app_state import AppState
from cliplab.app.ui import training
from cliplab.app.ui.common import UserError, error_box, wire

IMAGE_SUFFIXES = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif"}


def _size(n) -> str:
    return "-" if n is None or pd.isna(n) else f"{n / 1e6:.0f} MB"


def model_table() -> pd.DataFrame:
    rows = service.list_models()
    return pd.DataFrame([{"model": r["name"], "family": r["family"], "trained on": r["data"],
                          "architecture": r["arch"] or "-", "image px": r["resolution"] or "-",
                          "parameters": f"{r['params'] / 1e6:.0f} M" if r["params"] else "-",
                          "ImageNet top-1": f"{r['imagenet_top1']:.1f}%" if r["imagenet_top1"] else "-",
                          "size": _size(r["size_bytes"] if r["downloaded"] else r["download_bytes"]),
                          "on disk": "yes" if r["downloaded"] else "no",
                          # a multilingual text tower searches the library of the image model it pairs with
                          "pairs with": ", ".join(r.get("pairs_with") or []) or "-",
                          "languages": r.get("languages") or "-"}
                         for r in rows])


AUTO_ARCH = "from the file"
TORCHSCRIPT_RISK = ("Allow a TorchScript archive that is not an official OpenAI release. Risk: such a file is a "
                    "program that runs when it is loaded; tick this only for a file you trust.")


def current(state: AppState) -> str:
    b = state.bundle
    return (f"**Current model:** {state.model_name} — embedding {b.model.embed_dim}, images "
            f"{b.model.image_resolution} px, fingerprint `{b.fingerprint[:12]}`.")


def running(state: AppState) -> str:
    """How the current model computes on this machine, and why (what `cliplab models` prints)."""
    return "\n".join(["**How it runs here**", "", *(f"- {line}" for line in service.running_lines(state)),
                      f"- Inference: {service.machine_line()}.",
                      f"- fp32 matrix kernels: {service.kernels_line()}."])


def download_status(state: AppState) -> str:
    """HTML for the latest download job: a live bar and its line, then the outcome as a sentence."""
    job = state.jobs.latest("download")
    if job is None:
        return ""
    if job.state == "running":
        return (f'<progress value="{job.progress * 100:.1f}" max="100" style="width:100%"></progress>'
                f"<p>{escape(job.message)}</p>")
    title = escape(job.title[:1].upper() + job.title[1:])
    if job.state == "done":
        return f"<p>{title}: done, verified by SHA-256. Pick it in the list and press <b>Switch to this model</b>.</p>"
    return f"<p><b>{title} failed:</b> {escape(job.error or '')}</p>"


def build(state: AppState) -> None:
    now = gr.Markdown(elem_id="models-current")
    runs_here = gr.Markdown(elem_id="models-running")
    table = gr.Dataframe(label="Models", interactive=False, elem_id="models-table")
    with gr.Row():
        choice = gr.Dropdown(label="Model", choices=[r["name"] for r in service.list_models()], value="demo",
                             elem_id="models-choice")
        download = gr.Button("Download and verify", elem_id="models-download-run")
        switch = gr.Button("Switch to this model", variant="primary", elem_id="models-switch")
    choice_errors = error_box("models-error")
    downloading = gr.HTML(elem_id="models-download")
    seen = gr.State("")  # the download job state this page last listed the models for
    with gr.Row():
        checkpoint = gr.Textbox(label="…or load a local checkpoint (our folder, an OpenAI .pt, an open_clip or "
                                      "Hugging Face folder or file)", placeholder="/path/to/checkpoint",
                                elem_id="models-checkpoint")
        arch = gr.Dropdown(label="Architecture (for a file that does not say its activation and head width)",
                           choices=[AUTO_ARCH, "quickgelu", "gelu", *service.architecture_names()], value=AUTO_ARCH,
                           elem_id="models-arch")
        torchscript = gr.Checkbox(label=TORCHSCRIPT_RISK, value=False, elem_id="models-torchscript")
        load = gr.Button("Load checkpoint", elem_id="models-load")
    load_errors = error_box("models-load-error")
    message = gr.Markdown(elem_id="models-message")

    def refresh():
        return current(state), model_table(), download_status(state), running(state)

    def do_switch(name):
        if not name:
            raise UserError("Pick a model first.")
        row = next((r for r in service.list_models() if r["name"] == name), None)
        if row is not None and not row["downloaded"]:
            raise UserError(f"{name} is not on this computer yet: press 'Download and verify' first, then switch.")
        state.switch_model(name)
        service.reindex_library(state)
        return (*refresh(), f"Switched to {state.model_name}. The library is being indexed with it in the "
                            "background (see Search → Library and indexing).")

    def do_load(path, architecture, allow_torchscript):
        if not (path or "").strip():
            raise UserError("Type the path of a checkpoint file or folder.")
        suffix = path.strip().rsplit(".", 1)[-1].lower() if "." in path.strip() else ""
        if suffix in IMAGE_SUFFIXES:  # the engine's sentence for an unreadable file speaks of pickles
            raise UserError(f"{path.strip()} is an image, not a model checkpoint: give a checkpoint file (.pt, "
                            ".safetensors, .bin) or a model folder.")
        arch = None if architecture in (None, "", AUTO_ARCH) else architecture
        loaded = service.load_checkpoint(state, path.strip(), arch, allow_torchscript)
        service.reindex_library(state)
        return (*refresh(), f"Loaded {loaded} as the current model.")

    def start_download(name):
        if not name:
            raise UserError("Pick a model to download first.")
        service.start_download(state.jobs, name)
        return download_status(state)

    def poll(last):
        """The bar every tick; the table again only when a download's state changed (e.g. it finished)."""
        job = state.jobs.latest("download")
        key = f"{job.id}:{job.state}" if job else ""
        return download_status(state), model_table() if key != last else gr.update(), key

    # a failed switch or load leaves the current model (and says so): its panels are not cleared
    wire(switch.click, do_switch, choice, [now, table, downloading, runs_here, message], choice_errors,
         keep=(0, 1, 2, 3))
    wire(load.click, do_load, [checkpoint, arch, torchscript], [now, table, downloading, runs_here, message],
         load_errors, keep=(0, 1, 2, 3))
    wire(download.click, start_download, choice, downloading, choice_errors, keep=(0,))
    gr.Timer(1.0).tick(poll, seen, [downloading, table, seen])
    gr.on(triggers=None, fn=refresh, inputs=None, outputs=[now, table, downloading, runs_here])
    with gr.Accordion("Train or fine-tune", open=False):
        training.build(state)
