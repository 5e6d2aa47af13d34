"""Camera RAW files (engine.raw) on DNGs written by the tests: the embedded preview when it is large
enough, else a half-size demosaic; orientation and capture time from the RAW; bad RAWs recorded with a
reason while the run goes on; a RAW beside the JPEG of its shot is one photo (indexes.shots); the app
shows a RAW through its preview."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from library_fixtures import tiny_bundle
from PIL import Image
from raw_files import scene, write_dng

from cliplab.app.services import library, search, serving
from cliplab.app.services.app_state import AppState
from cliplab.engine.images import ImageLoadError, image_info, load_image
from cliplab.engine.raw import read_mode
from cliplab.indexes.catalog import File, open_catalog

SHOT = datetime(2024, 5, 6, 7, 8, 9)


def bright_top(image: Image.Image) -> bool:
    """Whether the scene's bright half is at the top (it is on the left as the sensor stores it)."""
    grey = np.asarray(image.convert("L"), np.float32)
    return grey[: grey.shape[0] // 4].mean() > grey[-grey.shape[0] // 4:].mean() + 50


def test_preview_used_when_large_enough_else_half_size_demosaic(tmp_path):
    big = write_dng(tmp_path / "big.dng", preview="jpeg")  # a 512x384 preview
    tiny = write_dng(tmp_path / "tiny.dng", preview="jpeg", preview_size=(160, 120))
    bitmap = write_dng(tmp_path / "bitmap.dng", preview="rgb")
    none = write_dng(tmp_path / "none.dng", preview=None)
    assert read_mode(big, 224) == "preview" and read_mode(bitmap, 224) == "preview"
    assert read_mode(tiny, 224) == "demosaic" and read_mode(none, 224) == "demosaic"
    assert read_mode(tiny, 100) == "preview"  # the rule is the size the caller needs
    assert load_image(big, min_size=224).size == (512, 384)
    assert load_image(tiny, min_size=224).size == (256, 192)  # half size: one pixel per 2x2 Bayer cell
    # the preview and the demosaic show the same picture (bright left half, dark right half)
    expected = scene(512, 384)
    for path in (big, bitmap, none):
        image = np.asarray(load_image(path, min_size=224).resize((64, 48)), np.float32)
        left, right = image[:, :24].mean(), image[:, 40:].mean()
        assert left > right + 80, path.name
    assert abs(np.asarray(load_image(big, 224), np.float32).mean() - expected.mean()) < 3


def test_orientation_capture_time_and_camera_from_the_raw(tmp_path):
    for preview in ("jpeg", None):
        path = write_dng(tmp_path / f"r-{preview}.dng", preview=preview, orientation=6, model="EOS Test")
        info = image_info(path)
        assert (info["width"], info["height"], info["orientation"]) == (384, 512, 6)
        assert info["taken_at"] == SHOT and info["camera_model"] == "EOS Test"
        image = load_image(path, min_size=32)
        assert image.height > image.width and bright_top(image), preview  # rotated upright either way
    undated = write_dng(tmp_path / "undated.dng", taken=None)
    assert image_info(undated)["taken_at"] is None


def test_bad_raws_are_skipped_with_a_reason_and_the_run_goes_on(tmp_path):
    folder = tmp_path / "raws"
    folder.mkdir()
    good = write_dng(folder / "good.dng")
    data = good.read_bytes()
    (folder / "cut.dng").write_bytes(data[: len(data) // 3])  # cut inside the sensor data
    (folder / "garbage.cr2").write_bytes(os.urandom(4096))  # not a RAW LibRaw knows
    (folder / "empty.nef").write_bytes(b"")
    write_dng(folder / "tinypreview.dng", preview="jpeg", preview_size=(64, 48))  # falls back, indexed
    for name, reason in (("garbage.cr2", "unsupported camera"), ("empty.nef", "empty file")):
        with pytest.raises(ImageLoadError) as caught:
            load_image(folder / name, min_size=32)
        assert caught.value.reason == reason
    catalog = open_catalog()
    run = library.add_folders(catalog, tiny_bundle(), [str(folder)], workers=0)
    assert (run["embedded"], run["skipped"]) == (2, 3)
    with catalog.session() as session:
        rows = {Path(r.path).name: r for r in session.query(File)}
    assert rows["good.dng"].status == rows["tinypreview.dng"].status == "ok"
    assert rows["good.dng"].captured_at == SHOT and (rows["good.dng"].width, rows["good.dng"].height) == (512, 384)
    assert rows["garbage.cr2"].skip_reason.startswith("unsupported camera")
    assert rows["empty.nef"].skip_reason.startswith("empty file")
    assert rows["cut.dng"].status == "skipped" and rows["cut.dng"].skip_reason.split(":")[0] in ("corrupt", "truncated")


@pytest.fixture
def shots(tmp_path) -> tuple[AppState, Path]:
    folder = tmp_path / "shoot"
    folder.mkdir()
    for n in range(3):
        raw = write_dng(folder / f"IMG_{n}.DNG", preview="jpeg", seed=n, taken=f"2024:05:06 07:08:0{n}")
        # the camera's JPEG of the same shot: same stem, same capture time
        exif = Image.Exif()
        exif.get_ifd(0x8769)[36867] = f"2024:05:06 07:08:0{n}"
        load_image(raw).save(folder / f"IMG_{n}.JPG", exif=exif.tobytes())
    write_dng(folder / "IMG_9.DNG", seed=9, taken="2024:05:06 07:09:00")  # a RAW alone
    write_dng(folder / "other.dng", seed=8, taken="2024:05:06 07:08:00")  # another shot, same second
    state = AppState(bundle=tiny_bundle(), catalog=open_catalog())
    run = library.add_folders(state.catalog, state.search_bundle, [str(folder)], workers=0)
    assert run["embedded"] == 8
    return state, folder


def test_a_raw_and_its_jpeg_are_one_photo_with_both_files(shots):
    state, folder = shots
    view = search.search(state.catalog, state.search_bundle, [search.text_term("a photo")], per_page=50)
    names = sorted(Path(r.path).name for r in view.results)
    assert names == ["IMG_0.JPG", "IMG_1.JPG", "IMG_2.JPG", "IMG_9.DNG", "other.dng"] and view.total == 5
    for result in view.results:
        if result.path.endswith(".JPG"):
            assert result.companions == [result.path[:-4] + ".DNG"]
        else:
            assert result.companions == []
    groups = library.find_duplicates(state.catalog, threshold=0.01)  # everything is alike
    in_groups = {Path(m.path).name for g in groups for m in g.members}
    assert "IMG_9.DNG" in in_groups and not {"IMG_0.DNG", "IMG_1.DNG", "IMG_2.DNG"} & in_groups  # a shot is one photo
    # the JPEG goes: the RAW is a photo of its own again
    (folder / "IMG_0.JPG").unlink()
    library.add_folders(state.catalog, state.search_bundle, [str(folder)], workers=0)
    view = search.search(state.catalog, state.search_bundle, [search.text_term("a photo")], per_page=50)
    assert "IMG_0.DNG" in {Path(r.path).name for r in view.results} and view.total == 5


def test_the_app_shows_a_raw_through_its_preview(shots):
    state, folder = shots
    raw_id = library.file_id_of(state.catalog, str(folder / "IMG_9.DNG"))
    path, media_type = serving.viewable(state.catalog, raw_id)
    assert media_type == "image/jpeg" and path.parent == serving.thumbnails_dir()
    with Image.open(path) as shown:
        assert shown.format == "JPEG" and shown.size == (512, 384)
    assert serving.thumbnail(state.catalog, raw_id, serving.HOVER_SIZE).is_file()
    jpeg_id = library.file_id_of(state.catalog, str(folder / "IMG_1.JPG"))
    assert serving.viewable(state.catalog, jpeg_id) == (folder / "IMG_1.JPG", "image/jpeg")
