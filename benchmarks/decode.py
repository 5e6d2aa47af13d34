"""Full JPEG decode vs draft-mode decode (reduced DCT scale) before the CLIP preprocessing.

Generates photo-like 12 MP JPEGs (gradients, shapes, blur, sensor-like noise; quality 90), times
load_image + Preprocess(224) both ways, and measures what draft mode changes in the embeddings
of a randomly initialised ViT-B/32 (the same images through both paths).

    python benchmarks/decode.py [--images 8] [--repeats 3] [--noise 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cliplab.engine.images import Preprocess, load_image  # noqa: E402
from cliplab.engine.model import CLIP  # noqa: E402


def photo_like(width: int, height: int, seed: int, noise: float = 6.0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    colors = rng.uniform(0, 255, (3, 3)).astype(np.float32)
    base = (colors[0] * (x / width)[..., None] + colors[1] * (y / height)[..., None]
            + colors[2] * (1 - x / width)[..., None] * (1 - y / height)[..., None]) / 1.5
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(width / 40, width / 4), rng.uniform(height / 40, height / 4)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(3)
        if shape == 0:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=color)
        elif shape == 1:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=color)
        else:
            draw.polygon([(x0 + rng.uniform(-w, w), y0 + rng.uniform(-h, h)) for _ in range(5)], fill=color)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    noisy = np.asarray(image, np.float32) + rng.normal(0, noise, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def time_path(paths: list[Path], preprocess: Preprocess, min_size: int | None,
              repeats: int) -> tuple[float, float, torch.Tensor]:
    """Median wall and CPU seconds per image over `repeats` passes, and the preprocessed batch.
    CPU time is reported too because the benchmark machine is shared (wall time is noisy)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        batch = [preprocess(load_image(path, min_size=min_size)) for path in paths]
        wall.append((time.perf_counter() - start) / len(paths))
        cpu.append((time.process_time() - start_cpu) / len(paths))
    return statistics.median(wall), statistics.median(cpu), torch.stack(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--noise", type=float, default=6.0, help="sensor-like noise sigma (0-255 scale)")
    args = parser.parse_args()

    preprocess = Preprocess(args.resolution)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for seed in range(args.images):
            path = Path(folder) / f"photo{seed}.jpg"
            photo_like(4000, 3000, seed, args.noise).save(path, quality=90)
            paths.append(path)
        megabytes = statistics.mean(p.stat().st_size for p in paths) / 1e6
        drafted = load_image(paths[0], min_size=args.resolution).size
        full_s, full_cpu, full_batch = time_path(paths, preprocess, None, args.repeats)
        draft_s, draft_cpu, draft_batch = time_path(paths, preprocess, args.resolution, args.repeats)

    torch.manual_seed(0)
    model = CLIP.from_name("ViT-B/32").eval()
    with torch.no_grad():
        full = F.normalize(model.encode_image(full_batch), dim=-1)
        draft = F.normalize(model.encode_image(draft_batch), dim=-1)
    cosine = (full * draft).sum(-1)
    pixel = (full_batch - draft_batch).abs() * torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)

    print(f"{args.images} JPEGs of 4000x3000, quality 90, noise sigma {args.noise:g}, {megabytes:.1f} MB each on average; "
          f"draft decode for min_size={args.resolution} gives {drafted[0]}x{drafted[1]}")
    print(f"full decode + preprocess:  {full_s * 1000:7.1f} ms/image wall, {full_cpu * 1000:7.1f} ms CPU")
    print(f"draft decode + preprocess: {draft_s * 1000:7.1f} ms/image wall, {draft_cpu * 1000:7.1f} ms CPU")
    print(f"speed-up: {full_s / draft_s:.2f}x wall, {full_cpu / draft_cpu:.2f}x CPU")
    print(f"preprocessed pixels (0-255 scale): mean |diff| {pixel.mean().item() * 255:.2f}, "
          f"max {pixel.max().item() * 255:.1f}")
    print(f"ViT-B/32 (random init, seed 0) embedding cosine full vs draft: "
          f"min {cosine.min().item():.6f}, mean {cosine.mean().item():.6f}")


if __name__ == "__main__":
    main()
