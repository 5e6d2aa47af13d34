"""The demo audit dataset: scenes of the demo model's world with group columns (shape, colour,
style), written as a CSV in the generic audit format beside its images.

Every shape-colour pair the demo model was trained on (the world's held-out pairs are left out, so
no group is unfamiliar to the model by construction) is drawn `per_pair` times with the world's
usual variety of size, count, style and background; seeded, so the same call writes the same files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cliplab.trainer.demo.world import SHAPES, World

AUDIT_COLOURS = ("red", "blue", "green", "yellow", "purple")
AUDIT_CSV = "audit.csv"
GROUP_COLUMNS = ("shape", "colour")
MARKER = ".complete"  # written last: a folder without it was cut short and is written again


def write_demo_audit_set(folder: str | Path, per_pair: int = 6, seed: int = 0, image_size: int = 96) -> Path:
    """Write the images and audit.csv (file, shape, colour, style) into folder; returns the CSV's path."""
    folder = Path(folder)
    csv_path = folder / AUDIT_CSV
    if (folder / MARKER).is_file() and csv_path.is_file():
        return csv_path
    (folder / "images").mkdir(parents=True, exist_ok=True)
    world = World(seed=seed, image_size=image_size)
    rng = np.random.default_rng(seed)
    pairs = [(s, c) for s in SHAPES for c in AUDIT_COLOURS if (s, c) in set(world.train_pairs)]
    rows = []
    for _ in range(per_pair):
        for shape, colour in pairs:
            sample = world.scene_sample(rng, world.train_pairs, shape=shape, colour=colour)
            name = f"images/{len(rows):04d}-{colour}-{shape}.jpg"
            sample.image.save(folder / name, quality=90)
            rows.append({"file": name, "shape": shape, "colour": colour, "style": sample.attrs["style"]})
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "shape", "colour", "style"])
        writer.writeheader()
        writer.writerows(rows)
    (folder / MARKER).write_text("ok\n")
    return csv_path
