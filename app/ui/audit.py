"""Audit tab: dataset and model, the label-set editor (the paper's sets preloaded), 'add child', a
background run, its tables and report, saved sessions, the diff of two sessions, HTML export."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import gradio as gr

from app.services import app_audit
from app.services import audit as service
from app.services.app_state import AppState
from app.ui.common import shown_errors
from engine.audit.labelsets import shipped_labelsets
from engine.audit.report import render_html

CURRENT = "the current model"


def report_frame(result: dict) -> str:
    """The audit's self-contained HTML report in an iframe, so its styles stay out of the app."""
    return (f'<iframe title="audit report" style="width:100%;height:900px;border:1px solid #ddd" '
            f'srcdoc="{html.escape(render_html(result), quote=True)}"></iframe>')


def build(state: AppState) -> None:
    gr.Markdown("Measure how a label set sorts people by group: the paper's FairFace probe (section 7.1) or any "
                "dataset with group columns. Results are saved as sessions you can compare.")
    with gr.Row():
        with gr.Column():
            dataset = gr.Textbox(label="Dataset (FairFace folder, or a CSV with an image column)",
                                 elem_id="audit-dataset")
            with gr.Row():
                split = gr.Dropdown(["val", "train"], value="val", label="FairFace split")
                sample = gr.Number(label="Sample (images; 0 = all)", value=0, precision=0, minimum=0)
                seed = gr.Number(label="Seed", value=0, precision=0)
            columns = gr.Textbox(label="Group columns (CSV datasets, comma separated)")
            model = gr.Dropdown([CURRENT], value=CURRENT, label="Model", allow_custom_value=True)
            templates = gr.Textbox(label="Prompt variants for the sensitivity table (one '{}' template per line)",
                                   lines=2)
            add_child = gr.Checkbox(label="Add 'child' as label set B (the paper's class-design experiment)",
                                    value=True, elem_id="audit-child")
            run = gr.Button("Run audit", variant="primary", elem_id="audit-run")
        with gr.Column():
            shipped = gr.Dropdown(shipped_labelsets(), value="paper", label="Label set (shipped)")
            editor = gr.Code(app_audit.shipped_text("paper"), language="yaml", label="Label set (editable)",
                             lines=18, max_lines=30)
    progress = gr.Markdown(elem_id="audit-progress")
    headline = gr.Markdown(elem_id="audit-headline")
    shares = gr.Dataframe(label="Category shares per group (tables 6-7)", elem_id="audit-shares", wrap=True)
    with gr.Accordion("Full report", open=False):
        report = gr.HTML()
    with gr.Accordion("Saved sessions, diff, export", open=False):
        sessions = gr.Dataframe(label="Saved sessions", interactive=False)
        with gr.Row():
            first = gr.Dropdown(label="Session", choices=[])
            second = gr.Dropdown(label="Compare with", choices=[])
            show = gr.Button("Show")
            diff = gr.Button("Diff")
            export = gr.Button("Export HTML")
        diff_table = gr.Dataframe(label="Diff: focus-category share per group, A then B", wrap=True)
        exported = gr.File(label="Report", interactive=False)
    shown_job = gr.State(None)

    def session_choices():
        ids = [s["id"] for s in service.list_sessions()]
        return (app_audit.sessions_frame(), gr.update(choices=ids, value=ids[0] if ids else None),
                gr.update(choices=ids, value=ids[1] if len(ids) > 1 else None))

    @shown_errors
    def start(data, spl, n, sd, cols, chosen, temps, child, shipped_name, yaml_text):
        name = state.model_name if chosen == CURRENT else chosen
        options = app_audit.make_options(data, yaml_text, shipped_name, child, spl, n, sd, cols, temps, name)
        loaded = state.loaded if chosen == CURRENT else None
        job = state.jobs.start("audit", f"audit of {Path(options.dataset).name}",
                               lambda job: app_audit.run(options, loaded))
        return f"Running the audit ({job.title})…", job.id

    def poll(shown):
        job = state.jobs.latest("audit")
        if job is None:
            return gr.update(), gr.update(), gr.update(), gr.update(), shown, *session_choices()
        if job.state == "running":
            return (f"Running: {job.title}…", gr.update(), gr.update(), gr.update(), shown,
                    gr.update(), gr.update(), gr.update())
        if job.state == "failed":
            return (f"**The audit failed:** {job.error}", gr.update(), gr.update(), gr.update(), job.id,
                    gr.update(), gr.update(), gr.update())
        if shown == job.id + ":done":  # already on the page
            return (gr.update(),) * 4 + (shown,) + (gr.update(),) * 3
        result = job.result
        lines = "\n".join(f"- {line}" for line in result.get("headline", []))
        return (f"Session **{result['session_id']}** saved ({job.title}).", lines, app_audit.shares_frame(result),
                report_frame(result), job.id + ":done", *session_choices())

    run.click(start, [dataset, split, sample, seed, columns, model, templates, add_child, shipped, editor],
              [progress, shown_job])
    gr.Timer(2.0).tick(poll, shown_job, [progress, headline, shares, report, shown_job, sessions, first, second])
    shipped.change(shown_errors(app_audit.shipped_text), shipped, editor)

    @shown_errors
    def do_show(session_id):
        if not session_id:
            raise gr.Error("Pick a saved session first.")
        result = service.show(session_id)
        lines = "\n".join(f"- {line}" for line in result.get("headline", []))
        return lines, app_audit.shares_frame(result), report_frame(result)

    @shown_errors
    def do_diff(a, b):
        if not a or not b:
            raise gr.Error("Pick two saved sessions to compare.")
        return app_audit.table_frame(service.diff(a, b)["tables"]["label_set_diff"])

    @shown_errors
    def do_export(session_id):
        if not session_id:
            raise gr.Error("Pick a saved session to export.")
        out = Path(tempfile.mkdtemp(prefix="cliplab-audit-")) / f"audit-{session_id}.html"
        return str(service.export(service.show(session_id), out))

    show.click(do_show, first, [headline, shares, report])
    diff.click(do_diff, [first, second], diff_table)
    export.click(do_export, first, exported)

    def models():
        from engine.api import available_models
        return gr.update(choices=[CURRENT, *(n for n, ok in available_models().items() if ok)])

    gr.on(triggers=None, fn=lambda: (models(), *session_choices()), inputs=None,
          outputs=[model, sessions, first, second])
