"""Pieces every tab uses: errors as sentences, never a stack trace."""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable

import gradio as gr

from engine.errors import CliplabError


def shown_errors(fn: Callable) -> Callable:
    """Run a UI handler; a CliplabError becomes a gr.Error with its sentence, a bug a short sentence."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except CliplabError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except Exception as error:  # a bug: the trace goes to the server log, a sentence to the page
            traceback.print_exc()
            raise gr.Error(f"Something went wrong ({type(error).__name__}: {error}). The details are in the "
                           "terminal running cliplab.", print_exception=False) from None
    return wrapper


def file_paths(files) -> list[str]:
    """Paths of a gr.File value (None, one file or a list; str or objects with .name)."""
    if not files:
        return []
    files = files if isinstance(files, list) else [files]
    return [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files]
