"""Search tab panel: image -> text and text -> image over a collection file (captions CSV, .txt list
or a saved classifier), and browsing a captioned dataset both ways with the true pairs marked (✓)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from app.services import captions
from app.services.app_state import AppState
from app.ui.common import shown_errors
from engine.images import load_image

HELP = ("Pick a **text collection**: a captioned dataset (a CSV of `image,caption` rows, several captions per "
        "image allowed, as `cliplab eval retrieval` reads), a `.txt` file with one text per line, or "
        "`classifier:NAME` for a saved classifier. Drop an image to see its nearest texts, or type a text to see "
        "a dataset's nearest images. ✓ marks a true pair: the image's own caption, or the caption's own image.")
TRUE = "✓"


def thumbnail(path: Path, size: int = 256) -> Image.Image:
    """A small copy: the page gets pixels, never a path outside the library's folders."""
    image = load_image(path, min_size=size)
    image.thumbnail((size, size))
    return image


def texts_table(matches: list[captions.TextMatch]) -> pd.DataFrame:
    return pd.DataFrame([{"rank": m.rank, "score": round(m.score, 4), "true pair": TRUE if m.true_pair else "",
                          "text": m.text} for m in matches], columns=["rank", "score", "true pair", "text"])


def gallery_items(matches: list[captions.ImageMatch]) -> list[tuple[Image.Image, str]]:
    return [(thumbnail(m.path), f"{m.rank}. {m.score:.3f}{' ' + TRUE + ' true pair' if m.true_pair else ''}"
                                f" · {m.path.name}") for m in matches]


def build(state: AppState) -> None:
    """The panel, in its own accordion."""
    with gr.Accordion("Image → text and captioned datasets", open=False, elem_id="captions-panel"):
        panel(state)


def panel(state: AppState) -> None:
    gr.Markdown(HELP)
    with gr.Row():
        collection = gr.Textbox(label="Text collection", scale=4, elem_id="captions-collection",
                                placeholder="/data/flickr30k/captions.csv, tags.txt or classifier:NAME")
        count = gr.Slider(1, 50, value=10, step=1, label="Results to show", scale=1)
    with gr.Row():
        image = gr.Image(label="Image → nearest texts", type="filepath", height=180, elem_id="captions-image")
        with gr.Column():
            text = gr.Textbox(label="Text → nearest images (captioned datasets)", elem_id="captions-text",
                              placeholder="a red circle on stripes")
            with gr.Row():
                find_texts = gr.Button("Nearest texts", variant="primary", elem_id="captions-find-texts")
                find_images = gr.Button("Nearest images", elem_id="captions-find-images")
    found_texts = gr.Dataframe(label="Nearest texts", wrap=True, elem_id="captions-texts")
    found_images = gr.Gallery(label="Nearest images", columns=6, height="auto", elem_id="captions-images")

    gr.Markdown("**Browse a captioned dataset** — step through its images (their nearest captions) or its "
                "captions (their nearest images); the rank is where the true pair came among all of them.")
    with gr.Row():
        side = gr.Radio(["image", "caption"], value="image", label="Step through", elem_id="captions-side")
        step = gr.Slider(0, 1, value=0, step=1, label="Number (0-based)", scale=3, elem_id="captions-step")
        open_button = gr.Button("Open dataset", elem_id="captions-open")
    with gr.Row():
        shown = gr.Image(label="Image", height=200, interactive=False, elem_id="captions-shown")
        summary = gr.Markdown(elem_id="captions-summary")
    browse_texts = gr.Dataframe(label="Nearest captions", wrap=True, visible=True, elem_id="captions-browse-texts")
    browse_images = gr.Gallery(label="Nearest images", columns=6, height="auto", visible=False,
                               elem_id="captions-browse-images")

    @shown_errors
    def do_texts(source, picture, k):
        return texts_table(captions.image_to_texts(state.loaded, picture, source, int(k), catalog=state.catalog))

    @shown_errors
    def do_images(source, query, k):
        return gallery_items(captions.text_to_images(state.loaded, query, source, int(k), catalog=state.catalog))

    @shown_errors
    def do_browse(source, by, number, k):
        view = captions.browse(state.loaded, source, int(number or 0), by, int(k), catalog=state.catalog)
        own = "\n".join(f"- {c}" for c in view.true_captions)
        if by == "image":
            note = (f"**Image {view.index} of {view.total}** (`{view.image.name}`). Its best caption ranks "
                    f"**{view.rank}** among all captions.\n\nIts captions:\n{own}")
        else:
            note = (f"**Caption {view.index} of {view.total}:** {view.text}\n\nIts image `{view.image.name}` ranks "
                    f"**{view.rank}** among all images.")
        return (thumbnail(view.image), note, gr.update(value=texts_table(view.texts), visible=by == "image"),
                gr.update(value=gallery_items(view.images), visible=by == "caption"))

    @shown_errors
    def do_open(source, by):
        total = captions.dataset_size(state.loaded, source, by, catalog=state.catalog)
        return gr.update(maximum=max(total - 1, 1), value=0, label=f"Number (0 to {total - 1})")

    browse_outputs = [shown, summary, browse_texts, browse_images]
    browse_inputs = [collection, side, step, count]
    find_texts.click(do_texts, [collection, image, count], found_texts)
    find_images.click(do_images, [collection, text, count], found_images)
    text.submit(do_images, [collection, text, count], found_images)
    open_button.click(do_open, [collection, side], step).success(do_browse, browse_inputs, browse_outputs)
    side.input(do_open, [collection, side], step).success(do_browse, browse_inputs, browse_outputs)
    step.release(do_browse, browse_inputs, browse_outputs)
