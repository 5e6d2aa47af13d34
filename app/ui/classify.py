"""Classify tab: roll your own classifier — class names one per line, templates, probabilities,
a second label set side by side, threshold mode, saved classifiers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from app.services import app_state as store
from app.services.app_state import AppState
from app.services.classify import classify_for_app, export_csv, folder_images
from app.services.first_start import DEMO_CLASSES
from app.ui.common import file_paths, shown_errors
from engine.zeroshot import TEMPLATE_PRESETS, load_templates

DEFAULT_CLASSES = "\n".join(DEMO_CLASSES)  # what the demo photos show
TYPED = "typed below"


def templates_of(preset: str, typed: str) -> list[str]:
    if preset == TYPED:
        templates = [t.strip() for t in (typed or "").splitlines() if t.strip()]
        from engine.zeroshot import check_templates
        check_templates(templates)
        return templates
    return load_templates(preset)


def images_of(state: AppState, uploads, library_file: str | None, folder: str | None) -> list[str]:
    """Uploaded files, else a library file, else every image of a folder."""
    paths = file_paths(uploads)
    if not paths and library_file:
        paths = [library_file]
    if not paths and (folder or "").strip():
        paths = [str(p) for p in folder_images(folder.strip())]
    return paths


def library_choices(state: AppState, limit: int = 500) -> list[str]:
    from sqlalchemy import select

    from indexes.catalog import File
    with state.catalog.session() as session:
        return list(session.scalars(select(File.path).where(File.status == "ok").order_by(File.path).limit(limit)))


def build(state: AppState) -> None:
    gr.Markdown("Type the classes you want, one per line. The model scores every image against a prompt "
                "built from each class name and shows how likely each class is.")
    with gr.Row():
        with gr.Column(scale=1):
            uploads = gr.File(label="Images to classify", file_count="multiple", file_types=["image"],
                              elem_id="classify-upload")
            library_file = gr.Dropdown(label="…or a photo from the library", choices=[], allow_custom_value=False,
                                       elem_id="classify-library")
            folder = gr.Textbox(label="…or every image in a folder", placeholder="/path/to/photos")
        with gr.Column(scale=1):
            classes = gr.Textbox(label="Class names (one per line)", value=DEFAULT_CLASSES, lines=6,
                                 elem_id="classify-classes")
            preset = gr.Dropdown(label="Prompt templates", choices=[TYPED, *TEMPLATE_PRESETS], value="default")
            typed = gr.Textbox(label="Templates (one per line, '{}' marks the class name)",
                               value="a photo of {}.", lines=2)
            second = gr.Textbox(label="Second label set to compare (optional, one per line)", lines=4,
                                elem_id="classify-second")
            threshold = gr.Slider(label="Threshold mode: list every class at or above this probability (0 = off)",
                                  minimum=0.0, maximum=1.0, value=0.0, step=0.005)
            run = gr.Button("Classify", variant="primary", elem_id="classify-run")
    summary = gr.Markdown(elem_id="classify-summary")
    with gr.Row():
        label_a = gr.Label(label="Label set A (first image)", num_top_classes=10, elem_id="classify-label")
        label_b = gr.Label(label="Label set B (first image)", num_top_classes=10, visible=False)
    table = gr.Dataframe(label="Probabilities", elem_id="classify-table", wrap=True)
    moved = gr.Dataframe(label="What moved between A and B (top-1 per image)", visible=False)
    with gr.Accordion("Save, load, export", open=False):
        with gr.Row():
            name = gr.Textbox(label="Classifier name")
            save = gr.Button("Save")
            saved = gr.Dropdown(label="Saved classifiers", choices=[])
            load = gr.Button("Load")
            export = gr.Button("Export CSV of the last run")
        exported = gr.File(label="Export", interactive=False)
    last = gr.State(None)

    @shown_errors
    def classify(files, lib, fold, text, preset_name, typed_text, second_text, thr):
        paths = images_of(state, files, lib, fold)
        run_result = classify_for_app(state.loaded, paths, text, templates_of(preset_name, typed_text),
                                      second_text, threshold=thr or None, k=10)
        res = run_result.result
        first = dict(zip(res.classifier.classnames, map(float, res.probs[0])))
        rows = res.table()
        rows["path"] = rows["path"].map(lambda p: Path(p).name)
        if thr:
            rows = pd.DataFrame([dict(path=Path(p).name, label=label, probability=prob)
                                 for p, labels in zip(res.paths, res.above_threshold) for label, prob in labels],
                                columns=["path", "label", "probability"])
        rows["probability"] = rows["probability"].round(4)
        note = f"{len(res.paths)} image(s) classified into {len(res.classifier.classnames)} classes."
        if res.skipped:
            note += " Skipped: " + "; ".join(f"{p.name} ({why})" for p, why in res.skipped[:5])
        if run_result.second is None:
            return (first, gr.update(visible=False), rows, gr.update(visible=False), note, res)
        second_res, comparison = run_result.second, run_result.comparison
        b = dict(zip(second_res.classifier.classnames, map(float, second_res.probs[0])))
        per_image = comparison["per_image"].copy()
        per_image.insert(0, "path", [Path(p).name for p in res.paths])
        per_image[["prob_a", "prob_b"]] = per_image[["prob_a", "prob_b"]].astype(float).round(4)
        note += (f" Between the label sets, {comparison['moved']} of {comparison['n_images']} image(s) changed "
                 "their top-1 class.")
        return (first, gr.update(value=b, visible=True), rows, gr.update(value=per_image, visible=True),
                note, res)

    run.click(classify, [uploads, library_file, folder, classes, preset, typed, second, threshold],
              [label_a, label_b, table, moved, summary, last])

    @shown_errors
    def do_save(classifier_name, text, preset_name, typed_text, thr):
        from app.services.classify import class_lines
        stored = store.save_classifier(state.catalog, classifier_name, class_lines(text),
                                       templates_of(preset_name, typed_text), thr or None)
        gr.Info(f"Saved the classifier {stored!r}.")
        return gr.update(choices=store.list_classifiers(state.catalog), value=stored)

    @shown_errors
    def do_load(classifier_name):
        if not classifier_name:
            raise gr.Error("Pick a saved classifier first.")
        spec = store.load_classifier(state.catalog, classifier_name)
        return ("\n".join(spec["classes"]), TYPED, "\n".join(spec["templates"]), spec.get("threshold") or 0.0,
                classifier_name)

    @shown_errors
    def do_export(result):
        if result is None:
            raise gr.Error("Classify some images first; the export holds the last run's probabilities.")
        out = Path(tempfile.mkdtemp(prefix="cliplab-export-")) / "classification.csv"
        return str(export_csv(result, out))

    save.click(do_save, [name, classes, preset, typed, threshold], [saved])
    load.click(do_load, [saved], [classes, preset, typed, threshold, name])
    export.click(do_export, [last], [exported])

    def refresh():
        return (gr.update(choices=library_choices(state)),
                gr.update(choices=store.list_classifiers(state.catalog)))

    # on page load (triggers=None and no inputs): the library and saved classifiers may have changed
    gr.on(triggers=None, fn=refresh, inputs=None, outputs=[library_file, saved])
