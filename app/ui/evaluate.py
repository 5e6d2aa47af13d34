"""Evaluate tab: zero-shot, linear probe, few-shot and retrieval on a labelled dataset in a library folder,
the same services as `cliplab eval`, run as a background job with its stage and an estimate; the results
as tables and a plot, and the run saved in the catalog as the CLI saves it."""

from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from cliplab.app.services import evaluate as service
from cliplab.app.services.app_state import AppState
from cliplab.app.services.classify import load_templates, template_lines
from cliplab.app.ui.common import UserError, error_box, wire

HELP = ("Measure the current model on your own labelled images, in the exact mode (as `cliplab eval`). The dataset "
        "lies in one of your library folders: an image folder with one sub-folder per class, or a CSV of "
        "`path,label` rows; for retrieval a CSV of `image,caption` rows. Each run is saved with the model and the "
        "dataset's fingerprint.")
KIND_HELP = {"zero-shot": "accuracy of the class names as prompts, per class, and the confusion matrix",
             "linear probe": "a logistic regression on the image features (60/20/20 split)",
             "few-shot": "k-shot probes against the zero-shot classifier",
             "retrieval": "image ↔ caption recall@1/5/10"}


def figure(outcome: service.EvalOutcome) -> go.Figure:
    """The confusion matrix (zero-shot, probe), accuracy over shots (few-shot), recall bars (retrieval)."""
    fig = go.Figure()
    if outcome.confusion is not None:
        fig.add_trace(go.Heatmap(z=outcome.confusion, x=outcome.classnames, y=outcome.classnames, colorscale="Blues",
                                 hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>"))
        fig.update_layout(title="confusion matrix", xaxis_title="predicted", yaxis_title="true",
                          yaxis_autorange="reversed")
    elif outcome.kind == "fewshot":
        table = outcome.detail
        fig.add_trace(go.Scatter(x=table["shots"], y=100 * table["mean"], error_y=dict(array=100 * table["std"]),
                                 mode="lines+markers", name="linear probe (mean ± std)"))
        fig.add_hline(y=100 * outcome.metrics["zero_shot_top1"], line_dash="dash", line_color="#c92a2a",
                      annotation_text="zero-shot")
        fig.update_layout(title="zero-shot vs few-shot", xaxis_title="labelled examples per class",
                          yaxis_title="accuracy (%)", xaxis_type="log")
    else:
        for direction, rows in outcome.detail.groupby("direction", sort=False):
            fig.add_trace(go.Bar(x=[f"R@{k}" for k in rows["K"]], y=100 * rows["recall"], name=direction))
        fig.update_layout(title="retrieval recall", yaxis_title="recall (%)", barmode="group")
    fig.update_layout(height=420, margin=dict(l=40, r=10, t=40, b=40))
    return fig


def detail_frame(outcome: service.EvalOutcome):
    frame = outcome.detail.copy()
    for column in ("mean", "std", "recall"):
        if column in frame:
            frame[column] = frame[column].map(lambda v: f"{100 * v:.2f}%")
    return frame


def shots_of(text: str | None) -> list[int]:
    try:
        shots = [int(part) for part in (text or "").replace(" ", "").split(",") if part]
    except ValueError:
        raise UserError(f"The shots are whole numbers separated by commas (e.g. 1,2,4,8), not {text!r}.") from None
    if not shots or min(shots) < 1:
        raise UserError("Give at least one number of shots, each 1 or more (e.g. 1,2,4,8).")
    return shots


def build(state: AppState) -> None:
    gr.Markdown(HELP)
    with gr.Row():
        with gr.Column(scale=2):
            kind = gr.Radio(list(service.KINDS), value="zero-shot", label="Evaluation", elem_id="eval-kind")
            about = gr.Markdown(KIND_HELP["zero-shot"])
            dataset = gr.Textbox(label="Dataset (a folder or CSV inside a library folder)", elem_id="eval-dataset")
        with gr.Column(scale=2):
            templates = gr.Textbox(label="Templates (zero-shot, few-shot; '{}' marks the class name)",
                                   value="\n".join(load_templates("default")), lines=3, elem_id="eval-templates")
            with gr.Row():
                shots = gr.Textbox(label="Shots (few-shot)", value="1,2,4,8,16", elem_id="eval-shots")
                seeds = gr.Number(label="Seeds (few-shot)", value=3, precision=0, minimum=1)
                prefix = gr.Textbox(label="Caption prefix (retrieval)", placeholder="a photo of ")
    run = gr.Button("Evaluate", variant="primary", elem_id="eval-run")
    errors = error_box("eval-error")
    progress = gr.Markdown(elem_id="eval-progress")
    with gr.Row():
        headline = gr.Dataframe(label="Results", elem_id="eval-headline", max_height=360)
        plot = gr.Plot(label="Plot", elem_id="eval-plot")
    detail = gr.Dataframe(label="Details", elem_id="eval-detail", max_height=400)
    shown = gr.State(None)  # id of the finished job whose results are on the page

    kind.change(lambda k: KIND_HELP[k], kind, about)

    def start(chosen, typed, template_text, shot_text, seed_count, caption_prefix):
        code = service.KINDS[chosen]
        needs_templates = code in ("zeroshot", "fewshot")
        listed = template_lines(template_text) if needs_templates else []
        counts = shots_of(shot_text) if code == "fewshot" else []
        service.library_dataset(state.catalog, code, typed)  # a wrong dataset is said here, before any job
        bundle = state.bundle
        job = state.jobs.start("evaluate", f"{chosen} evaluation of {typed.strip() or 'the dataset'}",
                               lambda job: service.evaluate_for_app(
                                   state.catalog, bundle, code, typed, listed, counts, int(seed_count or 1),
                                   caption_prefix or "", on_progress=lambda stage, done: job.update(done, stage)))
        return f"Started: {job.title}…"

    wire(run.click, start, [kind, dataset, templates, shots, seeds, prefix], progress, errors)

    def poll(last):
        job = state.jobs.latest("evaluate")
        if job is None or job.id == last:
            return (gr.update(),) * 4 + (last,)
        if job.state == "running":
            return f"Running: {job.title}: {job.progress_line()}", gr.update(), gr.update(), gr.update(), last
        if job.state == "failed":
            return f"**The evaluation failed:** {job.error}", None, None, None, job.id
        outcome = job.result
        saved = f" Saved as evaluation run **{outcome.run_id}**." if outcome.run_id else ""
        return (f"Done: {job.title}.{saved}", outcome.headline, figure(outcome), detail_frame(outcome), job.id)

    gr.Timer(2.0).tick(poll, shown, [progress, headline, plot, detail, shown], show_progress="hidden")
    gr.on(triggers=None, fn=poll, inputs=shown, outputs=[progress, headline, plot, detail, shown])


