"""Search tab panels over app.services.library: the library's folders (add, index, remove) and duplicates."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from cliplab.app.services import library, serving, watching
from cliplab.app.services.app_state import AppState
from cliplab.app.ui.common import UserError, error_box, stage_progress, wire


def folder_lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").replace(";", "\n").splitlines() if line.strip()]


def job_status(state: AppState) -> tuple[str, pd.DataFrame, dict]:
    """The library's folders and counts, the latest indexing job, the skipped files, the Remove choices."""
    job = state.jobs.latest("index")
    summary = library.library_summary(state.catalog)
    folders = ", ".join(f"{f.path}{'' if f.online else ' (offline)'}: {f.files} files" for f in summary.folders)
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
    if state.watcher is not None:  # watching, polling or offline per folder; queue; last reconcile
        lines.append(f"**Watching for changes:** {watching.status(state.catalog, state.watcher).summary()}.")
    skipped = pd.DataFrame(summary.skipped, columns=["file", "why it was skipped"])
    return "\n\n".join(lines), skipped, gr.update(choices=[f.path for f in summary.folders])


def build_library(state: AppState) -> None:
    gr.Markdown("Add the folders whose photos you want to search. The app shows only the photos it indexed, "
                "never the other files in those folders; removing a folder forgets its photos (the files stay).")
    with gr.Row():
        add_folder = gr.Textbox(label="Add a folder", placeholder="/home/me/Pictures", elem_id="index-folder",
                                scale=3)
        confirm = gr.Checkbox(label="Yes, index this system folder", value=False, elem_id="index-confirm",
                              scale=1)
        add = gr.Button("Add and index", elem_id="index-add", scale=1)
    add_error = error_box("index-error")
    with gr.Row():
        folders = gr.Dropdown(label="Library folders", choices=[], elem_id="index-folders", scale=3)
        remove = gr.Button("Remove from the library", elem_id="index-remove", scale=1)
    remove_error = error_box("index-remove-error")
    status = gr.Markdown(elem_id="index-status")
    skipped = gr.Dataframe(label="Skipped files", wrap=True, max_height=300)
    timer = gr.Timer(2.0)  # polls the latest indexing job: a refreshed page picks it up again

    def start_indexing(text, confirmed):
        chosen = folder_lines(text)
        if not chosen:
            raise UserError("Type the path of a folder to add.")
        for folder in chosen:  # refused now, before a job starts; a library folder that is missing goes offline
            library.check_folder(folder, bool(confirmed), state.catalog)
        bundle = state.search_bundle
        state.jobs.start("index", f"indexing {', '.join(chosen)}",
                         lambda job: library.add_folders(state.catalog, bundle, chosen, job=job,
                                                         confirm_system=bool(confirmed)))
        return (*job_status(state), False)

    def remove_folder(folder):
        if not folder:
            raise UserError("Pick a library folder to remove.")
        running = state.jobs.latest("index")
        if running is not None and not running.finished:
            raise UserError("Wait for the indexing job to finish, then remove the folder.")
        removed = library.remove_folder(state.catalog, folder, index_cache=state.vector_indexes)
        serving.forget_thumbnails(state.catalog)
        text, table, choices = job_status(state)
        return f"Removed {folder} and its {removed} file(s) from the library.\n\n" + text, table, choices

    wire(add.click, start_indexing, [add_folder, confirm], [status, skipped, folders, confirm], add_error,
         keep=(0, 1, 2, 3))
    wire(remove.click, remove_folder, folders, [status, skipped, folders], remove_error, keep=(1, 2))
    known = gr.State([])  # the folders the Remove list was last given

    def poll(listed: list[str]):
        """Status every tick; the Remove list only when the library's folders changed (an update while the
        list is open would close it under the person's pointer)."""
        text, table, _ = job_status(state)
        now = [f.path for f in library.library_summary(state.catalog).folders]
        return text, table, (gr.update(choices=now) if now != listed else gr.update()), now

    timer.tick(poll, known, [status, skipped, folders, known], show_progress="hidden")
    gr.on(triggers=None, fn=poll, inputs=known, outputs=[status, skipped, folders, known])


def build_duplicates(state: AppState) -> None:
    gr.Markdown("**Exact copies** (the same bytes) with a suggested keeper, and **similar pictures** (one picture "
                "resized, cropped, recoloured or re-encoded, to the copy detector, taken in the same burst: no keeper, "
                "look before deleting). " + library.KEEPER_RULE)
    with gr.Row():
        fixed = gr.Checkbox(label="Own copy score instead of the detector's", value=False,
                            elem_id="duplicates-fixed")
        threshold = gr.Slider(0.50, 1.0, value=library.copy_threshold(), step=0.01, label="Copy score (when own)")
        find = gr.Button("Find duplicates", elem_id="duplicates-find")
    errors = error_box("duplicates-error")
    summary = gr.Markdown(elem_id="duplicates-summary")
    gallery = gr.Gallery(label="Groups (an exact group's keeper first)", columns=6, height="auto",
                         object_fit="contain", elem_id="duplicates-gallery")
    table = gr.Dataframe(label="Groups", wrap=True, max_height=400, elem_id="duplicates-table")

    def do_find(use_fixed, level, progress=gr.Progress()):
        return duplicate_groups(state, float(level) if use_fixed else None, stage_progress(progress))

    wire(find.click, do_find, [fixed, threshold], [summary, gallery, table], errors)


def duplicate_groups(state: AppState, threshold: float | None, on_progress=None) -> tuple[str, list, pd.DataFrame]:
    """The panel's summary, gallery and table; threshold None: the detector's own (as `cliplab duplicates`).
    The first use prepares the learned copy detector (about two minutes, on the progress bar)."""
    groups = library.find_duplicates(state.catalog, threshold, on_progress=on_progress)
    rows, shown = [], []
    for number, group in enumerate(groups, 1):
        keeper = group.keeper
        kind = "exact copies" if group.kind == "exact" else "similar pictures"
        for member in sorted(group.members, key=lambda m: m is not keeper):
            rows.append({"group": number, "kind": kind, "keep": "✓" if member is keeper else "", "file": member.path})
            shown.append((member.file_id, f"group {number} · {kind}{' · keep' if member is keeper else ''}"))
    shown = shown[:120]
    thumbs = dict(serving.thumbnails(state.catalog, [file_id for file_id, _ in shown]))
    items = [(str(thumbs[file_id]), caption) for file_id, caption in shown if thumbs.get(file_id)]
    exact = sum(g.kind == "exact" for g in groups)
    similar = [g for g in groups if g.kind != "exact"]
    if not groups:
        note = "No copies and no similar pictures found."
    else:
        note = f"{exact} group(s) of exact copies, {len(similar)} group(s) of similar pictures"
        note += f" (copy score >= {similar[0].threshold:.2f})." if similar else "."
        note += " " + library.SIMILAR_NOTE if similar else ""
    return note, items, pd.DataFrame(rows, columns=["group", "kind", "keep", "file"])
