"""The tabs' shared pieces without a browser: errors become a sentence in the action's own box and clear
its stale results; a non-image dropped on an image box reaches the handler as a sentence."""

from __future__ import annotations

from library_fixtures import write_image

from cliplab.app.ui.common import UnreadableDrop, UserError, dropped_image, image_drop, reported
from cliplab.engine.errors import CliplabError


def box(update: dict) -> tuple[str, bool]:
    return update["value"], update["visible"]


def test_success_shows_the_results_and_hides_the_box():
    handler = reported(lambda a, b: (a + b, a * b), outputs=2)
    *values, errors = handler(2, 3)
    assert values == [5, 6] and box(errors) == ("", False)
    single = reported(lambda: "only", outputs=1)
    assert single()[0] == "only"


def test_a_cliplab_error_is_a_sentence_and_clears_the_stale_results():
    def fails(_text):
        raise CliplabError("Only one class ('cat') was given.")

    *values, errors = reported(fails, outputs=3, keep=(2,))("cat")
    assert values[:2] == [None, None]  # the last run's results are cleared
    assert values[2] == {"__type__": "update"}  # a kept output (an input, a state) is left as it is
    assert box(errors) == ("**Only one class ('cat') was given.**", True)


def test_a_bug_is_a_short_sentence_and_its_trace_goes_to_the_terminal(capsys):
    def broken():
        return {}["missing"]

    *_values, errors = reported(broken, outputs=1)()
    message, visible = box(errors)
    assert visible and "KeyError" in message and "terminal running cliplab" in message
    assert "Traceback" in capsys.readouterr().err and "Traceback" not in message


def test_a_non_image_drop_reaches_the_handler_as_a_sentence(tmp_path):
    from gradio.data_classes import ImageData

    image = image_drop(label="drop")
    fake = tmp_path / "holiday.jpg"
    fake.write_text("just words")
    value = image.preprocess(ImageData(path=str(fake), orig_name="holiday.jpg"))
    assert isinstance(value, UnreadableDrop) and value.name == "holiday.jpg"
    try:
        dropped_image(value)
    except UserError as error:
        assert str(error).startswith("holiday.jpg is not an image cliplab can read")
    else:
        raise AssertionError("a non-image passed as an image")
    real = write_image(tmp_path / "IMG_1234 - Copy.png", 1)
    path = image.preprocess(ImageData(path=str(real), orig_name=real.name))
    assert dropped_image(path) == str(real)  # a real image passes as its path, whatever its name
    assert dropped_image(None) is None
