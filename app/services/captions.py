"""Image <-> text over a text collection given as a file: nearest texts of an image, nearest images of
a text, and browsing a captioned dataset both ways with its true pairs marked.

A collection is
- a captioned dataset: the CSV `cliplab eval retrieval` reads (image,caption rows, several captions
  per image allowed, paths relative to the CSV), or
- a plain text file, one text a line (tags, class names, a user's list), or
- `classifier:NAME`, a saved classifier: one text per class, its embedding the mean over the templates, or
- `collection:NAME`, a collection stored in the catalog by `cliplab texts add` (the same image -> text
  feature as `cliplab captions --image`, with the same caches).
Image features come from the evaluation feature cache (engine.evaldata), text features from the
prompt cache (engine.zeroshot), so a second look at the same collection encodes nothing.
Ranks follow engine.retrieval: a tie with the true item counts against it, and in the ranked lists
a true item comes after the other items of equal score, so its place in the list is its rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cliplab.app.services.classifiers import load_classifier
from cliplab.app.services.evaluate import read_captions
from cliplab.engine.errors import CliplabError
from cliplab.engine.evaldata import LabelledImages, dataset_features
from cliplab.engine.features import encode_images, numerics_key
from cliplab.engine.images import load_image
from cliplab.engine.retrieval import unit_rows
from cliplab.engine.zeroshot import build_classifier, embed_prompts
from cliplab.indexes.catalog import Catalog
from cliplab.indexes.indexer import ModelBundle
from cliplab.indexes.texts import collection_entries, collection_names

CLASSIFIER_PREFIX = "classifier:"
COLLECTION_PREFIX = "collection:"


def stored_collection(catalog: Catalog, name: str) -> Collection:
    """A text collection stored in the catalog (`cliplab texts add`); texts with a true image become a
    captioned dataset (images in order of first appearance)."""
    rows = collection_entries(catalog, name)
    if rows is None:
        names = ", ".join(collection_names(catalog)) or "none yet"
        raise CliplabError(f"No text collection named {name!r} is stored (stored ones: {names}).")
    texts = [text for text, _ in rows]
    if not texts:
        raise CliplabError(f"The text collection {name!r} holds no texts.")
    if any(image is None for _, image in rows):
        return Collection(f"{COLLECTION_PREFIX}{name}", texts)
    images = list(dict.fromkeys(image for _, image in rows))
    position = {p: i for i, p in enumerate(images)}
    return Collection(f"{COLLECTION_PREFIX}{name}", texts, [Path(p) for p in images],
                      [position[image] for _, image in rows])


@dataclass
class Collection:
    source: str
    texts: list[str]
    images: list[Path] = field(default_factory=list)  # a captioned dataset's images, else empty
    owners: list[int] = field(default_factory=list)  # the image index of each caption, else empty
    templates: list[str] = field(default_factory=list)  # a saved classifier's templates, else empty

    @property
    def is_dataset(self) -> bool:
        return bool(self.images)

    def captions_of(self, image: int) -> list[int]:
        return [j for j, owner in enumerate(self.owners) if owner == image]


@dataclass
class TextMatch:
    rank: int
    index: int
    text: str
    score: float
    true_pair: bool


@dataclass
class ImageMatch:
    rank: int
    index: int
    path: Path
    score: float
    true_pair: bool


@dataclass
class BrowseStep:
    """One step through a captioned dataset. side "image": image `index`, its captions and the nearest
    captions; side "caption": caption `index`, its image and the nearest images. rank: of the image's
    best caption among all captions, or of the caption's image among all images."""
    side: str
    index: int
    total: int
    image: Path
    text: str | None
    true_captions: list[str]
    rank: int
    texts: list[TextMatch] = field(default_factory=list)
    images: list[ImageMatch] = field(default_factory=list)


@dataclass
class _Embedded:
    collection: Collection
    text_features: np.ndarray  # [n_texts, d], L2-normalised
    image_features: np.ndarray | None = None  # [n_images, d], L2-normalised, computed on first need


_MEMO: dict[tuple, _Embedded] = {}  # the last few collections, so browsing step by step reads no cache file
_MEMO_SIZE = 4


def _opened(catalog: Catalog | None, source: str) -> Catalog:
    """The catalog that front end opened: a stored collection or classifier is read from it, never from a
    default database of the process."""
    if catalog is None:
        raise ValueError(f"{source} is stored in the catalog: pass the catalog the front end opened")
    return catalog


def load_collection(source: str | Path, catalog: Catalog | None = None) -> Collection:
    """A captions CSV, a .txt with one text a line, `classifier:NAME` or `collection:NAME` (these two
    are read from catalog)."""
    text = str(source).strip()
    if not text:
        raise CliplabError("Choose a text collection: a captions CSV (image,caption rows) or a .txt file "
                           "with one text per line.")
    if text.startswith(CLASSIFIER_PREFIX):
        spec = load_classifier(_opened(catalog, text), text[len(CLASSIFIER_PREFIX):].strip())
        return Collection(text, list(spec["classes"]), templates=list(spec["templates"]))
    if text.startswith(COLLECTION_PREFIX):
        return stored_collection(_opened(catalog, text), text[len(COLLECTION_PREFIX):].strip())
    path = Path(text).expanduser()
    if not path.is_file():
        raise CliplabError(f"The text collection {path} does not exist: give a captions CSV (image,caption rows) "
                           "or a .txt file with one text per line.")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".txt"):
        raise CliplabError(f"{path.name} is neither a captions .csv nor a .txt file with one text per line.")
    content = path.read_text(encoding="utf-8-sig", errors="replace")
    if not content.strip():
        raise CliplabError(f"The text collection {path} is empty: it needs at least one "
                           f"{'image,caption row' if suffix == '.csv' else 'line of text'}.")
    if suffix == ".txt":
        return Collection(str(path), [line.strip() for line in content.splitlines() if line.strip()])
    images, captions, owners = read_captions(path)
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise CliplabError(f"{path.name}: {len(missing)} of its {len(images)} images do not exist, e.g. {missing[0]}; "
                           "image paths are read relative to the CSV's folder.")
    return Collection(str(path), captions, images, owners)


def _key(model, collection: Collection) -> tuple:
    """The memo key: the model, and the file's state or the classifier's content."""
    path = Path(collection.source)
    state = ((path.stat().st_size, path.stat().st_mtime_ns) if path.is_file()
             else (tuple(collection.texts), tuple(collection.templates)))
    return numerics_key(model), collection.source, state


def _embedded(bundle: ModelBundle, source: str | Path, catalog=None) -> _Embedded:
    model, tokenizer = bundle.inference_model, bundle.tokenizer
    collection = load_collection(source, catalog)
    key = _key(model, collection)
    if key not in _MEMO:
        if collection.templates:  # a classifier: each class is the mean of its prompts, as it classifies
            features = build_classifier(model, tokenizer, collection.texts, collection.templates).weights
        else:
            features, _ = embed_prompts(model, tokenizer, collection.texts)
        _MEMO[key] = _Embedded(collection, features)
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
    return _MEMO[key]


def _image_features(bundle: ModelBundle, embedded: _Embedded, progress: bool = False) -> np.ndarray:
    if embedded.image_features is None:
        model, preprocess = bundle.inference_model, bundle.preprocess
        images = embedded.collection.images
        dataset = LabelledImages(images, [""] * len(images), [""], Path(embedded.collection.source).stem)
        features = dataset_features(model, preprocess, dataset, project=True, progress=progress)
        embedded.image_features = unit_rows(features).astype(np.float32)
    return embedded.image_features


def _dataset(bundle: ModelBundle, source: str | Path, catalog=None) -> _Embedded:
    embedded = _embedded(bundle, source, catalog)
    if not embedded.collection.is_dataset:
        raise CliplabError(f"{embedded.collection.source} is a list of texts, not a captioned dataset: searching "
                           "images by text and browsing need a CSV of image,caption rows.")
    return embedded


def _order(scores: np.ndarray, true: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores; among equal scores the true items last (ties count against them)."""
    return np.lexsort((true, -scores))[:max(1, min(int(k), len(scores)))]


def _image_query(bundle: ModelBundle, image) -> tuple[np.ndarray, Path | None]:
    model, preprocess = bundle.inference_model, bundle.preprocess
    path = None
    if not isinstance(image, Image.Image):
        if not image:
            raise CliplabError("Drop or pick an image first.")
        path = Path(image).expanduser()
        if not path.is_file():
            raise CliplabError(f"The image {path} does not exist.")
        image = load_image(path, min_size=model.image_resolution)
    return encode_images(model, preprocess, [image.convert("RGB")])[0], path


def _text_matches(collection: Collection, scores: np.ndarray, true: np.ndarray, k: int) -> list[TextMatch]:
    return [TextMatch(rank, int(j), collection.texts[j], float(scores[j]), bool(true[j]))
            for rank, j in enumerate(_order(scores, true, k), 1)]


def _image_matches(collection: Collection, scores: np.ndarray, true: np.ndarray, k: int) -> list[ImageMatch]:
    return [ImageMatch(rank, int(i), collection.images[i], float(scores[i]), bool(true[i]))
            for rank, i in enumerate(_order(scores, true, k), 1)]


def image_to_texts(bundle: ModelBundle, image, collection: str | Path, k: int = 10, catalog=None) -> list[TextMatch]:
    """The k texts of the collection nearest to the image (a path or a PIL image). When the image is one
    of a captioned dataset's images (same file), its captions are marked as true pairs."""
    embedded = _embedded(bundle, collection, catalog)
    vector, path = _image_query(bundle, image)
    scores = embedded.text_features @ vector
    true = np.zeros(len(scores), dtype=bool)
    if path is not None and embedded.collection.is_dataset:
        resolved = path.resolve()
        for i, p in enumerate(embedded.collection.images):
            if p.resolve() == resolved:
                true[embedded.collection.captions_of(i)] = True
    return _text_matches(embedded.collection, scores, true, k)


def text_to_images(bundle: ModelBundle, text: str, dataset: str | Path, k: int = 10, catalog=None) -> list[ImageMatch]:
    """The k images of a captioned dataset nearest to the text; the images it is a caption of are marked."""
    text = (text or "").strip()
    if not text:
        raise CliplabError("Type a text to find the dataset's images with.")
    embedded = _dataset(bundle, dataset, catalog)
    model, tokenizer = bundle.inference_model, bundle.tokenizer
    images = _image_features(bundle, embedded)
    scores = images @ embed_prompts(model, tokenizer, [text])[0][0]
    collection = embedded.collection
    true = np.zeros(len(scores), dtype=bool)
    true[[collection.owners[j] for j, c in enumerate(collection.texts) if c == text]] = True
    return _image_matches(collection, scores, true, k)


def dataset_size(bundle: ModelBundle, dataset: str | Path, side: str = "image", catalog=None) -> int:
    """How many images (side "image") or captions (side "caption") a captioned dataset has."""
    collection = _dataset(bundle, dataset, catalog).collection
    return len(collection.images) if side == "image" else len(collection.texts)


def browse(bundle: ModelBundle, dataset: str | Path, index: int, side: str = "image", k: int = 10,
           catalog=None) -> BrowseStep:
    """Step `index` (0-based) through a captioned dataset: an image with its nearest captions and the rank
    of its best true caption, or a caption with its nearest images and the rank of its true image."""
    if side not in ("image", "caption"):
        raise CliplabError(f"Browse by 'image' or 'caption', not {side!r}.")
    embedded = _dataset(bundle, dataset, catalog)
    collection = embedded.collection
    images = _image_features(bundle, embedded)
    total = len(collection.images) if side == "image" else len(collection.texts)
    if not 0 <= int(index) < total:
        raise CliplabError(f"The dataset has {total} {side}s: pick a number from 0 to {total - 1}.")
    index = int(index)
    if side == "image":
        scores = embedded.text_features @ images[index]
        true = np.asarray(collection.owners) == index
        rank = 1 + int(((scores >= scores[true].max()) & ~true).sum())
        return BrowseStep("image", index, total, collection.images[index], None,
                          [collection.texts[j] for j in np.flatnonzero(true)], rank,
                          texts=_text_matches(collection, scores, true, k))
    owner = collection.owners[index]
    scores = images @ embedded.text_features[index]
    true = np.arange(len(scores)) == owner
    rank = 1 + int((scores >= scores[owner]).sum()) - 1
    return BrowseStep("caption", index, total, collection.images[owner], collection.texts[index],
                      [collection.texts[j] for j in collection.captions_of(owner)], rank,
                      images=_image_matches(collection, scores, true, k))
