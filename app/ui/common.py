"""Pieces every tab uses: errors that stay on the page beside their control, never a stack trace.

A tab wires an action with `wire(event, fn, inputs, outputs, error_box)`: on success fn's outputs are
shown and the box is emptied; on a CliplabError (or any bug) the box shows one sentence, and the
action's results are cleared so the page never shows a stale result under a new error. The sentence
stays until that control's next run (not a toast that fades after a few seconds).
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import gradio as gr

from cliplab.engine.errors import CliplabError


class UserError(CliplabError):
    """A sentence for the person, raised by a tab's own checks (nothing picked, nothing typed...)."""


class NotYet(UserError):
    """A request refused before it ran because something must be chosen on the page first (e.g. "more like
    the selected photo" with no photo selected): the sentence is shown and every output is left as it was,
    since what is on the page is what the person needs to make the choice."""


def error_box(elem_id: str) -> gr.Markdown:
    """The place beside a control where its error sentence appears (hidden while there is none)."""
    return gr.Markdown("", elem_id=elem_id, elem_classes=["cliplab-error"], visible=False)


def shown(message: str) -> dict:
    """The error box's update: the sentence, or hidden when there is none."""
    return gr.update(value=message, visible=bool(message))


def sentence(error: BaseException) -> str:
    if isinstance(error, CliplabError):
        return str(error)
    traceback.print_exc()  # a bug: the trace goes to the server log, a sentence to the page
    return (f"Something went wrong ({type(error).__name__}: {error}). The details are in the terminal "
            "running cliplab.")


def reported(fn: Callable, outputs: int, keep: Sequence[int] = ()) -> Callable:
    """fn returning `outputs` values (or one when outputs == 1) -> a handler returning them plus the error box.

    On failure every output is cleared (None) except those at the indexes in `keep` (inputs, states),
    which are left as they are; a NotYet leaves every output as it is.
    """
    @functools.wraps(fn)
    def handler(*args, **kwargs):
        try:
            values = fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - every failure becomes a sentence on the page
            message = sentence(error)
            kept = range(outputs) if isinstance(error, NotYet) else keep
            return (*[gr.update() if i in kept else None for i in range(outputs)], shown(f"**{message}**"))
        values = (values,) if outputs == 1 else tuple(values)
        if len(values) != outputs:
            raise TypeError(f"{fn.__name__} returned {len(values)} values for {outputs} outputs")
        return (*values, shown(""))
    return handler


def stage_progress(progress: gr.Progress) -> Callable[[str, int, int], None]:
    """A service's on_progress(stage, done, total) shown on Gradio's progress bar."""
    def report(stage: str, done: int, total: int) -> None:
        progress(done / total if total else 0.0, desc=stage)
    return report


def wire(event: Callable, fn: Callable, inputs, outputs: list, errors: gr.Markdown, keep: Sequence[int] = (),
         **options):
    """Connect fn to an event (e.g. button.click) with its error box; returns the event's dependency."""
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    return event(reported(fn, len(outputs), keep), inputs, [*outputs, errors], **options)


class UnreadableDrop(str):
    """What image_drop hands over for a file that is not an image: its name, for the sentence."""

    name: str

    def __new__(cls, path: str, name: str) -> UnreadableDrop:
        value = super().__new__(cls, path)
        value.name = name
        return value


def image_drop(**options) -> gr.Image:
    """A gr.Image(type="filepath") that passes a non-image on to its handler (as an UnreadableDrop) instead
    of failing in Gradio's preprocessing, whose developer message ("Could not preprocess input component...")
    would reach the page. A wrapper on the instance, not a subclass: Gradio writes a .pyi stub beside the
    source of every component subclass."""
    box = gr.Image(type="filepath", **options)
    original = box.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except Exception:  # noqa: BLE001 - PIL could not open it: the handler says so in a sentence
            if payload is None or payload.path is None:
                return None
            return UnreadableDrop(str(payload.path), payload.orig_name or Path(payload.path).name)

    box.preprocess = preprocess
    return box


def dropped_image(value) -> str | None:
    """The dropped image's path, or a UserError naming the file that is not an image."""
    if isinstance(value, UnreadableDrop):
        raise UserError(f"{value.name} is not an image cliplab can read: drop a JPEG, PNG, WebP, GIF, BMP, TIFF "
                        "or HEIC photo.")
    return value or None


def refuse_non_image(dropped) -> dict:
    """An image box's upload handler: a file that is not an image is refused as it is dropped (its sentence
    shown, the box emptied by the wiring's cleared output), so it cannot linger in the box and fail every
    later action that reads the box."""
    dropped_image(dropped)
    return gr.update()


def guard_drops(box: gr.Image, errors: gr.Markdown) -> None:
    """Refuse non-images dropped on an image_drop box, with the sentence in that box's action's error box."""
    wire(box.upload, refuse_non_image, box, box, errors)


def file_paths(files) -> list[str]:
    """Paths of a gr.File value (None, one file or a list; str or objects with .name)."""
    if not files:
        return []
    files = files if isinstance(files, list) else [files]
    return [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files]


OWN_TEXT_TOWER = "the model's own text tower"


def text_tower_update(state) -> dict:
    """The text tower choice for the current model: its own, or a downloaded multilingual tower made for its
    image tower (a tower's folder may be typed too, and is checked against the model when it runs)."""
    from cliplab.app.services.models import fitting_text_towers
    ready, note = fitting_text_towers(state.model_name)
    return gr.update(choices=[OWN_TEXT_TOWER, *ready], info=note)


def text_tower_choice(state, elem_id: str) -> gr.Dropdown:
    from cliplab.app.services.models import fitting_text_towers
    ready, note = fitting_text_towers(state.model_name)
    return gr.Dropdown(label="Text tower (the language of your words)", choices=[OWN_TEXT_TOWER, *ready],
                       value=OWN_TEXT_TOWER, allow_custom_value=True, info=note, elem_id=elem_id)


def text_tower_name(value: str | None) -> str | None:
    """The chosen tower's name for the services (None: the model's own)."""
    value = (value or "").strip()
    return None if not value or value == OWN_TEXT_TOWER else value
