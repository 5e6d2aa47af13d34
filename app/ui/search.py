"""Search tab: text/image queries (the typed grammar is only a convenience: the service gets structured
terms), a gallery of thumbnails with scores, pages, filters, the relevance cut-off on a score histogram,
more like this, image -> text, duplicates and the library's folders."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from cliplab.app.services import classifiers, serving
from cliplab.app.services import search as service
from cliplab.app.services.app_state import AppState
from cliplab.app.ui import captions as captions_panel
from cliplab.app.ui import library_panels
from cliplab.app.ui import moments as moments_panel
from cliplab.app.ui.common import (
    NotYet,
    UserError,
    dropped_image,
    error_box,
    guard_drops,
    image_drop,
    text_tower_choice,
    text_tower_name,
    wire,
)

HELP = ("Words search by meaning. Combine terms with `+` and `-` (`red circle - stripes`), weight them "
        "(`2:star + circle`), or drop an image to find similar ones (it can be combined with words).")
TYPES = ["jpg", "png", "webp", "heic", "tif", "gif", "bmp", "mp4", "mov"]


def histogram(scores, threshold: float | None, shown: list[float]) -> go.Figure:
    figure = go.Figure(go.Histogram(x=list(map(float, scores)), nbinsx=40, name="library",
                                    marker_color="#9aa5b1"))
    if shown:
        figure.add_trace(go.Histogram(x=shown, nbinsx=40, name="this page", marker_color="#e8590c"))
    if threshold is not None:
        figure.add_vline(x=threshold, line_dash="dash", line_color="#c92a2a",
                         annotation_text=f"cut-off {threshold:.3f}")
    figure.update_layout(barmode="overlay", height=300, margin=dict(l=40, r=10, t=40, b=40),
                         title="Scores of this query over the library", xaxis_title="cosine similarity",
                         legend=dict(orientation="h", x=1, xanchor="right", y=1.1))
    return figure


def query_terms(text: str | None, image: str | None, like: int | None) -> list:
    """The typed words (through the grammar), the dropped image and the 'more like' photo as terms.

    The image travels as its own term, so a file name with " - ", " + " or two spaces stays whole."""
    terms = service.parse_terms(text) if (text or "").strip() else []
    if image:
        terms.append(service.image_term(image))
    if like is not None:
        terms.append(service.file_term(int(like)))
    if not terms:
        raise UserError("Type what you are looking for (e.g. 'a red circle'), or drop an image.")
    return terms


def gallery_items(state: AppState, results) -> tuple[list[tuple[str, str]], list[int]]:
    """Thumbnails (from the app's own cache, looked up by file id) with score and name, and the ids of
    the tiles in order (a photo that cannot be shown any more has no tile, so clicks map to the right id)."""
    moments = {r.file_id: r.ranges[0].at for r in results if r.ranges}  # a video shows its best moment
    thumbs = dict(serving.thumbnails(state.catalog, [r.file_id for r in results], moments=moments))
    shown = [r for r in results if thumbs.get(r.file_id) is not None]

    def caption(r) -> str:  # a video names its best moment; a label filter's label; a shot its files together
        moment = f" · {moments_panel.range_label(r.ranges[0].start, r.ranges[0].end)}" if r.ranges else ""
        label = f" · {r.label} {r.probability:.2f}" if getattr(r, "label", None) is not None else ""
        names = " + ".join(Path(p).name for p in [r.path, *r.companions])  # "IMG_1.JPG + IMG_1.CR2"
        return f"{r.score:.3f}{label} · {names}{moment}"
    return [(str(thumbs[r.file_id]), caption(r)) for r in shown], [r.file_id for r in shown]


def page_note(view, query: str = "") -> str:
    """The info line: what the query is (the typed words, the dropped image, the "more like" photo), then
    the counts and the cut-off."""
    said = f"Query: {query}. " if query else ""
    if not view.results:
        if view.threshold_unreachable:
            return (said + "No photo passes the cut-off: it asks for more than any cosine similarity can reach "
                    "(at most 1); lower it.")
        return said + "No photo matches."
    note = (f"{said}{view.total} result(s); showing {view.offset + 1}–{view.offset + len(view.results)}, "
            f"page {view.page} of {view.pages}.")
    if view.threshold_unreachable:
        note += " The cut-off asks for more than any cosine similarity can reach (at most 1): lower it."
    elif view.threshold is not None:
        note += f" Cut-off at cosine similarity {view.threshold:.3f}."
    return note


def build(state: AppState) -> None:
    gr.Markdown(HELP)
    with gr.Row():
        with gr.Column(scale=3):
            query = gr.Textbox(label="Search", placeholder="a red circle on stripes", elem_id="search-query")
            with gr.Row():
                sort = gr.Radio(["score", "date", "probability"], value="score", label="Sort by",
                                elem_id="search-sort")
                cutoff = gr.Slider(0, 5, value=0, step=0.5, label="Relevance cut-off (z above the library; 0 = off)")
            with gr.Accordion("Filters", open=False):
                with gr.Row():
                    folder = gr.Textbox(label="Folder", placeholder="only under this folder", elem_id="search-folder")
                    after = gr.Textbox(label="From (YYYY-MM-DD)")
                    before = gr.Textbox(label="To (YYYY-MM-DD)")
                    types = gr.CheckboxGroup(TYPES, label="Types")
                with gr.Row():  # a saved classifier applied to the library (Classify tab): its labels filter
                    classifier = gr.Dropdown(label="Labelled by (a saved classifier)", choices=[], value=None,
                                             elem_id="search-classifier")
                    label = gr.Textbox(label="Label (one of its classes; empty: any)", elem_id="search-label")
                    least = gr.Number(label="At least this probability (empty: its threshold)", minimum=0, maximum=1,
                                      value=None, elem_id="search-least")
        with gr.Column(scale=1):
            image = image_drop(label="…or drop an image", height=160, elem_id="search-image")
            tower = text_tower_choice(state, "search-text-tower")
    with gr.Row():
        go_button = gr.Button("Search", variant="primary", elem_id="search-run")
        previous = gr.Button("◀ Previous", elem_id="search-previous")
        page_box = gr.Number(value=1, label="Page", precision=0, minimum=1, scale=0, min_width=90,
                             elem_id="search-page")
        following = gr.Button("Next ▶", elem_id="search-next")
        more = gr.Button("More like the selected photo", elem_id="search-more")
    errors = error_box("search-error")
    info = gr.Markdown(elem_id="search-info")
    gallery = gr.Gallery(label="Results", columns=6, height="auto", elem_id="search-gallery", allow_preview=True,
                         object_fit="contain")  # the whole picture: a square crop cut the object away
    moments, picked, player, ranges, choose = moments_panel.build(state, errors)
    plot = gr.Plot(label="Score histogram", elem_id="search-plot")
    shown_ids = gr.State([])  # file ids of the gallery's tiles, in order
    selected = gr.State(None)  # the clicked tile's file id (a video's: its best frame's, for "more like this")
    video = gr.State(None)  # the clicked tile's file id when it is a video
    like = gr.State(None)  # "more like this" photo id, part of the query until a new search

    captions_panel.build(state)
    with gr.Accordion("Duplicates", open=False, elem_id="duplicates-panel"):
        library_panels.build_duplicates(state)
    with gr.Accordion("Library and indexing", open=False, elem_id="index-panel"):
        library_panels.build_library(state)

    def run(text, dropped, like_id, page, sort_by, z, fold, start, end, kinds, by, which, at_least, text_tower):
        upload = dropped_image(dropped)
        terms = query_terms(text, upload, like_id)
        filters = service.make_filters(fold, start, end, kinds, by, which, at_least, state.catalog)
        # a paired text tower searches the model's library as it is (a sentence when it does not fit)
        bundle = state.with_text_model(text_tower_name(text_tower), search=True)
        # a typed image path must lie in a library folder; the dropped image is Gradio's own upload
        view = service.search(state.catalog, bundle, terms, page=int(page or 1), filters=filters,
                              cutoff=float(z) or None, sort=sort_by, index_cache=state.vector_indexes,
                              histogram=True, images=service.ImageScope(uploads=(upload,) if upload else ()))
        figure = histogram(view.histogram, view.threshold, [r.score for r in view.results])
        items, ids = gallery_items(state, view.results)
        note = " ".join([page_note(view, service.describe_terms(state.catalog, view.terms)), *view.notes])
        return (items, note, figure, ids, None, view.page, gr.update(interactive=view.page > 1),
                gr.update(interactive=view.page < view.pages), moments_panel.moments_of(view.results))

    inputs = [query, image, like, page_box, sort, cutoff, folder, after, before, types, classifier, label, least, tower]
    outputs = [gallery, info, plot, shown_ids, selected, page_box, previous, following, moments]
    keep = (5, 6, 7)  # a failed search leaves the page number and the buttons as they were

    def chain(first):
        return wire(first.then, run, inputs, outputs, errors, keep=keep)

    chain(go_button.click(lambda: (1, None), None, [page_box, like]))
    chain(query.submit(lambda: (1, None), None, [page_box, like]))
    chain(previous.click(lambda p: max(1, int(p or 1) - 1), page_box, page_box))
    chain(following.click(lambda p: int(p or 1) + 1, page_box, page_box))
    chain(page_box.submit(lambda p: max(1, int(p or 1)), page_box, page_box))

    def select(current: list[int], table: dict, event: gr.SelectData):
        file_id = current[event.index] if current and event.index is not None else None
        spans = (table or {}).get(file_id)
        return (spans[0][3], file_id) if spans else (file_id, None)

    gallery.select(select, [shown_ids, moments], [selected, video]).then(
        choose, [video, moments, gr.State(None)], [player, ranges, picked])
    ranges.input(choose, [video, moments, ranges], [player, ranges, picked])

    guard_drops(image, errors)  # a non-image is refused as it is dropped, not at every later search

    def more_like(file_id, *rest):
        if file_id is None:  # the results stay: they are what the person picks from
            raise NotYet("Select a photo in the results first (click it), then ask for more like it.")
        # the photo replaces the typed words and the dropped image, from page 1
        text, dropped, _like, _page, *others = rest
        return (file_id, "", None, *run("", None, file_id, 1, *others))

    wire(more.click, more_like, [selected, *inputs], [like, query, image, *outputs], errors,
         keep=(0, 1, 2, *(3 + i for i in keep)))
    gr.on(triggers=None, fn=lambda: gr.update(choices=classifiers.list_classifiers(state.catalog)), inputs=None,
          outputs=classifier)
