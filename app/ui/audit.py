"""Audit tab: dataset and model (the demo audit preloaded on a fresh form), the label-set editor, the
class-design experiment ('add child'), search-bias queries, a label column for worst-group accuracy, a
background run, its tables (shares, worst group and gaps, search bias) and report, saved sessions, the
diff of two sessions, HTML export."""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import gradio as gr

from cliplab.app.services import audit as service
from cliplab.app.services import models
from cliplab.app.services.app_state import AppState
from cliplab.app.ui.common import UserError, error_box, wire

CURRENT = "the current model"


def report_frame(result: service.AuditResult) -> str:
    """The audit's self-contained HTML report in an iframe, so its styles stay out of the app."""
    return (f'<iframe title="audit report" style="width:100%;height:900px;border:1px solid #ddd" '
            f'srcdoc="{html.escape(service.render_html(result), quote=True)}"></iframe>')


def headline_text(result: service.AuditResult) -> str:
    return "\n".join(f"- {line}" for line in service.summary_lines(result))


def session_choices(state: AppState, newest: str | None = None,
                    keep: tuple[str | None, str | None] = (None, None)) -> tuple:
    """The table and both dropdowns; the dropdowns keep what the person picked unless a new session
    was just saved (then it becomes the first one)."""
    ids = [s["id"] for s in service.list_sessions(state.catalog)]
    a, b = keep
    a = newest or (a if a in ids else (ids[0] if ids else None))
    b = b if b in ids else next((i for i in ids if i != a), None)
    return service.sessions_frame(state.catalog), gr.update(choices=ids, value=a), gr.update(choices=ids, value=b)


def start_audit(state: AppState, data: str, spl: str, n: float | None, sd: float | None, cols: str, chosen: str,
                temps: str, child: bool, shipped_name: str, yaml_text: str, label_column: str = "",
                queries: str = "", k: float | None = 10, preset: str = "paper") -> tuple[str, None]:
    """Start the audit of the form as a background job (the poll shows its result)."""
    name = state.model_name if chosen == CURRENT else chosen
    options = service.make_options(data, yaml_text, shipped_name, child, spl, n, sd, cols, temps, name,
                                   label_column=label_column, queries=queries, k=int(k or 10), preset=preset)
    bundle = state.bundle if chosen == CURRENT else None
    job = state.jobs.start("audit", f"audit of {Path(options.dataset).name}",
                           lambda job: service.run(state.catalog, options, bundle=bundle, progress=False,
                                                   on_progress=lambda stage, done: job.update(done, stage)))
    return f"Running the audit ({job.title})…", None


NOTHING = (gr.update(),) * 10  # progress, headline, shares, gaps, search, report, shown job, sessions, first, second
SHOWN = 7  # the outputs up to the shown job; the session lists follow


def result_outputs(result: service.AuditResult) -> tuple:
    """headline, shares, gaps, search bias and report of a session."""
    return (headline_text(result), service.shares_frame(result), service.gaps_frame(result),
            service.search_bias_frame(result), report_frame(result))


def poll(state: AppState, shown: str | None, a: str | None, b: str | None, known: list[str]) -> tuple:
    """Only news changes the page: a job that finished since the page last showed one, or sessions
    saved elsewhere (the CLI), which join the lists with the person's choices kept. A poll with no
    news leaves everything, the session dropdowns above all, as the person set it."""
    job = state.jobs.latest("audit")
    ids = [s["id"] for s in service.list_sessions(state.catalog)]
    if job is None or job.id == shown:
        if ids == known:
            return (*NOTHING, known)
        return (*NOTHING[:SHOWN], *session_choices(state, None, (a, b)), ids)
    if job.state == "running":
        return (f"Running: {job.title}: {job.progress_line()}", *NOTHING[1:], known)
    if job.state == "failed":
        return (f"**The audit failed:** {job.error}", *NOTHING[1:SHOWN - 1], job.id, *NOTHING[SHOWN:], known)
    result = job.result
    return (f"Session **{result.session_id}** saved ({job.title}).", *result_outputs(result), job.id,
            *session_choices(state, result.session_id, (a, b)), ids)


def do_show(state: AppState, session_id: str | None) -> tuple:
    if not session_id:
        raise UserError("Pick a saved session first.")
    result = service.show(state.catalog, session_id)
    return (f"Showing session **{session_id}**.", *result_outputs(result))


def do_diff(state: AppState, a: str | None, b: str | None):
    if not a or not b:
        raise UserError("Pick two saved sessions to compare.")
    if a == b:
        raise UserError("Pick two different sessions to compare.")
    return service.diff_frame(service.diff(state.catalog, a, b).label_set_diff)


def do_export(state: AppState, session_id: str | None) -> str:
    if not session_id:
        raise UserError("Pick a saved session to export.")
    out = Path(tempfile.mkdtemp(prefix="cliplab-audit-")) / f"audit-{session_id}.html"
    return str(service.export(service.show(state.catalog, session_id), out))


def demo_form(current: str | None) -> tuple:
    """A form with no dataset yet gets the demo audit: its dataset, group columns and label set, so one
    click runs a meaningful audit on a fresh install. A dataset already typed is left as it is."""
    if (current or "").strip():
        return (gr.update(),) * 4
    path, columns = service.demo_dataset()
    return path, columns, "demo", service.shipped_text("demo")


def model_choices() -> dict:
    return gr.update(choices=[CURRENT, *(r["name"] for r in models.list_models() if r["downloaded"])])


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
            columns = gr.Textbox(label="Group columns (CSV datasets, comma separated)", elem_id="audit-columns")
            with gr.Row():
                label_column = gr.Textbox(label="Label column (each image's class: worst-group accuracy)",
                                          elem_id="audit-label-column")
                preset = gr.Dropdown(["paper", "datacomp"], value="paper", label="Report layout",
                                     elem_id="audit-preset")
            with gr.Row():
                queries = gr.Textbox(label="Neutral search queries, one per line (empty: the label set's own)",
                                     lines=2, elem_id="audit-queries")
                top_k = gr.Number(label="Search bias: top K", value=10, precision=0, minimum=1)
            model = gr.Dropdown([CURRENT], value=CURRENT, label="Model", allow_custom_value=True)
            templates = gr.Textbox(label="Prompt variants for the sensitivity table (one '{}' template per line)",
                                   lines=2)
            add_child = gr.Checkbox(label="Run the label set's class-design experiment as label set B ('child' for "
                                          "the paper's set)", value=True, elem_id="audit-child")
            run = gr.Button("Run audit", variant="primary", elem_id="audit-run")
            run_errors = error_box("audit-error")
        with gr.Column():
            shipped = gr.Dropdown(service.shipped_labelsets(), value="paper", label="Label set (shipped)",
                                  elem_id="audit-labelset")
            editor = gr.Code(service.shipped_text("paper"), language="yaml", label="Label set (editable)",
                             lines=18, max_lines=30, elem_id="audit-editor")
    progress = gr.Markdown(elem_id="audit-progress")
    headline = gr.Markdown(elem_id="audit-headline")
    shown_session = gr.Markdown(elem_id="audit-shown")
    shares = gr.Dataframe(label="Category shares per group (tables 6-7)", elem_id="audit-shares", wrap=True,
                          max_height=400)
    gaps = gr.Dataframe(label="Worst group and gap to the best, every measure (bootstrap 95% intervals)",
                        elem_id="audit-gaps", wrap=True, max_height=400)
    search = gr.Dataframe(label="Search bias: MaxSkew@K, MinSkew@K, NDKL per neutral query",
                          elem_id="audit-search-bias", wrap=True, max_height=400)
    with gr.Accordion("Full report", open=False):
        report = gr.HTML()
    with gr.Accordion("Saved sessions, diff, export", open=False):
        sessions = gr.Dataframe(label="Saved sessions", interactive=False)
        with gr.Row():
            first = gr.Dropdown(label="Session", choices=[], elem_id="audit-session")
            second = gr.Dropdown(label="Compare with", choices=[], elem_id="audit-compare")
            show = gr.Button("Show", elem_id="audit-show")
            diff = gr.Button("Diff", elem_id="audit-diff")
            export = gr.Button("Export HTML", elem_id="audit-export")
        session_errors = error_box("audit-session-error")
        diff_table = gr.Dataframe(label="Diff: focus-category share per group, A then B", wrap=True,
                                  elem_id="audit-diff-table", max_height=400)
        exported = gr.File(label="Report", interactive=False, elem_id="audit-exported")
    shown_job = gr.State(None)  # id of the finished job whose session is on the page

    def start(data, spl, n, sd, cols, chosen, temps, child, shipped_name, yaml_text, label, texts, k, layout):
        return start_audit(state, data, spl, n, sd, cols, chosen, temps, child, shipped_name, yaml_text, label,
                           texts, k, layout)

    def poll_page(shown, a, b, known):
        return poll(state, shown, a, b, known)

    wire(run.click, start, [dataset, split, sample, seed, columns, model, templates, add_child, shipped, editor,
                            label_column, queries, top_k, preset],
         [progress, shown_job], run_errors, keep=(1,))
    known_sessions = gr.State([])  # the session ids the dropdowns were last given
    gr.Timer(2.0).tick(poll_page, [shown_job, first, second, known_sessions],
                       [progress, headline, shares, gaps, search, report, shown_job, sessions, first, second,
                        known_sessions],
                       show_progress="hidden")
    wire(shipped.change, service.shipped_text, shipped, editor, run_errors, keep=(0,))

    def show_session(session_id):
        return do_show(state, session_id)

    def diff_sessions(a, b):
        return do_diff(state, a, b)

    def export_session(session_id):
        return do_export(state, session_id)

    wire(show.click, show_session, first, [shown_session, headline, shares, gaps, search, report], session_errors)
    wire(diff.click, diff_sessions, [first, second], diff_table, session_errors)
    wire(export.click, export_session, first, exported, session_errors)

    gr.on(triggers=None, fn=lambda: (model_choices(), *session_choices(state)), inputs=None,
          outputs=[model, sessions, first, second])
    gr.on(triggers=None, fn=demo_form, inputs=dataset, outputs=[dataset, columns, shipped, editor])
