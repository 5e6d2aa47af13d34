"""Search tab panel: image -> text and text -> image over a collection file (captions CSV, .txt list
or a saved classifier), and browsing a captioned dataset both ways with the true pairs marked (✓)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from cliplab.app.services import captions, serving
from cliplab.app.services.app_state import AppState
from cliplab.app.ui.common import (
    UserError,
    dropped_image,
    error_box,
    file_paths,
    guard_drops,
    image_drop,
    wire,
)

HELP = ("Upload or name a **text collection** (a file named here must lie in one of your library folders): "
        "a captioned dataset (a CSV of `image,caption` rows, several captions per "
        "image allowed), a `.txt` file with one text per line, or "
        "`classifier:NAME` for a saved classifier. Drop an image to see its nearest texts, or type a text to see "
        "a dataset's nearest images. ✓ marks a true pair: the image's own caption, or the caption's own image.")
TRUE = "✓"


CLASSIFIER = "classifier:"


def collection_source(state: AppState, uploaded, typed: str | None) -> str:
    """The upload, `classifier:NAME`, or a typed path checked to lie inside a library folder."""
    paths = file_paths(uploaded)
    if paths:
        return paths[0]
    typed = (typed or "").strip()
    if not typed:
        raise UserError("Upload a text collection (.txt or captions .csv), or name one (classifier:NAME, or a "
                        "file in one of your library folders).")
    if typed.startswith(CLASSIFIER):
        return typed
    return str(serving.library_file(state.catalog, typed))


def thumbnail(state: AppState, path: Path, size: int = 256) -> Image.Image | None:
    """A small copy of a dataset image that lies in a library folder (else None: the page gets no pixels)."""
    try:
        real = serving.library_file(state.catalog, path)
        with Image.open(real) as image:
            image.draft("RGB", (2 * size, 2 * size))
            small = image.convert("RGB")
    except (OSError, ValueError, serving.CliplabError):
        return None
    small.thumbnail((size, size))
    return small


def texts_table(matches: list[captions.TextMatch]) -> pd.DataFrame:
    return pd.DataFrame([{"rank": m.rank, "score": round(m.score, 4), "true pair": TRUE if m.true_pair else "",
                          "text": m.text} for m in matches], columns=["rank", "score", "true pair", "text"])


def gallery_items(state: AppState, matches: list[captions.ImageMatch]) -> list[tuple[Image.Image, str]]:
    items = [(thumbnail(state, m.path), f"{m.rank}. {m.score:.3f}{' ' + TRUE + ' true pair' if m.true_pair else ''}"
                                        f" · {m.path.name}") for m in matches]
    return [(image, caption) for image, caption in items if image is not None]


def build(state: AppState) -> None:
    """The panel, in its own accordion."""
    with gr.Accordion("Image → text and captioned datasets", open=False, elem_id="captions-panel"):
        panel(state)


def panel(state: AppState) -> None:
    gr.Markdown(HELP)
    with gr.Row():
        upload = gr.File(label="Upload a collection", file_types=[".txt", ".csv", ".tsv"], scale=2, height=90,
                         elem_id="captions-upload")
        collection = gr.Textbox(label="…or name one", scale=3, elem_id="captions-collection",
                                placeholder="classifier:NAME, or ~/Pictures/dataset/captions.csv in a library folder")
        count = gr.Slider(1, 50, value=10, step=1, label="Results to show", scale=1)
    with gr.Row():
        image = image_drop(label="Image → nearest texts", height=180, elem_id="captions-image")
        with gr.Column():
            text = gr.Textbox(label="Text → nearest images (captioned datasets)", elem_id="captions-text",
                              placeholder="a red circle on stripes")
            with gr.Row():
                find_texts = gr.Button("Nearest texts", variant="primary", elem_id="captions-find-texts")
                find_images = gr.Button("Nearest images", elem_id="captions-find-images")
    errors = error_box("captions-error")
    guard_drops(image, errors)
    found_texts = gr.Dataframe(label="Nearest texts", wrap=True, elem_id="captions-texts", max_height=400)
    found_images = gr.Gallery(label="Nearest images", columns=6, height="auto", elem_id="captions-images",
                               object_fit="contain")

    gr.Markdown("**Browse a captioned dataset** — step through its images (their nearest captions) or its "
                "captions (their nearest images); the rank is where the true pair came among all of them.")
    with gr.Row():
        side = gr.Radio(["image", "caption"], value="image", label="Step through", elem_id="captions-side")
        step = gr.Slider(0, 1, value=0, step=1, label="Number (0-based)", scale=3, elem_id="captions-step")
        open_button = gr.Button("Open dataset", elem_id="captions-open")
    with gr.Row():
        shown = gr.Image(label="Image", height=200, interactive=False, elem_id="captions-shown")
        summary = gr.Markdown(elem_id="captions-summary")
    browse_errors = error_box("captions-browse-error")
    browse_texts = gr.Dataframe(label="Nearest captions", wrap=True, visible=True, elem_id="captions-browse-texts",
                                max_height=400)
    browse_images = gr.Gallery(label="Nearest images", columns=6, height="auto", visible=False, object_fit="contain",
                               elem_id="captions-browse-images")

    def do_texts(uploaded, source, picture, k):
        picture = dropped_image(picture)
        if not picture:
            raise UserError("Drop an image first.")
        source = collection_source(state, uploaded, source)
        return texts_table(captions.image_to_texts(state.bundle, picture, source, int(k), catalog=state.catalog))

    def do_images(uploaded, source, query, k):
        if not (query or "").strip():
            raise UserError("Type a text to find its nearest images.")
        source = collection_source(state, uploaded, source)
        return gallery_items(state, captions.text_to_images(state.bundle, query, source, int(k), catalog=state.catalog))

    def do_browse(uploaded, source, by, number, k):
        source = collection_source(state, uploaded, source)
        view = captions.browse(state.bundle, source, int(number or 0), by, int(k), catalog=state.catalog)
        own = "\n".join(f"- {c}" for c in view.true_captions)
        if by == "image":
            note = (f"**Image {view.index} of {view.total}** (`{view.image.name}`). Its best caption ranks "
                    f"**{view.rank}** among all captions.\n\nIts captions:\n{own}")
        else:
            note = (f"**Caption {view.index} of {view.total}:** {view.text}\n\nIts image `{view.image.name}` ranks "
                    f"**{view.rank}** among all images.")
        return (thumbnail(state, view.image), note, gr.update(value=texts_table(view.texts), visible=by == "image"),
                gr.update(value=gallery_items(state, view.images), visible=by == "caption"))

    def do_open(uploaded, source, by, k):
        source = collection_source(state, uploaded, source)
        total = captions.dataset_size(state.bundle, source, by, catalog=state.catalog)
        step_update = gr.update(maximum=max(total - 1, 1), value=0, label=f"Number (0 to {total - 1})")
        return (step_update, *do_browse(uploaded, source, by, 0, k))

    browse_outputs = [shown, summary, browse_texts, browse_images]
    wire(find_texts.click, do_texts, [upload, collection, image, count], found_texts, errors)
    wire(find_images.click, do_images, [upload, collection, text, count], found_images, errors)
    wire(text.submit, do_images, [upload, collection, text, count], found_images, errors)
    wire(open_button.click, do_open, [upload, collection, side, count], [step, *browse_outputs], browse_errors,
         keep=(0,))
    wire(side.input, do_open, [upload, collection, side, count], [step, *browse_outputs], browse_errors, keep=(0,))
    wire(step.release, do_browse, [upload, collection, side, step, count], browse_outputs, browse_errors)
