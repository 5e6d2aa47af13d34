"""Search tab panels over app.services.library: image -> text against a text collection, and duplicates."""

from __future__ import annotations

import gradio as gr
import pandas as pd
from sqlalchemy import select

from app.services import library
from app.services.app_state import AppState
from app.ui.common import shown_errors
from engine.errors import CliplabError
from indexes.catalog import TextCollection


def collections(state: AppState) -> list[str]:
    with state.catalog.session() as session:
        return list(session.scalars(select(TextCollection.name).order_by(TextCollection.name)))


def build_image_to_text(state: AppState) -> None:
    gr.Markdown("Drop or pick an image and see the nearest texts of a collection (captions, tags, your own list). "
                "For a captioned dataset the image's true caption is marked.")
    with gr.Row():
        image = gr.Image(label="Image", type="filepath", height=180)
        with gr.Column():
            chosen = gr.Dropdown(label="Text collection", choices=[], elem_id="texts-collection")
            count = gr.Slider(1, 50, value=10, step=1, label="Texts to show")
            find = gr.Button("Find texts", variant="primary")
    with gr.Row():
        name = gr.Textbox(label="New collection name")
        path = gr.Textbox(label="From a .txt (one text a line) or a captions .csv")
        add = gr.Button("Add collection")
    hits = gr.Dataframe(label="Nearest texts", wrap=True, elem_id="texts-hits")

    @shown_errors
    def do_find(picture, collection, k):
        if not picture:
            raise CliplabError("Drop an image first.")
        if not collection:
            raise CliplabError("Pick a text collection (or add one below).")
        found = library.image_to_text(collection, picture, state.bundle, state.catalog, int(k))
        return pd.DataFrame([{"text": h.text, "score": round(h.score, 4), "true pair": "✓" if h.true_pair else ""}
                             for h in found])

    @shown_errors
    def do_add(collection, source):
        if not (collection or "").strip():
            raise CliplabError("Give the new collection a name.")
        n = library.add_texts(collection.strip(), (source or "").strip(), state.catalog)
        gr.Info(f"Added {n} texts as {collection.strip()!r}.")
        return gr.update(choices=collections(state), value=collection.strip())

    find.click(do_find, [image, chosen, count], hits)
    add.click(do_add, [name, path], chosen)
    gr.on(triggers=None, fn=lambda: gr.update(choices=collections(state)), inputs=None, outputs=chosen)


def build_duplicates(state: AppState) -> None:
    gr.Markdown("Exact copies (same bytes) and near duplicates (nearly the same picture, taken in the same burst). "
                "The suggested keeper is the largest, earliest file.")
    with gr.Row():
        threshold = gr.Slider(0.80, 1.0, value=0.95, step=0.01, label="Near-duplicate similarity")
        find = gr.Button("Find duplicates")
    summary = gr.Markdown()
    gallery = gr.Gallery(label="Groups (keeper first)", columns=6, height="auto")
    table = gr.Dataframe(label="Groups", wrap=True)

    @shown_errors
    def do_find(level):
        groups = library.find_duplicates(state.bundle, state.catalog, float(level))
        rows, items = [], []
        for number, group in enumerate(groups, 1):
            keeper = group.keeper
            for member in sorted(group.members, key=lambda m: m is not keeper):
                rows.append({"group": number, "kind": group.kind, "keep": "✓" if member is keeper else "",
                             "file": member.path})
                items.append((member.path, f"group {number}{' · keep' if member is keeper else ''}"))
        note = f"{len(groups)} group(s) of duplicates." if groups else "No duplicates found."
        return note, items[:120], pd.DataFrame(rows, columns=["group", "kind", "keep", "file"])

    find.click(do_find, threshold, [summary, gallery, table])
