"""Train or fine-tune from the Models tab: a background `cliplab train` run and its live loss curve."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import plotly.graph_objects as go

from app.services import training_runs
from app.services.app_state import AppState
from app.ui.common import shown_errors


def curve(records: list[dict]) -> go.Figure:
    train = [r for r in records if r.get("kind", "train") == "train" and "loss" in r]
    figure = go.Figure(go.Scatter(x=[r["step"] for r in train], y=[r["loss"] for r in train], mode="lines",
                                  name="loss"))
    figure.update_layout(height=280, margin=dict(l=40, r=10, t=30, b=30), title="training loss",
                         xaxis_title="step", yaxis_title="loss")
    return figure


def status_text(status: dict) -> str:
    if status["folder"] is None:
        return "No training run yet."
    steps = [r["step"] for r in status["records"]]
    state = "running" if status["running"] else "finished or stopped"
    return f"Run `{status['folder']}`: {state}, {len(steps)} logged step(s)" + (
        f", last step {steps[-1]}." if steps else ".")


def build(state: AppState) -> None:
    gr.Markdown("Runs `cliplab train` in the background. The curve follows the run's log, so it survives a "
                "page refresh; the run goes on if the page is closed.")
    with gr.Row():
        data = gr.Textbox(label="Training data (image folder with .txt captions, a CSV/TSV, or 'synthetic')",
                          value="synthetic")
        start_from = gr.Textbox(label="Fine-tune from (model name or checkpoint; empty = from scratch)")
        architecture = gr.Textbox(label="Architecture when training from scratch", value=training_runs.SMALL_SHAPE)
        extra = gr.Textbox(label="Extra options for cliplab train", value="--steps 200 --batch-size 64")
    with gr.Row():
        start = gr.Button("Start training")
        watch = gr.Textbox(label="Follow another run folder", placeholder="empty = the latest run")
    status = gr.Markdown()
    plot = gr.Plot()
    output = gr.Textbox(label="Trainer output (tail)", lines=6, interactive=False)

    def poll(folder):
        run_dir = Path(folder).expanduser() if (folder or "").strip() else training_runs.latest_run()
        current = training_runs.run_status(run_dir)
        return status_text(current), curve(current["records"]), current["tail"]

    @shown_errors
    def begin(d, s, a, e):
        training_runs.start_run(d, s, a, e)
        return poll("")

    start.click(begin, [data, start_from, architecture, extra], [status, plot, output])
    gr.Timer(3.0).tick(poll, watch, [status, plot, output])
