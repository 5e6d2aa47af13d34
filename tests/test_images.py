"""cliplab.engine.images: the reference preprocessing (bit-identical to torchvision's) and the file loader."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from datetime import datetime

import numpy as np
import pytest
import torch
from oracles import import_torchvision_transforms
from PIL import ExifTags, Image

from cliplab.engine import images
from cliplab.engine.errors import CliplabError
from cliplab.engine.images import MEAN, STD, ImageLoadError, Preprocess, image_info, load_image


def reference_transform(resolution: int):
    """The reference CLIP transform, as in openai/CLIP's clip.py."""
    T = import_torchvision_transforms()
    return T.Compose([
        T.Resize(resolution, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(resolution),
        lambda image: image.convert("RGB"),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise, so that resampling differences would show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 256], axis=-1)
    pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def deep_grey(values: np.ndarray, mode: str) -> Image.Image:
    """16-bit grey from raw values (Pillow's convert() to I;16B would clip them to 8 bits)."""
    if mode == "I":
        return Image.fromarray(values.astype(np.int32))
    dtype = ">u2" if mode == "I;16B" else "<u2"
    return Image.frombytes(mode, values.shape[::-1], values.astype(dtype).tobytes())


def in_mode(image: Image.Image, mode: str) -> Image.Image:
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    if mode == "P-transparency":
        paletted = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        paletted.info["transparency"] = 3
        return paletted
    if mode in ("I;16", "I;16B"):
        return deep_grey((grey * 257).astype(np.uint16), mode)
    if mode == "I":
        return Image.fromarray((grey * 257).astype(np.int32))
    if mode == "F":
        return Image.fromarray((grey / 255).astype(np.float32))
    return image.convert(mode)


MODES = ["RGB", "L", "LA", "RGBA", "P", "P-transparency", "PA", "CMYK", "YCbCr", "I;16", "I;16B", "I", "F", "1"]
# (width, height, resolution): landscape, portrait, odd sizes, upscaling, already square, a crop
# offset of exactly 2.5 (torchvision rounds half to even: 2), and 224 as CLIP uses.
SHAPES = [(131, 77, 33), (77, 131, 32), (37, 32, 32), (32, 37, 32), (50, 50, 64), (64, 64, 64),
          (301, 199, 224)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width,height,resolution", SHAPES)
def test_preprocess_is_bit_identical_to_the_reference(mode, width, height, resolution):
    image = in_mode(photo(width, height, seed=width * height), mode)
    ours = Preprocess(resolution)(image)
    expected = reference_transform(resolution)(image)
    assert ours.dtype == torch.float32 and ours.shape == (3, resolution, resolution)
    assert ours.is_contiguous()
    # Tolerance reached: 0 (the same PIL calls, the same float32 ops in the same order).
    assert torch.equal(ours, expected)


def test_preprocess_is_picklable_and_keeps_its_resolution():
    preprocess = Preprocess(96)
    copy = pickle.loads(pickle.dumps(preprocess))
    image = photo(120, 90)
    assert copy.resolution == 96
    assert torch.equal(copy(image), preprocess(image))


def save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


def test_loaded_modes_become_rgb_as_the_reference_converts(tmp_path):
    image = photo(64, 48)
    cases = {
        "rgba.png": image.convert("RGBA"),
        "la.png": image.convert("LA"),
        "grey.png": image.convert("L"),
        "palette_transparent.png": in_mode(image, "P-transparency"),
        "palette_transparent.gif": in_mode(image, "P-transparency"),
        "cmyk.jpg": image.convert("CMYK"),
        "cmyk.tif": image.convert("CMYK"),
        "bilevel.png": image.convert("1"),
        "bilevel.tif": image.convert("1"),
    }
    for name, source in cases.items():
        path = save(source, tmp_path / name)
        with Image.open(path) as opened:
            expected = np.asarray(opened.convert("RGB"))
        loaded = load_image(path)
        assert loaded.mode == "RGB" and loaded.size == (64, 48), name
        assert np.array_equal(np.asarray(loaded), expected), name


@pytest.mark.parametrize("mode,suffix", [("I;16", "png"), ("I;16B", "tif"), ("I;16", "tif"), ("I", "tif")])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path, mode, suffix):
    values = np.array([[0, 257, 32896, 65535], [1000, 20000, 40000, 60000]], dtype=np.uint16)
    path = save(deep_grey(values, mode), tmp_path / f"deep.{suffix}")
    loaded = np.asarray(load_image(path))
    assert loaded.shape == (2, 4, 3)
    expected = np.rint(values / 257.0).astype(np.uint8)
    for channel in range(3):
        assert np.array_equal(loaded[..., channel], expected)
    # The reference's convert("RGB") clips: everything from 255 up is white, so 20000 == 60000.
    with Image.open(path) as opened:
        clipped = np.asarray(opened.convert("RGB"))[..., 0]
    assert clipped[1, 1] == clipped[1, 3] and loaded[1, 1, 0] < loaded[1, 3, 0]


def test_float_grey_in_0_to_1_is_scaled(tmp_path):
    values = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    path = save(Image.fromarray(values), tmp_path / "float.tif")
    assert list(np.asarray(load_image(path))[0, :, 1]) == [0, 64, 128, 255]


def test_animated_gif_and_webp_give_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 30), color) for color in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    for suffix in ("gif", "webp"):
        path = tmp_path / f"animated.{suffix}"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
        with Image.open(path) as opened:
            assert opened.n_frames == 3
        loaded = load_image(path)
        assert loaded.mode == "RGB" and loaded.size == (40, 30)
        red, green, blue = np.asarray(loaded).reshape(-1, 3).mean(axis=0)
        assert red > 200 and green < 30 and blue < 30, suffix


def test_heic_is_read_through_pillow_heif(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    path = tmp_path / "phone.heic"
    pillow_heif.from_pillow(photo(64, 48)).save(path, quality=95)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (64, 48)
    difference = np.abs(np.asarray(loaded, np.float64) - np.asarray(photo(64, 48), np.float64))
    assert difference.mean() < 20  # lossy HEVC, but the same picture
    assert image_info(path)["format"] == "HEIF"


def test_bytes_and_file_objects_read_like_paths(tmp_path):
    path = save(photo(50, 40), tmp_path / "a.png")
    expected = np.asarray(load_image(path))
    assert np.array_equal(np.asarray(load_image(path.read_bytes())), expected)
    with open(path, "rb") as f:
        assert np.array_equal(np.asarray(load_image(f)), expected)
    assert np.array_equal(np.asarray(load_image(str(path))), expected)


def halves(width=60, height=40) -> Image.Image:
    """Left half red, right half blue: where the red ends up shows the rotation."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2:] = (0, 0, 255)
    return Image.fromarray(pixels)


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored sideways: display rotated 90 degrees clockwise
    path = save(halves(), tmp_path / "sideways.jpg", exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.size == (40, 60)
    pixels = np.asarray(loaded, np.int32)
    top, bottom = pixels[:20].reshape(-1, 3).mean(axis=0), pixels[-20:].reshape(-1, 3).mean(axis=0)
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    info = image_info(path)
    assert (info["width"], info["height"], info["orientation"]) == (40, 60, 6)


def test_image_info_reads_exif_capture_time_and_camera(tmp_path):
    exif = Image.Exif()
    exif[ExifTags.Base.Model] = "TestCam X100"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2024:05:06 07:08:09"
    path = save(photo(64, 48), tmp_path / "camera.jpg", exif=exif)
    info = image_info(path)
    assert info == {"width": 64, "height": 48, "format": "JPEG", "mode": "RGB", "orientation": 1,
                    "taken_at": datetime(2024, 5, 6, 7, 8, 9), "camera_model": "TestCam X100"}
    plain = image_info(save(photo(30, 20), tmp_path / "plain.png"))
    assert (plain["width"], plain["format"], plain["taken_at"], plain["camera_model"]) == (30, "PNG", None, None)


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


BAD_FILES = {
    "empty.jpg": (lambda: b"", "empty file"),
    "notes.jpg": (lambda: b"these are my holiday notes, not a photo\n" * 20, "not an image"),
    "cut.jpg": (lambda: jpeg_bytes(photo(200, 150))[:3000], "truncated"),
    "cut.png": (lambda: png_bytes(photo(200, 150))[:20000], "truncated"),
    "header_only.png": (lambda: png_bytes(photo(200, 150))[:30], "corrupt"),
    "bad_crc.png": (lambda: (lambda d: d[:200] + bytes([d[200] ^ 0xFF]) + d[201:])(png_bytes(photo(200, 150))),
                    "corrupt"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_with_a_reason_and_the_file_name(tmp_path, name):
    make, reason = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(ImageLoadError) as raised:
        load_image(path)
    assert raised.value.reason == reason
    assert name in str(raised.value) and str(raised.value).endswith(".")
    assert isinstance(raised.value, CliplabError)
    copy = pickle.loads(pickle.dumps(raised.value))  # crosses worker processes intact
    assert (type(copy), copy.reason, str(copy)) == (ImageLoadError, reason, str(raised.value))


def test_missing_files_folders_and_empty_bytes(tmp_path):
    for source, reason in [(tmp_path / "nowhere.jpg", "not found"), (tmp_path, "unreadable"),
                           (b"", "empty file"), (io.BytesIO(b""), "empty file")]:
        with pytest.raises(ImageLoadError) as raised:
            load_image(source)
        assert raised.value.reason == reason


def test_large_jpeg_decodes_in_draft_mode_to_at_least_twice_min_size(tmp_path):
    path = tmp_path / "camera.jpg"
    photo(1000, 750).resize((4000, 3000), Image.Resampling.BILINEAR).save(path, quality=90)
    full = load_image(path)
    assert full.size == (4000, 3000)
    reduced = load_image(path, min_size=224)
    assert min(reduced.size) >= 448 and min(reduced.size) < 3000
    assert reduced.size == (1000, 750)  # 1/4 scale: 1/8 would give 375 < 448
    assert min(load_image(path, min_size=336).size) >= 672
    assert load_image(path, min_size=1500).size == (4000, 3000)  # no scale keeps 3000 >= 3000
    # Draft mode changes pixels only slightly: the same picture at a quarter of the size.
    assert np.abs(np.asarray(full.resize(reduced.size, Image.Resampling.BOX), np.float64)
                  - np.asarray(reduced, np.float64)).mean() < 8


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size and holds a few bytes of zeros: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) \
        + chunk(b"IEND", b"")


@pytest.mark.parametrize("width,height", [(12000, 8000), (30000, 30000)])
def test_decompression_bombs_are_refused_before_decoding(tmp_path, width, height):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(width, height))  # 96 MP (over our limit), 900 MP (over Pillow's hard one)
    with pytest.raises(ImageLoadError) as raised:
        load_image(path)
    assert raised.value.reason == "too large" and "bomb.png" in str(raised.value)


def test_the_pixel_limit_is_a_setting(tmp_path, cliplab_home, monkeypatch):
    """max_pixels(): CLIPLAB_MAX_PIXELS, else the data folder's setting (set_max_pixels, what the
    app's Settings call), else Pillow's default; a refusal says how to raise it."""
    monkeypatch.delenv(images.MAX_PIXELS_ENV, raising=False)
    path = tmp_path / "wide.png"
    Image.new("L", (1500, 1000), 90).save(path)  # 1.5 MP, a few KB on disk
    assert images.max_pixels() == images.DEFAULT_MAX_PIXELS
    assert images.set_max_pixels(1_200_000) == 1_200_000
    with pytest.raises(ImageLoadError) as raised:
        load_image(path)
    assert raised.value.reason == "too large"
    assert "wide.png is 1500x1000 pixels (1.5 megapixels)" in str(raised.value)
    assert "Settings" in str(raised.value) and "CLIPLAB_MAX_PIXELS" in str(raised.value)
    assert image_info(path)["width"] == 1500  # describing the header is still allowed
    assert images.set_max_pixels(2_000_000) == 2_000_000  # kept in the data folder: other processes see it
    assert load_image(path).size == (1500, 1000)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "1_000_000")  # the environment wins over the setting
    with pytest.raises(ImageLoadError):
        load_image(path)
    monkeypatch.setenv(images.MAX_PIXELS_ENV, "lots")
    with pytest.raises(CliplabError, match="CLIPLAB_MAX_PIXELS='lots' is not a pixel count"):
        images.max_pixels()
    monkeypatch.delenv(images.MAX_PIXELS_ENV)
    assert images.set_max_pixels(None) == images.DEFAULT_MAX_PIXELS
    with pytest.raises(CliplabError, match="too small"):
        images.set_max_pixels(0)


@pytest.fixture(scope="module")
def gfx100_jpeg(tmp_path_factory):
    """A 12000x9000 JPEG (108 MP, over Pillow's 89.5 MP default; 1.3 MB on disk: mostly uniform)."""
    from PIL import ImageDraw
    image = Image.new("L", (12000, 9000), 200)
    draw = ImageDraw.Draw(image)
    draw.rectangle((2000, 2000, 6000, 5000), fill=40)
    draw.ellipse((7000, 3000, 11000, 8000), fill=120)
    path = tmp_path_factory.mktemp("large") / "DSCF0001.JPG"
    image.save(path, quality=85)
    return path


def test_a_large_jpeg_is_read_at_reduced_scale_not_refused(gfx100_jpeg, cliplab_home, monkeypatch):
    """A JPEG is decoded at its draft scale, so it is checked at that size: a 108 MP photo read for a
    model decodes to 1500x1125 (before: refused as "too large" everywhere, e.g. a GFX100's photos).
    Read whole, it would decode 108 MP: refused, naming the photo by its own name."""
    from cliplab.indexes.decode import decode_file
    monkeypatch.delenv(images.MAX_PIXELS_ENV, raising=False)
    image = load_image(gfx100_jpeg, min_size=224)
    assert image.size == (1500, 1125) and image.mode == "RGB"
    assert image_info(gfx100_jpeg)["width"] == 12000
    decoded = decode_file(1, str(gfx100_jpeg), Preprocess(224), 60.0)  # the indexer's and query images' path
    assert decoded.reason is None and decoded.pixels.shape == (3, 224, 224) and decoded.width == 12000
    with pytest.raises(ImageLoadError) as raised:
        load_image(gfx100_jpeg)
    message = str(raised.value)
    assert message.startswith("DSCF0001.JPG is 12000x9000 pixels (108.0 megapixels)")
    assert str(gfx100_jpeg.parent) not in message and "MAX_IMAGE_PIXELS" not in message
    with gfx100_jpeg.open("rb") as stream:  # a stream (an upload) decodes the same way
        assert load_image(stream, min_size=224).size == (1500, 1125)


def test_formats_that_inflate_keep_the_bomb_guard_at_any_scale(tmp_path, cliplab_home, monkeypatch):
    monkeypatch.delenv(images.MAX_PIXELS_ENV, raising=False)
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(12000, 9000))
    with pytest.raises(ImageLoadError) as raised:
        load_image(path, min_size=224)  # no draft scale for a PNG: 108 MP would be decoded
    assert raised.value.reason == "too large" and str(raised.value).startswith("bomb.png is 12000x9000 pixels")
    path.write_bytes(png_header(30000, 30000))  # over twice Pillow's guard: refused at open
    with pytest.raises(ImageLoadError) as raised:
        load_image(path, min_size=224)
    assert raised.value.reason == "too large" and "bomb.png" in str(raised.value) and "Settings" in str(raised.value)


