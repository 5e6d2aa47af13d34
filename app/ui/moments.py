"""The Search tab's player: a video result plays from its best moment, and its clip can be downloaded.

The player is the browser's own <video> element on the app's file route (`photo/{id}`, the same
catalogued-only route as photos, answering range requests so the browser seeks); `#t=START,END` opens
it at the range's start. The download cuts the range with app.services.clips (stream copy, or a
precise re-encode on request)."""

from __future__ import annotations

import html

import gradio as gr

from cliplab.app.services import clips
from cliplab.app.services.app_state import AppState
from cliplab.app.ui.common import NotYet, wire


def moments_of(results) -> dict[int, list[tuple[float, float, float, int]]]:
    """file id -> its ranges (start, end, score, frame id), best first, for the video results of a page."""
    return {r.file_id: [(m.start, m.end, m.score, m.frame_id) for m in r.ranges] for r in results if r.ranges}


def range_label(start: float, end: float) -> str:
    return f"{clips.clock(start)}-{clips.clock(end)}"


def player_html(file_id: int | None, moment: tuple[float, float, float, int] | None) -> str:
    if file_id is None or moment is None:
        return ""
    start, end, score, _frame = moment
    return (f'<video id="moment-video" controls preload="auto" width="480" '
            f'src="photo/{int(file_id)}#t={start:.3f},{end:.3f}" data-start="{start:.3f}"></video>'
            f'<p>Best moment {html.escape(range_label(start, end))} (score {score:.3f}).</p>')


def build(state: AppState, errors: gr.Markdown):
    """The player panel: (moments state, picked (file id, range index) state, player, ranges dropdown, choose:
    the function that fills the player and the dropdown for a video and a range label)."""
    moments = gr.State({})  # file id -> ranges, for the page shown
    picked = gr.State(None)  # (file id, range index) of the video selected
    with gr.Group(visible=True):
        player = gr.HTML(elem_id="search-player")
        with gr.Row():
            ranges = gr.Dropdown([], label="Moments of the selected video", interactive=True, elem_id="search-ranges")
            precise = gr.Checkbox(False, label="Precise cut (re-encode; slower, no sound)")
            cut = gr.Button("Cut this moment", elem_id="search-cut")
        download = gr.File(label="Clip", elem_id="search-clip", interactive=False)

    def choose(file_id, table, choice):
        spans = (table or {}).get(file_id) if file_id is not None else None
        if not spans:
            return "", gr.update(choices=[], value=None), None
        labels = [range_label(s, e) for s, e, _score, _frame in spans]
        index = labels.index(choice) if choice in labels else 0
        return (player_html(file_id, spans[index]), gr.update(choices=labels, value=labels[index]),
                (file_id, index))

    def cut_clip(pick, table, is_precise):
        if pick is None:
            raise NotYet("Select a video in the results first (click it), then cut its moment.")
        file_id, index = pick
        start, end, _score, _frame = table[file_id][index]
        return str(clips.clip_for_app(state.catalog, file_id, start, end, precise=bool(is_precise)))

    wire(cut.click, cut_clip, [picked, moments, precise], [download], errors)
    return moments, picked, player, ranges, choose
