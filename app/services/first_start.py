"""First start, offline: a demo photo folder drawn from the synthetic world, added to the catalog and
indexed with the current model (app.services.library.add_folders, as any folder), so every tab has
something to show before the user adds a folder; and the demo audit dataset (app.services.audit.demo_dataset)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cliplab.app.services.app_state import AppState, Job
from cliplab.app.services.library import add_folders
from cliplab.engine import paths

DEMO_PHOTOS = "demo-photos"
MARKER = ".complete"  # written last: a folder without it was cut short and is written again


def demo_photos_dir() -> Path:
    return paths.data_dir() / DEMO_PHOTOS


# The Classify tab's starting classes: shape-colour pairs the demo model was trained on, and every
# other demo photo shows one of them, so the first classification a person runs is right.
DEMO_CLASSES = ("red circle", "blue square", "green triangle", "yellow star")


def write_demo_photos(folder: Path, n: int = 120, seed: int = 0,
                      on_progress: Callable[[int, int], None] | None = None) -> Path:
    """n synthetic scenes as JPEGs named by their caption's words (e.g. 0007-two-red-circles.jpg):
    even-numbered ones show the DEMO_CLASSES in turn, the others any scene or word the demo model
    was trained on (never a held-out shape-colour pair)."""
    from cliplab.trainer.demo.world import World  # trainer is only needed here, on first start

    if (folder / MARKER).is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    world = World(seed=seed, image_size=128)
    rng = np.random.default_rng(seed)
    for i in range(n):
        if i % 2 == 0:
            colour, shape = DEMO_CLASSES[(i // 2) % len(DEMO_CLASSES)].split()
            sample = world.scene_sample(rng, shape=shape, colour=colour, unnamed_colours=False)
        else:
            sample = world.sample(1, "train", rng)[0]
        slug = "-".join("".join(c for c in word if c.isalnum()) for word in sample.caption.lower().split()[:6])
        sample.image.save(folder / f"{i:04d}-{slug}.jpg", quality=90)
        if on_progress is not None:
            on_progress(i + 1, n)
    (folder / MARKER).write_text("ok\n")
    return folder


def needs_first_start(state: AppState) -> bool:
    """True when the catalog has no folder yet (a fresh data directory)."""
    return not state.library_roots()


def first_start(state: AppState, n: int = 120, job: Job | None = None) -> dict:
    """Write the demo photos (once) and index them with the current model."""
    folder = demo_photos_dir()

    def progress(done: int, total: int) -> None:
        if job and (done % 10 == 0 or done == total):
            job.update(0.3 * done / total, f"drawing demo photos: {done}/{total}")

    write_demo_photos(folder, n, on_progress=progress)
    from cliplab.app.services.audit import demo_dataset

    demo_dataset()  # the Audit tab's demo dataset, so its first run needs no files of the person's own
    return add_folders(state.catalog, state.search_bundle, [folder], job)
