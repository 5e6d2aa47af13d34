"""A release's own preprocessing, end to end: `cliplab index` (decode workers) and query images embed
photos of any aspect ratio as the release's own transform + encoder do (open_clip's image_transform on
an open_clip folder with preprocess_cfg: the reference, mean/std 0.5, squash, longest, bilinear), at
cosine >= 0.9999; a Hugging Face folder that resizes to one size and crops to another preprocesses
as transformers' CLIPImageProcessor does; the `longest` mode keeps a palette image's colours."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from oracles import import_open_clip, import_torchvision_transforms
from PIL import Image
from sqlalchemy import select
from test_open_clip_families import FAMILIES, build, publish

from cliplab import engine
from cliplab.app import cli
from cliplab.app.services.search import embed_query, image_term
from cliplab.engine.handle import ModelBundle
from cliplab.engine.images import MEAN, STD, Preprocess
from cliplab.indexes.catalog import Embedding, File, from_blobs, open_catalog

RELEASES = {
    "reference": {"mean": list(MEAN), "std": list(STD), "resize_mode": "shortest", "interpolation": "bicubic"},
    "mean-std-0.5": {"mean": [0.5] * 3, "std": [0.5] * 3, "resize_mode": "shortest", "interpolation": "bicubic"},
    "squash": {"mean": [0.5] * 3, "std": [0.5] * 3, "resize_mode": "squash", "interpolation": "bicubic"},
    "longest": {"mean": [0.5] * 3, "std": [0.5] * 3, "resize_mode": "longest", "interpolation": "bicubic"},
    "bilinear": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "resize_mode": "shortest",
                 "interpolation": "bilinear"},
}
SIZES = [(70, 45), (45, 70), (32, 32), (120, 37), (41, 96)]  # landscape, portrait, square, panorama, tall


def photos(folder) -> list:
    """Smooth photo-like pictures of several aspect ratios, as PNG (lossless: no JPEG draft decoding)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed, size in enumerate(SIZES):
        coarse = np.random.default_rng(seed).integers(0, 256, (5, 7, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
        paths.append(folder / f"photo{seed}.png")
        image.save(paths[-1])
    return paths


def oracle(reference, pp: dict, path) -> np.ndarray:
    """The release's own embedding: open_clip's eval transform and encoder."""
    from open_clip.transform import image_transform

    transform = image_transform(32, is_train=False, mean=pp["mean"], std=pp["std"], resize_mode=pp["resize_mode"],
                                interpolation=pp["interpolation"])
    with torch.no_grad():
        features = reference.encode_image(transform(Image.open(path).convert("RGB"))[None])
    return torch.nn.functional.normalize(features, dim=-1)[0].numpy()


@pytest.mark.parametrize("release", list(RELEASES))
def test_cliplab_index_and_query_images_equal_the_releases_own_transform(tmp_path, release):
    import_open_clip()
    pp = RELEASES[release]
    cfg = FAMILIES["gelu"]
    reference = build(import_open_clip(), cfg)
    folder = publish(reference, cfg, tmp_path / "release", preprocess_cfg=pp)
    paths = photos(tmp_path / "photos")
    # the user's way: `cliplab index` with the release folder, decoding in worker processes
    assert cli.main(["index", str(tmp_path / "photos"), "--model", str(folder), "--precision", "fp32",
                     "--workers", "1"]) == 0
    catalog = open_catalog()
    with catalog.session() as session:
        rows = dict(session.execute(select(File.path, Embedding.vector).join(Embedding, Embedding.file_id == File.id))
                    .all())
    assert len(rows) == len(paths)
    bundle = ModelBundle.load(folder, "cpu", purpose="index")  # whatever mode it picks, the library's is fp32
    for path in paths:
        expected = oracle(reference, pp, path)
        stored = from_blobs([rows[str(path)]], 64)[0]
        assert float(stored @ expected) >= 0.9999, (release, path.name)
        query = embed_query(catalog, bundle, [image_term(path)])
        assert float(query @ expected) >= 0.9999, (release, path.name)
    with catalog.session() as session:
        from cliplab.indexes.catalog import Model
        recorded = session.scalar(select(Model.preprocessing))
    assert Preprocess.from_record(recorded) == bundle.preprocess and json.loads(recorded)["resize_mode"] == \
        pp["resize_mode"]


def test_hf_folder_resizes_then_crops_as_its_preprocessor_config_says(tmp_path):
    """size.shortest_edge 40 and crop_size 32: resize the shorter side to 40, then a 32 x 32 center crop
    (as transformers' CLIPImageProcessor; before, cliplab resized straight to 32)."""
    from test_hf_parity import hf_config, import_transformers_clip

    _, CLIPModel = import_transformers_clip()
    from transformers import CLIPImageProcessor

    torch.manual_seed(0)
    config = hf_config()
    config.vision_config.image_size = 32
    folder = tmp_path / "hf"
    CLIPModel(config).eval().save_pretrained(folder)
    processor = CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32},
                                   image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3], resample=3)
    processor.save_pretrained(folder)
    _, preprocess, _ = engine.load(folder, device="cpu")
    assert (preprocess.resolution, preprocess.resize_size) == (32, 40)
    assert preprocess.options()["resize_size"] == 40 and not preprocess.is_reference
    crop_only = Preprocess(32, mean=preprocess.mean, std=preprocess.std)  # what cliplab did before
    step = 1 / 255 / min(preprocess.std)  # one 8-bit level after normalising
    for seed, size in enumerate([(70, 45), (45, 70), (50, 50)]):
        image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        expected = torch.from_numpy(processor(images=image, return_tensors="np")["pixel_values"][0])
        difference = (preprocess(image) - expected).abs()
        # transformers rounds a few resized pixels to the next 8-bit level; every other value is equal
        assert difference.max() <= step + 1e-5 and (difference > 1e-5).float().mean() < 0.02
        assert (crop_only(image) - expected).abs().mean() > 10 * difference.mean() + 0.05


def test_resize_size_defaults_to_the_resolution_and_keeps_the_reference_bit_identical():
    transforms = import_torchvision_transforms()
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (45, 71, 3), dtype=np.uint8))
    reference = transforms.Compose([transforms.Resize(32, interpolation=transforms.InterpolationMode.BICUBIC),
                                    transforms.CenterCrop(32), transforms.ToTensor(),
                                    transforms.Normalize(MEAN, STD)])
    ours = Preprocess(32)
    assert ours.resize_size == 32 and ours.is_reference and "resize_size" not in ours.options()
    assert torch.equal(ours(image), reference(image))
    larger = Preprocess(32, resize_size=36)
    cropped = transforms.Compose([transforms.Resize(36, interpolation=transforms.InterpolationMode.BICUBIC),
                                  transforms.CenterCrop(32), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    assert torch.equal(larger(image), cropped(image))
    assert Preprocess.from_record(larger.record()) == larger != ours


def test_longest_mode_keeps_a_palette_images_colours():
    """A palette ('P') image passed straight to the transform: as open_clip's transform gives for its
    colours (the RGB image); before, it was pasted on a palette canvas and came out in other colours."""
    import_open_clip()
    from open_clip.transform import image_transform

    rgb = Image.fromarray(np.random.default_rng(4).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    palette = rgb.quantize(colors=16)  # colour 0 of this palette is not black
    assert palette.mode == "P" and tuple(palette.getpalette()[:3]) != (0, 0, 0)
    pp = RELEASES["longest"]
    ours = Preprocess(32, mean=pp["mean"], std=pp["std"], resize_mode="longest")
    reference = image_transform(32, is_train=False, mean=pp["mean"], std=pp["std"], resize_mode="longest")
    torch.testing.assert_close(ours(palette), reference(palette.convert("RGB")), rtol=0, atol=1e-6)
