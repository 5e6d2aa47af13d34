"""Training data: image-caption pairs from a CSV/TSV, a folder with sidecar captions, WebDataset
shards, or the synthetic world, as `(image [3, r, r], caption)` with the paper's augmentation.

Images are preprocessed with the model's own Preprocess (engine.model_preprocess: a release's
mean/std, interpolation, resize size; the reference for a model built from scratch), which every
dataset receives. The training augmentation is the paper's: resize the shorter side (to the
release's resize size, the resolution by default), then take a random square crop, normalised as the
release says; train=False takes the model's own eval transform (Preprocess itself).

Every dataset is iterable and shards itself: each epoch is a seeded permutation split across
DDP ranks, then across DataLoader workers, so each sample is seen once per epoch over all
ranks (CSV, folder, synthetic); WebDataset shards are split by rank and worker instead.

Bad samples (missing or corrupt image, empty caption, damaged shard) never stop a run: they are
skipped and counted by reason in `dataset.skipped`. Inside DataLoader workers the count travels
as a `Skipped` sentinel that `Collate` drops and `Batches` adds to `dataset.skipped` in the
main process, so the count is complete whatever the number of workers.
"""

from __future__ import annotations

import csv
import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cliplab.engine.errors import CliplabError
from cliplab.engine.evaldata import is_image_file
from cliplab.engine.images import ImageLoadError, Preprocess, load_image
from cliplab.trainer.demo.world import CONTRAST_SHARE, World

IMAGE_COLUMNS = ("filepath", "image", "image_path", "path", "file", "filename")
CAPTION_COLUMNS = ("caption", "title", "text")
WDS_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


class Skipped(NamedTuple):
    """Stands in for a bad sample inside a DataLoader worker; Collate drops and counts it."""

    reason: str


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else torch.distributed when initialised, else torchrun's environment."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class RandomSquareCrop:
    """The paper's training augmentation with the model's preprocessing: resize of the shorter side to
    the Preprocess's resize size (its resolution r unless the release says otherwise) with its
    interpolation, a random r x r crop, normalised with its mean/std. With rng=None, the model's own
    eval transform (the Preprocess itself: the release's resize mode included)."""

    def __init__(self, preprocess: Preprocess) -> None:
        if not isinstance(preprocess, Preprocess):
            raise TypeError(f"RandomSquareCrop takes the model's Preprocess, not {type(preprocess).__name__}.")
        self.preprocess = preprocess
        self.resolution = preprocess.resolution
        self._resample = (Image.Resampling.BILINEAR if preprocess.interpolation == "bilinear"
                          else Image.Resampling.BICUBIC)
        self._mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(preprocess.std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        if rng is None:
            return self.preprocess(image)
        r, short_side = self.resolution, self.preprocess.resize_size
        width, height = image.size
        scale = short_side / min(width, height)
        size = (max(short_side, int(width * scale)), max(short_side, int(height * scale)))
        if size != image.size:
            image = image.resize(size, self._resample)
        left = int(rng.integers(size[0] - r + 1))
        top = int(rng.integers(size[1] - r + 1))
        pixels = np.asarray(image.crop((left, top, left + r, top + r)).convert("RGB"), dtype=np.uint8)
        tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(torch.float32).div_(255)
        return tensor.sub_(self._mean).div_(self._std)


class CaptionDataset(IterableDataset):
    """Base of the datasets: sharding, seeding per epoch/rank/worker, skip counting."""

    def __init__(self, preprocess: Preprocess, train: bool = True, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.resolution = preprocess.resolution
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = _rank_and_world(rank, world_size)
        self.transform = RandomSquareCrop(preprocess)
        self.skipped: Counter[str] = Counter()

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for this epoch (call before iterating; DataLoader workers copy the dataset)."""
        self.epoch = epoch

    def _samples(self) -> Iterator[tuple[torch.Tensor, str] | Skipped]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str] | Skipped]:
        in_worker = get_worker_info() is not None
        for item in self._samples():
            if isinstance(item, Skipped) and not in_worker:
                self.skipped[item.reason] += 1
                continue
            yield item

    def _image_sample(self, load: Callable[[], Image.Image], caption: str | None,
                      rng: np.random.Generator | None) -> tuple[torch.Tensor, str] | Skipped:
        caption = " ".join((caption or "").split())
        if not caption:
            return Skipped("empty caption")
        try:
            image = load()
        except ImageLoadError as error:
            return Skipped(error.reason)
        return self.transform(image, rng), caption


class IndexedDataset(CaptionDataset):
    """A dataset of n addressable samples: a seeded permutation per epoch, split by rank then worker."""

    def __len__(self) -> int:
        raise NotImplementedError

    def _get(self, index: int, rng: np.random.Generator | None) -> tuple[torch.Tensor, str] | Skipped:
        raise NotImplementedError

    def indices(self, worker: int = 0, num_workers: int = 1) -> np.ndarray:
        """This rank's and worker's sample indices for the current epoch."""
        n = len(self)
        if self.train:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
            # Equal counts on every rank (DDP steps in lockstep): drop fewer than world_size per epoch.
            order = order[: n - n % self.world_size]
        else:
            order = np.arange(n)
        return order[self.rank::self.world_size][worker::num_workers]

    def _samples(self) -> Iterator[tuple[torch.Tensor, str] | Skipped]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in self.indices(worker, num_workers).tolist():
            # Per-sample seeding: the same crop for the same (seed, epoch, sample), whatever the sharding.
            rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
            yield self._get(index, rng)


class CsvDataset(IndexedDataset):
    """Image paths and captions from a CSV/TSV file with a header row (delimiter detected)."""

    def __init__(self, path: str | Path, preprocess: Preprocess, image_key: str | None = None,
                 caption_key: str | None = None, **kwargs) -> None:
        super().__init__(preprocess, **kwargs)
        self.path = Path(path).expanduser()
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as error:
            raise CliplabError(f"Could not read the caption file {self.path}: {error}.") from error
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else _sniff_delimiter(text)
        rows = csv.reader(text.splitlines(), delimiter=delimiter)
        header = [h.strip() for h in next(rows, [])]
        image_col = _column(header, image_key, IMAGE_COLUMNS, "image path", self.path, "--image-key")
        caption_col = _column(header, caption_key, CAPTION_COLUMNS, "caption", self.path, "--caption-key")
        root = self.path.parent
        self.items: list[tuple[Path, str]] = []
        for row in rows:
            if not any(cell.strip() for cell in row):
                continue
            image = row[image_col].strip() if image_col < len(row) else ""
            caption = row[caption_col] if caption_col < len(row) else ""
            self.items.append((root / image if image else root / "", caption))
        if not self.items:
            raise CliplabError(f"The caption file {self.path} has a header but no rows.")

    def __len__(self) -> int:
        return len(self.items)

    def _get(self, index: int, rng: np.random.Generator | None) -> tuple[torch.Tensor, str] | Skipped:
        path, caption = self.items[index]
        return self._image_sample(lambda: load_image(path, min_size=self.preprocess.resize_size), caption, rng)


def _sniff_delimiter(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:8192], delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


def _column(header: list[str], wanted: str | None, defaults: tuple[str, ...], what: str, path: Path,
            option: str) -> int:
    lowered = [h.lower() for h in header]
    for name in [wanted] if wanted else defaults:
        if name.lower() in lowered:
            return lowered.index(name.lower())
    tried = wanted or " / ".join(defaults)
    raise CliplabError(f"The caption file {path} has no {what} column named {tried} (its columns are: "
                       f"{', '.join(header) or 'none'}). Rename the column or pass {option}.")


class FolderDataset(IndexedDataset):
    """Images in a folder tree, each captioned by the .txt file with the same stem beside it."""

    def __init__(self, folder: str | Path, preprocess: Preprocess, **kwargs) -> None:
        super().__init__(preprocess, **kwargs)
        self.folder = Path(folder).expanduser()
        self.items = sorted(p for p in self.folder.rglob("*") if p.is_file() and is_image_file(p)
                            and not any(part.startswith(".") for part in p.relative_to(self.folder).parts))
        if not self.items:
            raise CliplabError(f"The folder {self.folder} holds no images; training needs image files "
                               "with a .txt caption of the same name beside each.")

    def __len__(self) -> int:
        return len(self.items)

    def _get(self, index: int, rng: np.random.Generator | None) -> tuple[torch.Tensor, str] | Skipped:
        path = self.items[index]
        try:
            caption = path.with_suffix(".txt").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return Skipped("no caption file")
        return self._image_sample(lambda: load_image(path, min_size=self.preprocess.resize_size), caption, rng)


class SyntheticDataset(IndexedDataset):
    """The synthetic world, `epoch_size` fresh samples per epoch (a new seed each epoch: endless).

    group_size k > 1 draws the samples in contrast groups of k that differ in one attribute only
    (`World.contrast_group`; CONTRAST_SHARE of the groups, the rest independent): hard negatives.
    A group's members stay together on one rank and one worker, so they meet in the same
    contrastive batch."""

    def __init__(self, preprocess: Preprocess, world: World | None = None, split: str = "train",
                 epoch_size: int = 10_000, group_size: int = 1, **kwargs) -> None:
        super().__init__(preprocess, **kwargs)
        self.world = world if world is not None else World(seed=self.seed)
        self.split = split
        self.epoch_size = epoch_size
        self.group_size = max(1, int(group_size))

    def __len__(self) -> int:
        return self.epoch_size

    def indices(self, worker: int = 0, num_workers: int = 1) -> np.ndarray:
        k = self.group_size
        if k == 1:
            return super().indices(worker, num_workers)
        groups = len(self) // k
        order = np.random.default_rng([self.seed, self.epoch]).permutation(groups) if self.train else np.arange(groups)
        order = order[: groups - groups % self.world_size][self.rank::self.world_size][worker::num_workers]
        return (order[:, None] * k + np.arange(k)[None]).reshape(-1)

    def _get(self, index: int, rng: np.random.Generator | None) -> tuple[torch.Tensor, str] | Skipped:
        rng = rng if rng is not None else np.random.default_rng([self.seed, self.epoch, index])
        if self.group_size > 1:
            group, member = divmod(index, self.group_size)
            group_rng = np.random.default_rng([self.seed, self.epoch, group, 7])
            pins = self.world.contrast_group(group_rng, self.group_size, self.split, CONTRAST_SHARE)[member]
            sample = self.world.pinned_sample(rng, pins, self.split)
        else:
            sample = self.world.sample(1, self.split, rng)[0]
        return self.transform(sample.image, rng if self.train else None), sample.caption


class WebDatasetShards(CaptionDataset):
    """WebDataset tar shards (`shards-{000..009}.tar`): keys jpg/jpeg/png/webp and txt per sample.

    Shards are shuffled per epoch, split by rank, then by worker (webdataset's split_by_worker),
    and samples shuffled through a buffer. Give at least world_size x num_workers shards.
    """

    def __init__(self, urls: str | list[str], preprocess: Preprocess, shuffle_buffer: int = 1000, **kwargs) -> None:
        import webdataset as wds

        super().__init__(preprocess, **kwargs)
        self.urls = wds.shardlists.expand_urls(urls) if isinstance(urls, str) else list(urls)
        missing = [u for u in self.urls if "://" not in u and not Path(u).is_file()]
        if missing and len(missing) == len(self.urls):
            raise CliplabError(f"No WebDataset shard found for {urls} (looked for {missing[0]}, ...).")
        if self.train and len(self.urls) < self.world_size:
            raise CliplabError(f"{len(self.urls)} shards cannot be split over {self.world_size} processes; "
                               "write the data into at least as many shards as processes.")
        self.shuffle_buffer = shuffle_buffer
        self._errors: list[Skipped] = []

    def _handler(self, error: Exception) -> bool:
        self._errors.append(Skipped("bad shard"))
        return True  # go on with the next file or shard

    def _samples(self) -> Iterator[tuple[torch.Tensor, str] | Skipped]:
        import webdataset as wds

        info = get_worker_info()
        worker = info.id if info is not None else 0
        urls = list(self.urls)
        if self.train:
            urls = [urls[i] for i in np.random.default_rng([self.seed, self.epoch]).permutation(len(urls))]
        urls = urls[self.rank::self.world_size]
        shards = wds.split_by_worker(iter([{"url": u} for u in urls]))
        samples = wds.tariterators.tarfile_samples(shards, handler=self._handler)
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        if self.train and self.shuffle_buffer > 1:
            samples = _shuffled(samples, self.shuffle_buffer, rng)
        for sample in samples:
            yield from self._errors
            self._errors.clear()
            yield self._decode(sample, rng if self.train else None)
        yield from self._errors
        self._errors.clear()

    def _decode(self, sample: dict, rng: np.random.Generator | None) -> tuple[torch.Tensor, str] | Skipped:
        key = next((k for k in WDS_IMAGE_KEYS if k in sample), None)
        if key is None:
            return Skipped("no image in sample")
        if "txt" not in sample:
            return Skipped("no caption in sample")
        caption = sample["txt"].decode("utf-8", errors="replace")
        return self._image_sample(lambda: load_image(sample[key], min_size=self.preprocess.resize_size), caption, rng)


def _shuffled(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """Buffer shuffle: fill `size` items, then emit a random one for each new item."""
    buffer = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = int(rng.integers(size))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def build_dataset(spec: str, preprocess: Preprocess, train: bool = True, seed: int = 0, rank: int | None = None,
                  world_size: int | None = None, image_key: str | None = None, caption_key: str | None = None,
                  world: World | None = None, epoch_size: int = 10_000, group_size: int = 1) -> CaptionDataset:
    """The dataset a spec names: "synthetic", a .csv/.tsv file, a folder of images with .txt
    captions, or WebDataset shards (a .tar path or brace pattern like `data/shard-{000..009}.tar`).
    preprocess: the model's own (engine.model_preprocess), never a default one."""
    common = {"train": train, "seed": seed, "rank": rank, "world_size": world_size}
    if spec == "synthetic":
        return SyntheticDataset(preprocess, world=world, epoch_size=epoch_size, group_size=group_size, **common)
    path = Path(spec).expanduser()
    if ".tar" in path.name:
        return WebDatasetShards(spec, preprocess, **common)
    if path.suffix.lower() in (".csv", ".tsv"):
        if not path.is_file():
            raise CliplabError(f"The caption file {path} does not exist.")
        return CsvDataset(path, preprocess, image_key=image_key, caption_key=caption_key, **common)
    if path.is_dir():
        return FolderDataset(path, preprocess, **common)
    raise CliplabError(f"Cannot tell what training data {spec!r} is: give 'synthetic', a .csv/.tsv file "
                       "(image path + caption columns), a folder of images with .txt captions, or "
                       "WebDataset shards (a .tar file or a pattern like data/shard-{000..009}.tar).")


class Collate:
    """Batches samples, dropping Skipped sentinels: (images, tokens or captions, Counter of skips).
    With a tokenizer the captions become token ids (cut to fit the context, EOT kept last)."""

    def __init__(self, tokenizer: Callable | None = None, context_length: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, batch: list) -> tuple[torch.Tensor, torch.Tensor | list[str], Counter]:
        skipped = Counter(item.reason for item in batch if isinstance(item, Skipped))
        good = [item for item in batch if not isinstance(item, Skipped)]
        if not good:
            return torch.empty(0), [], skipped
        images = torch.stack([image for image, _ in good])
        captions = [caption for _, caption in good]
        if self.tokenizer is None:
            return images, captions, skipped
        kwargs = {"context_length": self.context_length} if self.context_length else {}
        return images, self.tokenizer(captions, truncate=True, **kwargs), skipped


class Batches:
    """Fixed-size training batches from a dataset through a DataLoader.

    Iterating runs epochs without end (epoch e calls `dataset.set_epoch(e)`), yielding
    `(images [B, 3, r, r], tokens [B, L])` (captions as a list without a tokenizer). Skipped
    samples shrink worker batches, so batches are re-cut to exactly batch_size; the skip counts
    are added to `dataset.skipped`. `epoch(e)` gives one epoch (its last partial batch dropped).
    """

    def __init__(self, dataset: CaptionDataset, batch_size: int, tokenizer: Callable | None = None,
                 num_workers: int = 0, context_length: int | None = None, start_epoch: int = 0) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.collate = Collate(tokenizer, context_length)
        self.start_epoch = start_epoch

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | list[str]]]:
        self.dataset.set_epoch(epoch)
        loader = DataLoader(self.dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                            collate_fn=self.collate, persistent_workers=False)
        images: list[torch.Tensor] = []
        texts: list = []
        have = 0
        for batch_images, batch_texts, skipped in loader:
            self.dataset.skipped.update(skipped)
            if len(batch_texts) == 0:
                continue
            images.append(batch_images)
            texts.append(batch_texts)
            have += len(batch_texts)
            while have >= self.batch_size:
                all_images = torch.cat(images)
                all_texts = (torch.cat(texts) if isinstance(texts[0], torch.Tensor)
                             else list(itertools.chain.from_iterable(texts)))
                yield all_images[: self.batch_size], all_texts[: self.batch_size]
                images, texts = [all_images[self.batch_size:]], [all_texts[self.batch_size:]]
                have -= self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | list[str]]]:
        for epoch in itertools.count(self.start_epoch):
            produced = False
            for batch in self.epoch(epoch):
                produced = True
                yield batch
            if not produced:
                raise CliplabError(
                    f"An epoch of the training data gave no full batch of {self.batch_size} "
                    f"(skipped so far: {dict(self.dataset.skipped) or 'none'}); use more data or a smaller batch.")
