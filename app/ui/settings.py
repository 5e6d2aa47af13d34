"""Settings tab: where the data lives, the inference mode of indexing and search, the pixel limit for
large photos and the login for --listen, saved in the data folder (app.services.settings) and applied at
once; the CLI reads the same file."""

from __future__ import annotations

import gradio as gr

from cliplab.app.services import models
from cliplab.app.services import settings as service
from cliplab.app.services.app_state import AppState
from cliplab.app.ui.common import error_box, wire

MODE_HELP = ("**auto** picks the fastest mode that keeps the results (measured once on this machine); "
             "**fp32** is the exact one. A library keeps the mode it was indexed in, so a change applies to "
             "folders indexed from now on. Classifications, audits and evaluations always run exact.")


def where_text(facts: dict) -> str:
    password = ("set by CLIPLAB_APP_PASSWORD (it wins over a saved one)" if facts["password_from_environment"]
                else "saved" if facts["password_saved"] else "none saved (a new one is printed at each start)")
    return (f"Data folder: `{facts['data_folder']}`  \nSettings file: `{facts['settings_file']}`  \n"
            f"Login password for `--listen`: {password}.")


def build(state: AppState) -> None:
    where = gr.Markdown(elem_id="settings-where")
    with gr.Row():
        mode = gr.Dropdown(list(service.MODE_NAMES), value="auto", label="Inference mode for indexing and search",
                           elem_id="settings-mode")
        limit = gr.Number(label="Pixel limit for a photo (megapixels)", precision=1, minimum=1,
                          elem_id="settings-pixels")
    gr.Markdown(MODE_HELP)
    with gr.Row():
        password = gr.Textbox(label="Login password for cliplab app --listen (user cliplab; 8 characters or more; "
                                    "used from the next start)", type="password", elem_id="settings-password")
        forget = gr.Checkbox(label="Remove the saved password", value=False, elem_id="settings-forget")
    save = gr.Button("Save settings", variant="primary", elem_id="settings-save")
    errors = error_box("settings-error")
    saved = gr.Markdown(elem_id="settings-saved")
    running = gr.Markdown(elem_id="settings-running")

    def show():
        facts = service.overview()
        return (where_text(facts), facts["search_mode"], facts["pixel_limit_megapixels"],
                "\n".join(f"- {line}" for line in models.running_lines(state)))

    def store(chosen_mode, megapixels, typed, remove):
        current = service.update(chosen_mode, megapixels, typed or None, bool(remove))
        service.apply(state, current)
        facts = service.overview()
        return (where_text(facts), "", False,
                f"Saved: indexing and search in **{current.search_mode}**, photos up to "
                f"**{current.max_image_pixels / 1e6:,.1f} megapixels**.")

    wire(save.click, store, [mode, limit, password, forget], [where, password, forget, saved], errors,
         keep=(0, 1, 2))
    gr.on(triggers=None, fn=show, inputs=None, outputs=[where, mode, limit, running])
