"""The Classify tab's library panel: apply a saved classifier to every indexed photo, choose where it abstains
("none of these"), browse the library by label, review where it is unsure, confirm or correct a label with a
click (stored as a labelled example with the person's name), improve it from those examples, and take it with
you (one small file, optionally an ONNX model with the image tower)."""

from __future__ import annotations

import getpass
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from cliplab.app.services import classifiers, labels, serving
from cliplab.app.services.app_state import AppState
from cliplab.app.services.classify import probability_text
from cliplab.app.ui.common import UserError, error_box, wire

PER_GRID = 12


def person_of(request: gr.Request | None) -> str:
    """Who labels: the logged-in name beyond loopback, else this computer's account."""
    name = getattr(request, "username", None) if request is not None else None
    return name or getpass.getuser()


def caption(top: list[tuple[str, float]] | tuple) -> str:
    return " · ".join(f"{label} {probability_text(p)}" for label, p in top[:2])


def tiles(state: AppState, rows: list[tuple[int, str]]) -> list[tuple[str, str]]:
    """(thumbnail, caption) per (file id, caption); a photo that cannot be drawn is left out."""
    drawn = dict(serving.thumbnails(state.catalog, [file_id for file_id, _ in rows]))
    return [(str(drawn[file_id]), text) for file_id, text in rows if drawn.get(file_id) is not None]


def need(classifier: str | None) -> str:
    if not classifier:
        raise UserError("Pick a saved classifier first (save one above).")
    return classifier


def build(state: AppState) -> None:
    with gr.Accordion("Your library, labelled by a saved classifier", open=False, elem_id="labels-panel"):
        gr.Markdown("Label every indexed photo with a saved classifier (from stored embeddings: quick), see where "
                    "it is unsure, confirm or correct labels, and let it learn from them.")
        with gr.Row():
            name = gr.Dropdown(label="Saved classifier", choices=[], elem_id="labels-name")
            apply = gr.Button("Label the library", variant="primary", elem_id="labels-apply")
        errors = error_box("labels-error")
        summary = gr.Markdown(elem_id="labels-summary")
        with gr.Row():
            threshold = gr.Number(label="\"None of these\" below this probability", minimum=0, maximum=1,
                                  elem_id="labels-threshold")
            save_threshold = gr.Button("Save threshold", elem_id="labels-save-threshold")
        counts = gr.Dataframe(label="Photos left unlabelled per threshold", max_height=260, elem_id="labels-counts")
        with gr.Row():
            label = gr.Dropdown(label="Show the photos labelled", choices=[], elem_id="labels-label")
            least = gr.Slider(label="with at least this probability", minimum=0, maximum=1, value=0, step=0.01)
        browse = gr.Gallery(label="Library by label (most probable first)", columns=8, height="auto",
                            object_fit="contain", allow_preview=False, elem_id="labels-browse")
        gr.Markdown("**Review**: the photos it is least sure about (smallest gap between its top two classes). "
                    "Pick one, then confirm its label or choose the right one.")
        unsure = gr.Gallery(label="Least sure", columns=6, height="auto", object_fit="contain", allow_preview=False,
                            elem_id="labels-unsure")
        picked = gr.Markdown(elem_id="labels-picked")
        with gr.Row():
            right = gr.Dropdown(label="Its right class", choices=[], elem_id="labels-right")
            confirm = gr.Button("Confirm / correct", elem_id="labels-confirm")
            improve = gr.Button("Improve from the labelled photos", elem_id="labels-improve")
        review_errors = error_box("labels-review-error")
        outcome = gr.Markdown(elem_id="labels-outcome")
        with gr.Row():
            with_onnx = gr.Checkbox(label="also an ONNX model with the image tower", value=False)
            export = gr.Button("Export the classifier", elem_id="labels-export")
        exported = gr.File(label="Classifier file", interactive=False, file_count="multiple")
        shown_ids = gr.State([])
        chosen = gr.State(None)

    def bundle():
        return state.search_bundle  # the library's model: labels are computed in the library's recorded mode

    def review_view(classifier: str):
        found = labels.review(state.catalog, bundle(), classifier, per_grid=PER_GRID)
        items = [(i.file_id, f"@{i.file_id} {caption([(i.label, i.probability)] + ([(i.second, i.second_probability)] if i.second else []))}"
                  + (f" ✓ {i.confirmed}" if i.confirmed else "")) for i in found.unsure]
        return tiles(state, items), [file_id for file_id, _ in items]

    def do_apply(classifier):
        need(classifier)
        done = labels.apply(state.catalog, bundle(), classifier)
        levels = labels.thresholds(state.catalog, bundle(), classifier)
        table = pd.DataFrame([(f"{t:g}" + (" (suggested)" if t == levels.suggested else "")
                               + (" (saved)" if t == levels.current else ""), n) for t, n in levels.counts],
                             columns=["threshold", "photos left unlabelled"])
        classes = classifiers.load_classifier(state.catalog, classifier)["classes"]
        grid, ids = review_view(classifier)
        note = f"{done.summary} Suggested \"none of these\" threshold: {levels.suggested:g}."
        return (note, table, levels.current if levels.current is not None else levels.suggested,
                gr.update(choices=classes, value=classes[0]), grid, ids, gr.update(choices=classes, value=None))

    def do_browse(classifier, which, at_least):
        if not classifier or not which:
            return []
        rows, _total = labels.labelled_photos(state.catalog, bundle(), classifier, which, float(at_least or 0),
                                              limit=60)
        return tiles(state, [(r.file_id, f"@{r.file_id} {caption(r.top)}") for r in rows])

    def do_save_threshold(classifier, value):
        need(classifier)
        classifiers.set_threshold(state.catalog, classifier, value)
        return do_apply(classifier)

    def select(ids, event: gr.SelectData):
        file_id = ids[event.index]
        return file_id, f"Photo @{file_id} picked: choose its right class, then Confirm / correct."

    def do_confirm(classifier, file_id, right_label, request: gr.Request):
        if file_id is None:
            raise UserError("Pick a photo in the review grid first.")
        if not right_label:
            raise UserError("Choose the photo's right class first.")
        example = labels.label_photo(state.catalog, bundle(), classifier, int(file_id), right_label,
                                     person_of(request))
        grid, ids = review_view(classifier)
        total = len(labels.examples(state.catalog, bundle(), classifier))
        return (f"Photo @{file_id} {example.action} as **{example.label}** by {example.person} "
                f"({total} labelled photo(s) so far).", grid, ids)

    def do_improve(classifier):
        need(classifier)
        result = labels.improve_classifier(state.catalog, bundle(), classifier)
        done = labels.apply(state.catalog, bundle(), classifier)
        return f"{result.message} {done.summary}"

    def do_export(classifier, onnx):
        need(classifier)
        folder = Path(tempfile.mkdtemp(prefix="cliplab-classifier-"))
        written = labels.export_classifier(state.catalog, bundle(), classifier, folder / f"{classifier}.json",
                                           folder / f"{classifier}.onnx" if onnx else None)
        return [str(p) for p in written]

    outputs = [summary, counts, threshold, label, unsure, shown_ids, right]
    wire(apply.click, do_apply, [name], outputs, errors).then(do_browse, [name, label, least], browse)
    wire(save_threshold.click, do_save_threshold, [name, threshold], outputs, errors)
    label.input(do_browse, [name, label, least], browse)
    least.release(do_browse, [name, label, least], browse)
    unsure.select(select, [shown_ids], [chosen, picked])
    wire(confirm.click, do_confirm, [name, chosen, right], [outcome, unsure, shown_ids], review_errors, keep=(1, 2))
    wire(improve.click, do_improve, [name], outcome, review_errors)
    wire(export.click, do_export, [name, with_onnx], exported, review_errors)
    gr.on(triggers=None, fn=lambda: gr.update(choices=classifiers.list_classifiers(state.catalog)), inputs=None,
          outputs=name)
