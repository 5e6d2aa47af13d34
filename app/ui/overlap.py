"""Overlap tab: the paper's data-overlap analysis (section 5) of an evaluation set against a reference
set (another folder, or the whole library) with the copy detector: Overlap / Clean / All sizes and
accuracy with 99.5% intervals, All - Clean and the one-sided binomial test, and the detected pairs side
by side for a person to confirm or reject (the verdict changes the split and is kept)."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from cliplab.app.services import overlap as service
from cliplab.app.services.app_state import AppState
from cliplab.app.services.classify import load_templates
from cliplab.app.ui.common import UserError, error_box, stage_progress, wire

HELP = ("Is the model's accuracy on an evaluation set inflated by images it has seen? The copy detector finds the "
        "evaluation images that have a copy (resized, cropped, recoloured, re-encoded) in the reference set: they "
        "form **Overlap**, the others **Clean**. The evaluation set lies in a library folder: an image folder with "
        "one sub-folder per class, or a CSV with path and label columns (a prediction column is used instead of the "
        "model). The reference set is another folder in the library, or the whole library. The first run trains the copy "
        "detector (once, about two minutes).")
PAIR_COLUMNS = ["pair", "score", "in Overlap", "decision", "evaluation image", "reference image"]
SPLIT_COLUMNS = ["subset", "images", "correct", "accuracy", "99.5% interval"]


def summary(report: service.OverlapReport) -> str:
    return "\n\n".join(service.report_lines(report))


def figure(report: service.OverlapReport) -> go.Figure:
    """Accuracy of each subset with its 99.5% interval (the paper's Figure 17, for one set); an empty
    subset has no bar."""
    shown = [s for s in report.splits if s.size]
    fig = go.Figure(go.Bar(
        x=[f"{s.name} (n={s.size})" for s in shown], y=[100 * s.accuracy for s in shown],
        error_y=dict(type="data", symmetric=False, array=[100 * (s.high - s.accuracy) for s in shown],
                     arrayminus=[100 * (s.accuracy - s.low) for s in shown]),
        marker_color=["#c92a2a" if s.name == "Overlap" else "#1c7ed6" if s.name == "Clean" else "#868e96"
                      for s in shown]))
    fig.update_layout(title="accuracy with 99.5% Clopper-Pearson intervals", yaxis_title="accuracy (%)",
                      yaxis_range=[0, 100], height=360, margin=dict(l=40, r=10, t=40, b=40))
    return fig


def tables(report: service.OverlapReport) -> tuple[str, pd.DataFrame, go.Figure, pd.DataFrame]:
    return (summary(report), pd.DataFrame(service.split_rows(report), columns=SPLIT_COLUMNS), figure(report),
            pd.DataFrame(service.pair_rows(report), columns=PAIR_COLUMNS))


def build(state: AppState) -> None:
    gr.Markdown(HELP)
    with gr.Row():
        eval_set = gr.Textbox(label="Evaluation set (a folder or CSV inside a library folder)", elem_id="overlap-eval")
        reference = gr.Textbox(label="Reference set (a folder inside a library folder, or 'library')",
                               value=service.LIBRARY, elem_id="overlap-reference")
    with gr.Row():
        own = gr.Checkbox(label="Own copy score instead of the detector's (calibrated for high precision)",
                          value=False, elem_id="overlap-own-threshold")
        threshold = gr.Slider(0.5, 1.0, value=service.default_threshold(), step=0.01,
                              label="Copy score threshold (when own)", elem_id="overlap-threshold")
    run = gr.Button("Find overlap", variant="primary", elem_id="overlap-run")
    errors = error_box("overlap-error")
    text = gr.Markdown(elem_id="overlap-summary")
    with gr.Row():
        splits = gr.Dataframe(label="Overlap / Clean / All", elem_id="overlap-splits")
        plot = gr.Plot(label="Accuracy", elem_id="overlap-plot")
    pairs = gr.Dataframe(label="Pairs (those below the threshold are offered to confirm)", max_height=320,
                         elem_id="overlap-pairs")
    with gr.Row():
        number = gr.Number(label="Pair", value=0, precision=0, minimum=0, elem_id="overlap-pair")
        show = gr.Button("Show pair", elem_id="overlap-show")
        confirm = gr.Button("A copy", elem_id="overlap-confirm")
        reject = gr.Button("Not a copy", elem_id="overlap-reject")
        forget = gr.Button("Let the detector decide", elem_id="overlap-forget")
    with gr.Row():
        left = gr.Image(label="Evaluation image", type="pil", interactive=False, elem_id="overlap-left")
        right = gr.Image(label="Reference image", type="pil", interactive=False, elem_id="overlap-right")
    report = gr.State(None)

    def find(typed_eval, typed_reference, use_own, level, progress=gr.Progress()):
        result = service.overlap_for_app(state.catalog, state.bundle, typed_eval, typed_reference,
                                         float(level) if use_own else None, load_templates("default"),
                                         on_progress=stage_progress(progress))
        return (*tables(result), result)

    wire(run.click, find, [eval_set, reference, own, threshold], [text, splits, plot, pairs, report], errors)

    def pair_of(current, chosen):
        if current is None:
            raise UserError("Find the overlap first.")
        return service.pair_images(current, int(chosen or 0))

    wire(show.click, pair_of, [report, number], [left, right], errors)

    def decided(verdict):
        def handler(current, chosen):
            if current is None:
                raise UserError("Find the overlap first.")
            chosen = int(chosen or 0)
            if not 0 <= chosen < len(current.pairs):
                raise UserError(f"There is no pair {chosen}: pick one from the table.")
            service.decide(state.catalog, current.pairs[chosen], verdict)
            current = service.resplit(state.catalog, current)
            return (*tables(current), current)
        return handler

    for button, verdict in ((confirm, True), (reject, False), (forget, None)):
        wire(button.click, decided(verdict), [report, number], [text, splits, plot, pairs, report], errors)
