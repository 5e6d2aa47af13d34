"""`cliplab` on ordinary user mistakes: one `error:` sentence on stderr, exit status 2, never a traceback;
and the library commands' structured query terms (`--image PATH` takes any path whole), `index --remove`,
`--confirm-system`, `texts search` through the one image -> text service. The committed demo model."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from cli_support import run_cli as run_cli_with_modules
from library_fixtures import write_image

from cliplab.engine.api import _demo_available

pytestmark = pytest.mark.skipif(not _demo_available(), reason="needs the committed demo model")

run_cli = partial(run_cli_with_modules, modules=["classify", "library", "audit", "eval", "captions", "train"])


def user_error(capsys, *argv) -> str:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.removeprefix("error: ").strip()


@pytest.fixture
def photos(tmp_path) -> Path:
    for i in range(4):
        write_image(tmp_path / "photos" / f"p{i}.png", seed=i)
    write_image(tmp_path / "photos" / "IMG_1234 - Copy.png", seed=9)
    return tmp_path / "photos"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the sentence on a machine without CUDA")
@pytest.mark.parametrize("command", [["classify", "IMAGE", "--classes", "a,b"], ["search", "x"],
                                     ["captions", "--collection", "TXT", "--image", "IMAGE"],
                                     ["train", "--data", "synthetic", "--steps", "1"]])
def test_device_cuda_without_a_gpu_is_a_sentence(capsys, photos, command):
    listing = photos.parent / "tags.txt"
    listing.write_text("a\nb\n")
    argv = [str(photos / "p0.png") if a == "IMAGE" else str(listing) if a == "TXT" else a for a in command]
    assert user_error(capsys, *argv, "--device", "cuda") == (
        "--device cuda was asked for, but this machine has no CUDA GPU that PyTorch can use; leave --device out "
        "or use --device cpu.")
    assert user_error(capsys, *argv, "--device", "tpu").startswith("Unknown device 'tpu'")


def test_a_too_long_class_name_names_the_truncate_option_that_exists(capsys, photos):
    long_name = " ".join(["cat"] * 80)
    text = user_error(capsys, "classify", photos / "p0.png", "--classes", f"dog,{long_name}")
    assert text.startswith("The class name 'cat cat cat cat cat cat cat cat cat cat … (319 characters)' is too long")
    assert text.endswith("shorten it, or let cliplab truncate each prompt to fit.")
    code, out, err = run_cli(capsys, "classify", photos / "p0.png", "--classes", f"dog,{long_name}", "--truncate")
    assert code == 0, err
    assert "p0.png" in out and "%" in out


def test_search_errors_exit_2_with_the_prefix_like_every_other_error(capsys, photos):
    assert user_error(capsys, "search") == (
        "Give something to search with: a QUERY, or --text, --image, --like ID (and --not / --not-image to push "
        "results away).")
    assert user_error(capsys, "search", "a cat") == (
        "No photos are indexed with the model demo yet: run `cliplab index FOLDER` first.")
    assert user_error(capsys, "classify", photos / "nope.png", "--classes", "a,b") == f"{photos / 'nope.png'} does not exist."


def test_search_with_term_options_takes_any_path_whole(capsys, photos):
    code, _, err = run_cli(capsys, "index", photos, "--workers", 1)
    assert code == 0, err
    copy = str((photos / "IMG_1234 - Copy.png").resolve())
    code, out, err = run_cli(capsys, "search", "--image", copy, "--limit", 2, "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found[0]["path"] == copy and len(found) == 2
    code, out, err = run_cli(capsys, "search", "--text", "a red circle", "--not-image", copy, "--weight", 3,
                             "--limit", 5, "--json")
    assert code == 0, err
    assert json.loads(out)[-1]["path"] == copy  # pushed away, to the end
    code, out, _ = run_cli(capsys, "search", "--like", found[0]["id"], "--limit", 2)
    assert copy not in out and "4 result(s); page 1 of 2." in out
    assert user_error(capsys, "search", "--like", 999999) == (
        "There is no photo @999999 in the library; pick a photo from the results or the map to search for more "
        "like it.")
    assert user_error(capsys, "search", "--text", "dog", "--weight", "nan").startswith(
        "A term's weight must be a positive number")
    assert user_error(capsys, "search", "--image", photos / "gone.jpg") == (
        f"The query image {photos / 'gone.jpg'} does not exist (or is not a file).")
    code, out, _ = run_cli(capsys, "search", "x", "--page", 9, "--limit", 2)
    assert "page 3 of 3." in out


def test_index_remove_and_system_folders(capsys, photos):
    assert user_error(capsys, "index", "/etc").startswith("/etc is a system folder")
    code, _, err = run_cli(capsys, "index", photos, "--workers", 1)
    assert code == 0, err
    code, out, err = run_cli(capsys, "index", "--remove", photos)
    assert code == 0, err
    assert out.startswith(f"removed {photos} from the library: 5 file(s) and their embeddings")
    assert user_error(capsys, "index", "--remove", photos).startswith(f"{photos} is not a library folder")
    assert user_error(capsys, "search", "x").startswith("No photos are indexed")


def test_texts_search_is_the_captions_feature(capsys, photos, tmp_path):
    listing = tmp_path / "tags.txt"
    listing.write_text("a red circle\na blue square\na green triangle\n")
    code, out, err = run_cli(capsys, "texts", "add", "tags", listing)
    assert code == 0 and "collection tags: 3 texts" in out, err
    code, stored, err = run_cli(capsys, "texts", "search", "tags", photos / "p0.png")
    assert code == 0, err
    code, by_file, err = run_cli(capsys, "captions", "--collection", listing, "--image", photos / "p0.png")
    assert code == 0, err
    from_texts = [tuple(line.split(None, 1)) for line in stored.splitlines() if line.strip()]
    from_captions = [tuple(row.split(None, 2)[1:]) for row in by_file.splitlines()[1:4]]
    assert [(score, text.strip(" *")) for score, text in from_texts] == [
        (score, text.strip(" *")) for score, text in from_captions]  # the same texts, the same scores
    assert len(from_texts) == 3
    code, out, _ = run_cli(capsys, "captions", "--collection", "collection:tags", "--image", photos / "p0.png")
    assert out == by_file.replace(str(listing), "collection:tags")
    assert user_error(capsys, "texts", "search", "nope", photos / "p0.png") == (
        "No text collection named 'nope' is stored (stored ones: tags).")
