"""Classify tab: roll your own classifier — class names one per line, templates, probabilities for every
image (thumbnails and a chart per image), a second label set side by side, threshold mode, saved
classifiers. The templates box is the one truth: a preset fills it, edits to it are what runs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from cliplab.app.services import classifiers, library
from cliplab.app.services.app_state import AppState
from cliplab.app.services.classify import (
    TEMPLATE_PRESETS,
    class_lines,
    classify_for_app,
    export_csv,
    folder_images,
    load_templates,
    probability_text,
    template_lines,
)
from cliplab.app.services.first_start import DEMO_CLASSES
from cliplab.app.ui import labels as labels_panel
from cliplab.app.ui.common import (
    UserError,
    error_box,
    file_paths,
    text_tower_choice,
    text_tower_name,
    text_tower_update,
    wire,
)

DEFAULT_CLASSES = "\n".join(DEMO_CLASSES)  # what the demo photos show
DEFAULT_PRESET = "default"
SHOWN_IMAGES = 60  # thumbnails in the gallery; the table and the chart selector hold every image


def preset_text(preset: str | None) -> str:
    return "\n".join(load_templates(preset or DEFAULT_PRESET))


def images_of(state: AppState, uploads, library_file: str | None, folder: str | None) -> list[str]:
    """Uploaded files, else an indexed library photo, else every image of a library folder."""
    paths = file_paths(uploads)
    if not paths and library_file:
        if library_file not in library.indexed_paths(state.catalog):
            raise UserError("Pick the photo from the list (it holds the library's indexed photos).")
        paths = [library_file]
    if not paths and folder:
        if folder not in [f.path for f in library.library_summary(state.catalog).folders]:
            raise UserError("Pick one of your library folders from the list.")
        paths = [str(p) for p in folder_images(folder)]
    return paths


def thumbnail(path: Path, size: int = 192) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            image.draft("RGB", (2 * size, 2 * size))
            small = image.convert("RGB")
    except (OSError, ValueError):
        return None
    small.thumbnail((size, size))
    return small


def image_choices(paths: list[Path]) -> list[tuple[str, int]]:
    return [(f"{i + 1}. {Path(p).name}", i) for i, p in enumerate(paths)]


def probabilities(result, index: int) -> dict[str, float]:
    return dict(zip(result.classifier.classnames, map(float, result.probs[index])))


def tables(result, threshold_mode: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The probability table (top-k per image, or every class above the threshold), probabilities with
    significant digits, and the images-per-class summary."""
    if threshold_mode:
        rows = pd.DataFrame([dict(path=name, label=label, probability=prob)
                             for name, labels in zip(result.labels, result.above_threshold) for label, prob in labels],
                            columns=["path", "label", "probability"])
    else:
        rows = result.table()
    rows["path"] = rows["path"].map(lambda p: Path(p).name)
    rows["probability"] = rows["probability"].map(probability_text)
    counts = pd.DataFrame([(label, n, f"{share:.0%}") for label, n, share in result.count_rows()],
                          columns=["class (top-1)", "images", "share"])
    return rows, counts


def build(state: AppState) -> None:
    gr.Markdown("Type the classes you want, one per line. The model scores every image against a prompt "
                "built from each class name and shows how likely each class is.")
    with gr.Row():
        with gr.Column(scale=1):
            uploads = gr.File(label="Images to classify", file_count="multiple", file_types=["image"],
                              elem_id="classify-upload")
            library_file = gr.Dropdown(label="…or a photo from the library", choices=[], allow_custom_value=False,
                                       elem_id="classify-library")
            folder = gr.Dropdown(label="…or every image in a library folder", choices=[], allow_custom_value=False,
                                 elem_id="classify-folder")
        with gr.Column(scale=1):
            classes = gr.Textbox(label="Class names (one per line)", value=DEFAULT_CLASSES, lines=6,
                                 elem_id="classify-classes")
            preset = gr.Dropdown(label="Fill the templates from a preset", choices=list(TEMPLATE_PRESETS),
                                 value=DEFAULT_PRESET, elem_id="classify-preset")
            typed = gr.Textbox(label="Templates (one per line, '{}' marks the class name; edit freely)",
                               value=preset_text(DEFAULT_PRESET), lines=4, max_lines=12, elem_id="classify-templates")
            second = gr.Textbox(label="Second label set to compare (optional, one per line)", lines=4,
                                elem_id="classify-second")
            threshold = gr.Slider(label="Threshold mode: list every class at or above this probability (0 = off)",
                                  minimum=0.0, maximum=1.0, value=0.0, step=0.005)
            tower = text_tower_choice(state, "classify-text-tower")
            run = gr.Button("Classify", variant="primary", elem_id="classify-run")
            errors = error_box("classify-error")
    summary = gr.Markdown(elem_id="classify-summary")
    counts_table = gr.Dataframe(label="Images per class (top-1)", elem_id="classify-counts", max_height=300)
    # "contain": the whole picture, letterboxed; a square crop cut the object away
    thumbnails = gr.Gallery(label="Classified images (top-1 class)", columns=8, height="auto", object_fit="contain",
                            elem_id="classify-gallery", allow_preview=False)
    which = gr.Dropdown(label="Chart of image", choices=[], value=None, elem_id="classify-which")
    with gr.Row():
        label_a = gr.Label(label="Label set A", num_top_classes=10, elem_id="classify-label")
        label_b = gr.Label(label="Label set B", num_top_classes=10, visible=False, elem_id="classify-label-b")
    table = gr.Dataframe(label="Probabilities", elem_id="classify-table", wrap=True, max_height=400)
    moved = gr.Dataframe(label="What moved between A and B (top-1 per image)", visible=False, max_height=400)
    with gr.Accordion("Save, load, export", open=False):
        with gr.Row():
            name = gr.Textbox(label="Classifier name", elem_id="classify-name")
            save = gr.Button("Save")
            saved = gr.Dropdown(label="Saved classifiers", choices=[])
            load = gr.Button("Load")
            export = gr.Button("Export CSV of the last run")
        store_errors = error_box("classify-store-error")
        exported = gr.File(label="Export", interactive=False)
    last = gr.State(None)

    def classify(files, lib, fold, text, typed_text, second_text, thr, text_tower):
        paths = images_of(state, files, lib, fold)
        # an upload is called by its own name (Gradio keeps it as the stored file's name), not its cache path
        names = {p: Path(p).name for p in file_paths(files)}
        bundle = state.with_text_model(text_tower_name(text_tower))  # a sentence when it does not fit
        run_result = classify_for_app(bundle, paths, text, template_lines(typed_text), second_text,
                                      threshold=thr or None, k=10, names=names)
        res = run_result.result
        if not res.paths:
            raise UserError("None of the images could be read: " + "; ".join(
                f"{p.name} ({why})" for p, why in res.skipped[:5]))
        rows, counts = tables(res, bool(thr))
        note = f"{len(res.paths)} image(s) classified into {len(res.classifier.classnames)} classes."
        if res.skipped:
            note += " Skipped: " + "; ".join(f"{p.name} ({why})" for p, why in res.skipped[:5])
        # one tile per image, in order (a grey tile where PIL cannot draw it), so a click names the right image
        items = [(thumbnail(p) or Image.new("RGB", (64, 64), "#bbb"), f"{top[0][0]} · {probability_text(top[0][1])}")
                 for p, top in zip(res.paths[:SHOWN_IMAGES], res.top)]
        chooser = gr.update(choices=image_choices(res.labels), value=0)
        if run_result.second is None:
            return (items, chooser, probabilities(res, 0), gr.update(visible=False), rows, gr.update(visible=False),
                    note, counts, run_result)
        comparison = run_result.comparison
        per_image = comparison["per_image"].copy()
        per_image.insert(0, "path", [Path(name).name for name in res.labels])
        for column in ("prob_a", "prob_b"):
            per_image[column] = per_image[column].map(probability_text)
        note += (f" Between the label sets, {comparison['moved']} of {comparison['n_images']} image(s) changed "
                 "their top-1 class.")
        return (items, chooser, probabilities(res, 0),
                gr.update(value=probabilities(run_result.second, 0), visible=True), rows,
                gr.update(value=per_image, visible=True), note, counts, run_result)

    wire(run.click, classify, [uploads, library_file, folder, classes, typed, second, threshold, tower],
         [thumbnails, which, label_a, label_b, table, moved, summary, counts_table, last], errors)

    def show_image(index, run_result):
        if run_result is None or index is None:
            return gr.update(), gr.update()
        index = int(index)
        b = probabilities(run_result.second, index) if run_result.second is not None else gr.update()
        return probabilities(run_result.result, index), b

    which.input(show_image, [which, last], [label_a, label_b])

    def picked(event: gr.SelectData):
        return event.index

    thumbnails.select(picked, None, which).then(show_image, [which, last], [label_a, label_b])
    preset.input(lambda p: preset_text(p), preset, typed)

    def do_save(classifier_name, text, typed_text, thr, text_tower):
        stored = classifiers.save_classifier(state.catalog, classifier_name, class_lines(text),
                                             template_lines(typed_text), thr or None,
                                             bundle=state.with_text_model(text_tower_name(text_tower)))
        return gr.update(choices=classifiers.list_classifiers(state.catalog), value=stored), gr.update()

    def do_load(classifier_name):
        if not classifier_name:
            raise UserError("Pick a saved classifier first.")
        spec = classifiers.load_classifier(state.catalog, classifier_name)
        return ("\n".join(spec["classes"]), "\n".join(spec["templates"]), spec.get("threshold") or 0.0,
                classifier_name)

    def do_export(run_result):
        if run_result is None:
            raise UserError("Classify some images first; the export holds the last run's probabilities.")
        out = Path(tempfile.mkdtemp(prefix="cliplab-export-")) / "classification.csv"
        return str(export_csv(run_result.result, out))

    wire(save.click, do_save, [name, classes, typed, threshold, tower], [saved, exported], store_errors,
         keep=(0, 1))
    wire(load.click, do_load, [saved], [classes, typed, threshold, name], store_errors, keep=(0, 1, 2, 3))
    wire(export.click, do_export, [last], exported, store_errors)

    def refresh():
        folders = [f.path for f in library.library_summary(state.catalog).folders]
        return (gr.update(choices=library.indexed_paths(state.catalog)), gr.update(choices=folders),
                gr.update(choices=classifiers.list_classifiers(state.catalog)), text_tower_update(state))

    # on page load (triggers=None and no inputs): the library, saved classifiers and the model may have changed
    gr.on(triggers=None, fn=refresh, inputs=None, outputs=[library_file, folder, saved, tower])
    labels_panel.build(state)  # the library labelled by a saved classifier: apply, review, improve, export
