"""Search tab: text/image queries with the weighted/negative grammar, a gallery with scores, pages,
filters, the relevance cut-off on a score histogram, more like this, and the indexing panel."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from app.services import app_search
from app.services.app_state import AppState
from app.services.first_start import add_and_index
from app.ui import captions as captions_panel
from app.ui import library_panels
from app.ui.common import shown_errors

HELP = ("Words search by meaning. Combine terms with `+` and `-` (`red circle - stripes`), weight them "
        "(`2:star + circle`), or drop an image to find similar ones (it can be combined with words).")


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


def job_status(state: AppState) -> tuple[str, pd.DataFrame]:
    job = state.jobs.latest("index")
    summary = app_search.library_summary(state)
    folders = ", ".join(f"{p}{'' if online else ' (offline)'}: {n} files" for p, online, n in summary.folders)
    lines = [f"**Library:** {summary.indexed} photos indexed" + (f" in {folders}" if folders else "") + "."]
    if job is not None:
        if job.state == "running":
            lines.append(f"**{job.title}:** {job.progress:.0%} — {job.message}")
        elif job.state == "failed":
            lines.append(f"**{job.title} failed:** {job.error}")
        else:
            result = job.result or {}
            lines.append(f"**{job.title}:** done — {result.get('embedded', 0)} embedded, "
                         f"{result.get('skipped', 0)} skipped ({result.get('scan', '')}).")
    skipped = pd.DataFrame(summary.skipped, columns=["file", "why it was skipped"])
    return "\n\n".join(lines), skipped


def build(state: AppState) -> None:
    gr.Markdown(HELP)
    with gr.Row():
        with gr.Column(scale=3):
            query = gr.Textbox(label="Search", placeholder="a red circle on stripes", elem_id="search-query")
            with gr.Row():
                sort = gr.Radio(["score", "date"], value="score", label="Sort by")
                cutoff = gr.Slider(0, 5, value=0, step=0.5, label="Relevance cut-off (z above the library; 0 = off)")
            with gr.Accordion("Filters", open=False):
                with gr.Row():
                    folder = gr.Textbox(label="Folder", placeholder="only under this folder", elem_id="search-folder")
                    after = gr.Textbox(label="From (YYYY-MM-DD)")
                    before = gr.Textbox(label="To (YYYY-MM-DD)")
                    types = gr.CheckboxGroup(["jpg", "png", "webp", "heic", "tif", "gif", "bmp"], label="Types")
        with gr.Column(scale=1):
            image = gr.Image(label="…or drop an image", type="filepath", height=160, elem_id="search-image")
    with gr.Row():
        go_button = gr.Button("Search", variant="primary", elem_id="search-run")
        previous = gr.Button("◀ Previous")
        page_box = gr.Number(value=1, label="Page", precision=0, minimum=1, scale=0, min_width=90)
        following = gr.Button("Next ▶")
        more = gr.Button("More like the selected photo", elem_id="search-more")
    info = gr.Markdown(elem_id="search-info")
    gallery = gr.Gallery(label="Results", columns=6, height="auto", elem_id="search-gallery", allow_preview=True)
    plot = gr.Plot(label="Score histogram", elem_id="search-plot")
    paths = gr.State([])
    selected = gr.State(None)

    with gr.Accordion("Image → text", open=False):
        library_panels.build_image_to_text(state)
    captions_panel.build(state)
    with gr.Accordion("Duplicates", open=False):
        library_panels.build_duplicates(state)
    with gr.Accordion("Library and indexing", open=False, elem_id="index-panel"):
        with gr.Row():
            add_folder = gr.Textbox(label="Add a folder", placeholder="/home/me/Pictures", elem_id="index-folder")
            add = gr.Button("Add and index", elem_id="index-add")
        status = gr.Markdown(elem_id="index-status")
        skipped = gr.Dataframe(label="Skipped files", wrap=True)
        timer = gr.Timer(2.0)  # polls the latest indexing job: a refreshed page picks it up again

    @shown_errors
    def run(text, dropped, page, sort_by, z, fold, start, end, kinds):
        filters = app_search.make_filters(fold, start, end, kinds)
        view = app_search.search_library(state, text, dropped, int(page or 1), filters=filters,
                                         cutoff=float(z) or None, sort=sort_by)
        results = view.page.results
        items = [(r.path, f"{r.score:.3f} · {Path(r.path).name}") for r in results]
        first = view.page.offset + 1
        note = (f"{view.page.total} result(s); showing {first}–{view.page.offset + len(results)}, "
                f"page {int(page or 1)} of {view.pages}." if results else "No photo matches.")
        if view.page.threshold is not None:
            note += f" Cut-off at score {view.page.threshold:.3f}."
        figure = histogram(view.histogram, view.page.threshold, [r.score for r in results])
        return items, note, figure, [r.path for r in results], None

    inputs = [query, image, page_box, sort, cutoff, folder, after, before, types]
    outputs = [gallery, info, plot, paths, selected]
    go_button.click(lambda: 1, None, page_box).then(run, inputs, outputs)
    query.submit(lambda: 1, None, page_box).then(run, inputs, outputs)
    previous.click(lambda p: max(1, int(p or 1) - 1), page_box, page_box).then(run, inputs, outputs)
    following.click(lambda p: int(p or 1) + 1, page_box, page_box).then(run, inputs, outputs)

    def select(current: list[str], event: gr.SelectData):
        return current[event.index] if current and event.index is not None else None

    gallery.select(select, paths, selected)

    @shown_errors
    def like(path):
        if not path:
            raise gr.Error("Click a photo in the results first, then ask for more like it.")
        return f"@{app_search.file_id_of(state, path)}", None, 1

    more.click(like, selected, [query, image, page_box]).then(run, inputs, outputs)

    @shown_errors
    def start_indexing(text):
        folders = [line.strip() for line in (text or "").split(";") if line.strip()]
        if not folders:
            raise gr.Error("Type the path of a folder to add.")
        for f in folders:
            if not Path(f).expanduser().is_dir():
                raise gr.Error(f"The folder {f} does not exist (or is not a folder).")
        state.jobs.start("index", f"indexing {', '.join(folders)}", lambda job: add_and_index(state, folders, job))
        return job_status(state)

    add.click(start_indexing, add_folder, [status, skipped])
    timer.tick(lambda: job_status(state), None, [status, skipped])
