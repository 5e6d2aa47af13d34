"""Map tab: a UMAP of the library's embeddings; colour by folder, date, zero-shot top-1 or classes
made from selections; search hits ringed; a lasso/box selection becomes a query or a class."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from cliplab.app.services import map as maps
from cliplab.app.services import serving
from cliplab.app.services.app_state import AppState
from cliplab.app.services.classify import TEMPLATE_PRESETS, load_templates
from cliplab.app.services.search import parse_terms
from cliplab.app.ui.common import UserError, error_box, wire

HELP = ("Each dot is a photo of the library, placed so that photos the model sees as similar sit close "
        "together (UMAP of the image embeddings). Hover a dot to see the photo. Pick the **lasso** or **box** "
        "tool above the map, draw around some photos, then turn the selection into a search query or a class.")

# Runs in the page after each redraw: hover thumbnails and selections sent to the hidden textbox.
ATTACH_JS = """
() => {
  const bind = (tries) => {
    const plot = document.querySelector('#map-plot .js-plotly-plot');
    if (!plot || !plot.on) { if (tries > 0) setTimeout(() => bind(tries - 1), 250); return; }
    if (plot.cliplabBound) return;
    plot.cliplabBound = true;
    let thumb = document.getElementById('map-thumb');
    if (!thumb) {
      thumb = document.createElement('img');
      thumb.id = 'map-thumb';
      thumb.style.cssText = 'position:fixed;z-index:1000;max-width:160px;max-height:160px;display:none;' +
        'pointer-events:none;border:2px solid #fff;box-shadow:0 2px 8px rgba(0,0,0,.4);background:#fff';
      document.body.appendChild(thumb);
    }
    const send = (ids) => {
      const box = document.querySelector('#map-selection textarea, #map-selection input');
      if (!box) return;
      box.value = ids.join(',');
      box.dispatchEvent(new Event('input', {bubbles: true}));
    };
    plot.on('plotly_hover', (ev) => {
      const p = ev.points && ev.points[0];
      if (!p || !p.customdata) return;
      thumb.src = 'thumb/' + encodeURIComponent(p.customdata[0]) + '?size=160';  // by catalog id, never a path
      thumb.style.left = (ev.event.clientX + 16) + 'px';
      thumb.style.top = (ev.event.clientY + 16) + 'px';
      thumb.style.display = 'block';
    });
    plot.on('plotly_unhover', () => { thumb.style.display = 'none'; });
    plot.on('plotly_selected', (ev) => {
      const ids = ((ev && ev.points) || []).filter(p => p.customdata).map(p => p.customdata[0]);
      send([...new Set(ids)]);
    });
    plot.on('plotly_deselect', () => send([]));
  };
  bind(40);
}
"""

SEARCH_QUERY_JS = """
() => {
  const box = document.querySelector('#search-query textarea, #search-query input');
  return box ? box.value : '';
}
"""


def build(state: AppState) -> None:
    maps.start_warm_up()
    gr.Markdown(HELP)
    my_classes = gr.State({})
    with gr.Row():
        by = gr.Radio(list(maps.COLOUR_BY), value="folder", label="Colour by", elem_id="map-colour")
        classes = gr.Textbox(label="Zero-shot classes (one per line)", lines=3,
                             placeholder="red circle\nblue square\ngreen star")
        templates = gr.Dropdown(list(TEMPLATE_PRESETS), value="default", label="Prompt templates")
        highlight = gr.Textbox(label="Ring the hits of a search", placeholder="a star - stripes",
                               elem_id="map-highlight")
    with gr.Row():
        draw = gr.Button("Draw the map", variant="primary", elem_id="map-draw")
        from_search = gr.Button("Ring the Search tab's query", elem_id="map-from-search")
        status = gr.Markdown(elem_id="map-status")
    errors = error_box("map-error")
    plot = gr.Plot(label="Library map", elem_id="map-plot")
    selection = gr.Textbox(visible="hidden", elem_id="map-selection")
    chosen = gr.Markdown("Nothing selected yet.", elem_id="map-chosen")
    with gr.Row():
        to_query = gr.Button("Selection → query", elem_id="map-to-query")
        class_name = gr.Textbox(label="Class name", placeholder="my favourite stars", scale=2, elem_id="map-class-name")
        to_class = gr.Button("Selection → class", elem_id="map-to-class")
        export = gr.Button("Export my classes (CSV)")
    selection_errors = error_box("map-selection-error")
    made = gr.Markdown(elem_id="map-classes")  # what "Selection → class" made: only that action writes here
    query = gr.Textbox(label="The selection as a query (its photo numbers, as the Search box reads them)",
                       elem_id="map-query", interactive=False)
    gallery = gr.Gallery(label="Photos like the selection", columns=8, height=260, elem_id="map-gallery",
                         object_fit="contain")
    csv_file = gr.File(label="Classes as path,label CSV", visible=False)

    def points_and_layout(progress: gr.Progress):
        points = maps.library_points(state.catalog, state.bundle)
        if not len(points):
            raise UserError(f"No photo of the library is embedded with the current model ({state.bundle.name}) "
                               "yet: add a folder in the Search tab's indexing panel, then draw the map.")
        if not maps.warmed_up():
            progress(0.1, desc="compiling UMAP (once per start, about a minute on a small CPU)")
            maps.start_warm_up().join()
        progress(0.5, desc=f"laying out {len(points)} photos")
        return points, maps.layout(points)

    def on_draw(colour: str, class_text: str, template_set: str, search: str, mine: dict,
                progress=gr.Progress()):
        points, xy = points_and_layout(progress)
        labels = None
        if colour == "zero-shot top-1":
            names = [line.strip() for line in (class_text or "").splitlines() if line.strip()]
            labels = maps.zero_shot_top1(state.catalog, points, state.bundle, names, load_templates(template_set))
        elif colour == "my classes":
            labels = maps.nearest_class(points, mine)
        # ring a first page's worth, but never most of a small library
        terms = parse_terms(search) if (search or "").strip() else []
        hits = maps.search_hits(terms, state.search_bundle, state.catalog,
                                limit=min(24, max(3, len(points) // 4)), index_cache=state.vector_indexes)
        figure = maps.map_figure(points, xy, colour, labels, hits)
        note = f"{len(points)} photos embedded with {state.bundle.name}"
        return figure, note + (f"; {len(hits)} search hits ringed." if hits else ".")

    def on_select(text: str) -> str:
        count = len([part for part in (text or "").split(",") if part.strip()])
        return f"**{count} photos selected.**" if count else "Nothing selected yet."

    def on_query(text: str):
        points = maps.library_points(state.catalog, state.bundle)
        chosen = maps.parse_selection(text, points)
        if not chosen:
            raise UserError("Select some photos on the map first (the lasso or box tool above it).")
        view = maps.selection_search(state.catalog, state.search_bundle, chosen, per_page=len(chosen),
                                     index_cache=state.vector_indexes)
        thumbs = dict(serving.thumbnails(state.catalog, [r.file_id for r in view.results]))
        items = [(str(thumbs[r.file_id]), f"{r.score:.3f}") for r in view.results if thumbs.get(r.file_id)]
        query_text = " + ".join(f"@{i}" for i in chosen)  # the grammar's spelling, shown only
        note = f"The {view.total} selected photos, most typical of the selection first."
        return query_text, items, note

    def on_class(text: str, name: str, mine: dict):
        points = maps.library_points(state.catalog, state.bundle)
        mine = maps.add_class(mine, name, maps.parse_selection(text, points))
        summary = ", ".join(f"{k} ({len(v)})" for k, v in mine.items())
        return mine, gr.update(value="my classes"), (f"Class {name.strip()!r} made from {len(mine[name.strip()])} "
                                                      f"photos. Classes made from selections: {summary}.")

    def on_export(mine: dict):
        points = maps.library_points(state.catalog, state.bundle)
        # gradio serves downloads from its temp folder, not from the data directory
        path = maps.export_classes(points, mine, Path(tempfile.mkdtemp(prefix="cliplab-map-")) / "my-classes.csv")
        return gr.update(value=str(path), visible=True)

    inputs = [by, classes, templates, highlight, my_classes]
    wire(draw.click, on_draw, inputs, [plot, status], errors).then(None, js=ATTACH_JS)
    # the Search tab's query box lives in the page: read it there, then redraw with its hits ringed
    wire(from_search.click(None, None, highlight, js=SEARCH_QUERY_JS).then, on_draw, inputs, [plot, status],
         errors).then(None, js=ATTACH_JS)
    selection.change(on_select, selection, chosen)
    # no redraw here: it would drop the selection drawn on the map ('Draw the map' rings the hits)
    wire(to_query.click, on_query, selection, [query, gallery, status], selection_errors, keep=(2,))
    # the confirmation goes to its own line: the redraw that follows rewrites the status line
    wire(to_class.click, on_class, [selection, class_name, my_classes], [my_classes, by, made], selection_errors,
         keep=(0, 1)).then(on_draw, inputs, [plot, status]).then(None, js=ATTACH_JS)
    wire(export.click, on_export, my_classes, csv_file, selection_errors, keep=(0,))
