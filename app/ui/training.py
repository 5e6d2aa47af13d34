"""Train or fine-tune from the Models tab: one background training run at a time, its live loss curve,
and Stop. The curve follows the run's log, so it survives a page refresh."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from cliplab.app.services import models
from cliplab.app.services import training as service
from cliplab.app.services.app_state import AppState
from cliplab.app.ui.common import UserError, error_box, wire


def curve(records: list[dict]) -> go.Figure:
    train = [r for r in records if r.get("kind", "train") == "train" and "loss" in r]
    figure = go.Figure(go.Scatter(x=[r["step"] for r in train], y=[r["loss"] for r in train], mode="lines",
                                  name="loss"))
    figure.update_layout(height=280, margin=dict(l=40, r=10, t=30, b=30), title="training loss",
                         xaxis_title="step", yaxis_title="loss")
    return figure


def eval_figure(rows: list[dict]) -> go.Figure:
    """Each held-out metric the trainer measured, over the steps."""
    figure = go.Figure()
    for metric in dict.fromkeys(key for row in rows for key in row if key != "step"):
        points = [(row["step"], row[metric]) for row in rows if metric in row]
        figure.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                    name=metric))
    figure.update_layout(height=280, margin=dict(l=40, r=10, t=30, b=30), title="held-out evaluations",
                         xaxis_title="step", yaxis_title="value", legend=dict(orientation="h", y=-0.3))
    return figure


def eval_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame.round(4) if not frame.empty else pd.DataFrame(columns=["step"])


def status_text(status: dict) -> str:
    if status["folder"] is None:
        return "No training run yet."
    steps = [r["step"] for r in status["records"]]
    state = "running" if status["running"] else ("stopped" if status.get("stopped") else "finished")
    return f"Run `{status['folder']}`: {state}, {len(steps)} logged step(s)" + (
        f", last step {steps[-1]}." if steps else ".")


def build(state: AppState) -> None:
    gr.Markdown("Trains in the background, one run at a time. The curve follows the run's log, so it survives a "
                "page refresh; the run goes on if the page is closed, until it ends or you press Stop.")
    with gr.Row():
        data = gr.Textbox(label="Training data (image folder with .txt captions, a CSV/TSV, or 'synthetic')",
                          value="synthetic", elem_id="train-data")
        start_from = gr.Textbox(label="Fine-tune from (model name or checkpoint; empty = from scratch)")
        architecture = gr.Textbox(label="Architecture when training from scratch", value=service.SMALL_SHAPE)
        extra = gr.Textbox(label="Extra training options", value="--steps 200 --batch-size 64",
                           elem_id="train-extra")
    with gr.Row():
        start = gr.Button("Start training", elem_id="train-start")
        stop = gr.Button("Stop", variant="stop", elem_id="train-stop", interactive=False)
        watch = gr.Textbox(label="Follow another run folder", placeholder="empty = the latest run")
    errors = error_box("train-error")
    status = gr.Markdown(elem_id="train-status")
    plot = gr.Plot()
    with gr.Row():
        evals = gr.Dataframe(label="Held-out evaluations (one row per evaluation)", elem_id="train-evals",
                             max_height=280)
        eval_plot = gr.Plot(label="Evaluations over the steps", elem_id="train-eval-plot")
    with gr.Row():
        use_name = gr.Textbox(label="Name for the trained model (empty: the name the trainer gave it)",
                              elem_id="train-use-name")
        use = gr.Button("Use this model", variant="primary", elem_id="train-use", interactive=False)
    use_errors = error_box("train-use-error")
    used = gr.Markdown(elem_id="train-used")
    output = gr.Textbox(label="Trainer output (tail)", lines=6, interactive=False)

    def run_of(folder):
        return Path(folder).expanduser() if (folder or "").strip() else service.latest_run()

    def poll(folder):
        run_dir = run_of(folder)
        current = service.run_status(run_dir)
        running = bool(current["running"])
        rows = service.eval_rows(current["records"])
        return (status_text(current), curve(current["records"]), current["tail"],
                gr.update(interactive=not running), gr.update(interactive=running), eval_frame(rows),
                eval_figure(rows), gr.update(interactive=service.final_model(run_dir) is not None))

    def use_model(folder, name):
        bundle = service.use_run(state, run_of(folder), name)
        models.reindex_library(state)
        return (f"**{bundle.name}** is now the current model (classify, search, audits and evaluations use it); "
                "the library is being indexed with it in the background.")

    wire(use.click, use_model, [watch, use_name], used, use_errors)

    def begin(d, s, a, e):
        service.start_run(d, s, a, e)  # refuses a second run while one goes on
        return poll("")

    def end(folder):
        run_dir = Path(folder).expanduser() if (folder or "").strip() else service.latest_run()
        if not service.stop_run(run_dir):
            raise UserError("No training run is going on to stop.")
        return poll(folder)

    outputs = [status, plot, output, start, stop, evals, eval_plot, use]
    # start is greyed at once: a second click while the first is being started does nothing
    wire(start.click(lambda: gr.update(interactive=False), None, start).then, begin,
         [data, start_from, architecture, extra], outputs, errors, keep=tuple(range(8))).then(poll, watch, outputs)
    wire(stop.click, end, watch, outputs, errors, keep=tuple(range(8)))
    gr.Timer(3.0).tick(poll, watch, outputs, show_progress="hidden")
    gr.on(triggers=None, fn=poll, inputs=watch, outputs=outputs)
