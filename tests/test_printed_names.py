"""File names as the CLI prints them (issue 27, item 9): a name may hold terminal escapes, a newline or a
literal `\\xe9`; `search`, `duplicates` and `index --skipped` print each on one line, inert, and the
non-UTF-8 twin of a readable name differently from it."""

from __future__ import annotations

import os
import re

from library_fixtures import tiny_bundle, write_image

from cliplab.app.cli import main
from cliplab.engine.weights import save_model
from cliplab.indexes.names import printable, printable_text, readable

TERMINAL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")  # all but \t, \n


def test_printable_is_inert_and_gives_every_name_its_own_spelling():
    names = [b"caf\xe9.jpg", b"caf\\xe9.jpg", b"caf\\\\xe9.jpg", "café.jpg".encode(), b"a\x1b]0;title\x07.jpg",
             b"two\nlines.jpg", b"x\x9b.jpg", "x\u009b.jpg".encode(), b"x\\u009b.jpg",
             "r\u202egpj.exe".encode(), "line\u2028sep".encode(), b"tab\there", b"del\x7f"]
    shown = [printable(name) for name in names]
    assert len(set(shown)) == len(names), shown  # no two names print alike
    for text in shown:
        assert not TERMINAL.search(text) and "\n" not in text and "\t" not in text, text
    assert printable(b"caf\xe9.jpg") == readable(b"caf\xe9.jpg") == "caf\\xe9.jpg"  # bad bytes as the catalog has them
    assert printable(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"  # the disk name as Python's str
    assert printable("café/plain name.jpg") == "café/plain name.jpg"
    assert printable_text("Cannot read /p/a\x1b[2J.jpg\n") == "Cannot read /p/a\\x1b[2J.jpg\\x0a"


def test_search_duplicates_and_skipped_print_hostile_names_safely(tmp_path, capsys):
    model = save_model(tiny_bundle().model, tmp_path / "model")
    photos = tmp_path / "photos"
    image = write_image(photos / "plain.jpg", 1).read_bytes()
    hostile = [b"title\x1b]0;pwned\x07.jpg", b"red\x1b[31mRED.jpg", b"two\nlines.jpg", b"caf\\xe9.jpg"]
    for name in (*hostile, b"caf\xe9.jpg", b"wipe\x1b[2J.jpg"):
        with open(os.fsencode(photos) + b"/" + name, "wb") as out:
            out.write(b"not an image" if name.startswith(b"wipe") else image)
    assert main(["index", str(photos), "--model", str(model), "--workers", "0"]) == 0
    capsys.readouterr()

    assert main(["index", "--skipped"]) == 0
    skipped = capsys.readouterr().out
    assert main(["search", "a red square", "--model", str(model), "--limit", "20"]) == 0
    results = capsys.readouterr().out
    assert main(["duplicates", "--exact-only"]) == 0
    groups = capsys.readouterr().out
    for out in (skipped, results, groups):
        assert not TERMINAL.search(out), repr(out)
    folder = printable(str(photos))
    # one line per result (a newline in a name does not split it), each hostile name escaped
    lines = results.splitlines()
    assert len(lines) == 6 and all(line.split()[0].isdigit() for line in lines[:5]), lines
    for name in (b"plain.jpg", *hostile):
        assert f"{folder}/{printable(name)}" in results
        assert f"{folder}/{printable(name)}" in groups
    assert "two\\x0alines.jpg" in results and "title\\x1b]0;pwned\\x07.jpg" in results
    # the literal `caf\xe9.jpg` is indexed; its non-UTF-8 twin is skipped (a name clash): printed apart
    assert results.count("caf\\\\xe9.jpg") == 1
    twin = next(line for line in skipped.splitlines() if "name clash" in line)
    assert twin.startswith(f"{folder}/caf\\xe9.jpg\t")
    assert "wipe\\x1b[2J.jpg\tnot an image" in skipped
