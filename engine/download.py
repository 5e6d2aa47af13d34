"""Downloading released CLIP weights and the vocabulary by name, only when the user asks.

The names are the release table in assets/models.json: OpenAI's nine, and every plain-CLIP release
open_clip lists (LAION-400M/2B, YFCC/CC12M, DataComp and CommonPool, MetaCLIP, MetaCLIP 2 worldwide,
DFN), each with its architecture, its file on the Hugging Face hub, its size and its published
ImageNet zero-shot top-1 where open_clip's results table has it. A hub file named
open_clip_model.safetensors that the hub does not have is fetched as open_clip_pytorch_model.bin, as
open_clip does. A release whose text tower reads a Hugging Face tokenizer (MetaCLIP 2 worldwide: XLM-V)
also fetches that tokenizer's tokenizer.json into the model's `tokenizer/` folder.

Each file is streamed to a `.part` file with a progress bar, resumed with an HTTP Range request
after a cut connection, verified by SHA-256, and renamed into the cache only when complete; an
`on_progress` callback follows the same steps for callers without a terminal (the app's Models tab).
A model is then converted once to our safetensors format (one folder per model, with its own
vocabulary, the release's architecture and preprocessing), so later loads never run the TorchScript
archive again. OpenAI's files are verified against their pinned hashes; a hub file without a pinned
hash is verified against the SHA-256 the hub reports for it (the X-Linked-ETag header of the resolve
URL, which is the LFS object's sha256), and that hash is recorded in the model's config.json. A file
outside the hub is verified against the hash pinned in the table (a prefix where open_clip publishes only
the prefix in the file name, as it does itself).
Set CLIPLAB_DOWNLOAD_BASE (or pass base_url) to fetch OpenAI's files from a mirror: models at
BASE/<sha256>/<file>.pt, the vocabulary at BASE/bpe_simple_vocab_16e6.txt.gz; HF_ENDPOINT points the
hub downloads at a hub mirror.
"""

from __future__ import annotations

import errno
import http.client
import importlib.util
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import HTTPRedirectHandler, Request, build_opener, urlopen

from tqdm.auto import tqdm

from cliplab.engine import weights
from cliplab.engine.config import model_table
from cliplab.engine.errors import CliplabError
from cliplab.engine.paths import models_dir
from cliplab.engine.text_towers import OPEN_CLIP_CONFIG, RELEASE_FILE
from cliplab.engine.weights import replace_atomically

DEFAULT_BASE = "https://openaipublic.azureedge.net/clip/models"
HUB = "https://huggingface.co"
VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_URL = f"https://github.com/openai/CLIP/raw/main/clip/{VOCAB_NAME}"
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
CHUNK = 1 << 20
TIMEOUT_S = 60

Progress = Callable[[int, int | None, str, str], None]
"""on_progress(done_bytes, total_bytes or None, label, stage): stage is "downloading" (called after every
chunk, first with the bytes a resume starts from), "verifying" (SHA-256) or "converting" (to our format)."""


class _Interrupted(Exception):
    """The connection failed mid-transfer: the .part file is kept for a resume."""


@dataclass(frozen=True)
class Release:
    """One row of the release table (assets/models.json)."""

    name: str
    arch: str  # an engine.config architecture name
    family: str
    data: str
    url: str
    size_mb: int  # approximate download size
    params_m: float
    imagenet_top1: float | None  # published zero-shot top-1, %; None where open_clip's table has none
    sha256: str | None = None  # pinned (or its prefix); None: verified by the hash the hub reports
    preprocess: dict = field(default_factory=dict)
    open_clip: str | None = None  # open_clip's model/pretrained tag, for reference
    tokenizer: dict | None = None  # a Hugging Face tokenizer: {"url": its tokenizer.json, "tokenizer_class": ...}
    # Releases kept as their Hugging Face folder (engine.text_towers: multilingual towers): its files, each
    # fetched as it is (name in the folder -> URL) instead of one weights file converted to our format
    kind: str = "clip"  # "clip", or "text-tower": texts only, for the image releases in pairs_with
    files: dict = field(default_factory=dict)
    pairs_with: list = field(default_factory=list)  # the image releases a text tower was trained for
    embed_dim: int | None = None
    languages: str = ""
    retrieval: dict = field(default_factory=dict)  # published multilingual figures: {"metric", "scores": {lang: %}}
    model_cfg: dict = field(default_factory=dict)  # open_clip's model_cfg, written as open_clip_config.json

    @property
    def is_openai(self) -> bool:
        return self.family == "OpenAI"

    @property
    def is_folder(self) -> bool:
        """Kept as its published folder (a multilingual tower), not converted to cliplab's format."""
        return bool(self.files)


@cache
def releases() -> dict[str, Release]:
    return {row["name"]: Release(**row) for row in model_table()["releases"]}


def slug(name: str) -> str:
    """A release's folder name: ViT-L/14@336px -> ViT-L-14-336px."""
    return name.replace("/", "-").replace("@", "-")


def release(name: str) -> Release:
    return releases()[resolve_name(name)]


def resolve_name(name: str) -> str:
    """A release name from either spelling (ViT-B/32 or ViT-B-32 for OpenAI's)."""
    for known in releases():
        if name in (known, slug(known)):
            return known
    raise CliplabError(f"Unknown model {name!r}. The models cliplab downloads are: {', '.join(releases())} "
                       "(`cliplab models` shows each one's size and ImageNet accuracy).")


def model_folder(name: str, root: str | Path | None = None) -> Path:
    return Path(root or models_dir()) / slug(resolve_name(name))


def is_downloaded(name: str, root: str | Path | None = None) -> bool:
    folder = model_folder(name, root)
    if release(name).is_folder:  # the release record is written last, once every file is verified
        return (folder / RELEASE_FILE).is_file()
    return (folder / weights.WEIGHTS_FILE).is_file() and (folder / weights.CONFIG_FILE).is_file()


def _base(base_url: str | None) -> str | None:
    base = base_url or os.environ.get("CLIPLAB_DOWNLOAD_BASE")
    return base.rstrip("/") if base else None


def model_url(name: str, base_url: str | None = None) -> str:
    entry = release(name)
    if entry.is_openai:
        return f"{_base(base_url) or DEFAULT_BASE}/{weights.OFFICIAL_SHA256[entry.name]}/{slug(entry.name)}.pt"
    return _mirrored(entry.url)


def _mirrored(url: str) -> str:
    """A hub URL on the hub mirror HF_ENDPOINT names, if any."""
    endpoint = os.environ.get("HF_ENDPOINT")
    return f"{endpoint.rstrip('/')}{url[len(HUB):]}" if endpoint and url.startswith(HUB) else url


def vocab_url(base_url: str | None = None) -> str:
    base = _base(base_url)
    return f"{base}/{VOCAB_NAME}" if base else VOCAB_URL


class _NotOnHub(CliplabError):
    """The hub answered 404 for the file."""


class _NoRedirect(HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the hub's hash headers are on the redirect itself


def hub_sha256(url: str, label: str, git_blob: bool = False) -> str:
    """The SHA-256 the hub reports for a file: the X-Linked-ETag (else ETag) of its resolve URL, which
    for an LFS file is the object's sha256. Read with a HEAD request that does not follow the redirect.
    git_blob: a small file kept in git (a config, a tokenizer's files) has as ETag its git blob id, the
    SHA-1 of "blob <size>\0" + content: returned as "git:<sha1>", which `fetch` verifies as git does."""
    request = Request(url, method="HEAD", headers={"User-Agent": "cliplab"})
    try:
        with build_opener(_NoRedirect).open(request, timeout=TIMEOUT_S) as response:
            headers = response.headers
    except HTTPError as error:
        if error.code not in (301, 302, 303, 307, 308):
            kind = _NotOnHub if error.code == 404 else CliplabError
            raise kind(f"The hub answered HTTP {error.code} for {label} at {url}; check the name, or try "
                       "again later.") from error
        headers = error.headers
    except (URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise CliplabError(f"Cannot reach {url} to download {label} ({reason}). Check the internet connection, "
                           "then run the download again.") from error
    for name in ("X-Linked-ETag", "ETag"):
        value = (headers.get(name) or "").removeprefix("W/").strip('"').lower()
        if re.fullmatch(r"[0-9a-f]{64}", value):
            return value
    for name in ("X-Linked-ETag", "ETag") if git_blob else ():
        value = (headers.get(name) or "").removeprefix("W/").strip('"').lower()
        if re.fullmatch(r"[0-9a-f]{40}", value):
            return "git:" + value
    raise CliplabError(f"The hub reported no SHA-256 for {label} at {url}, so the file could not be verified and "
                       "was not downloaded. Try again later, or download it yourself and load the file by path.")


SAFETENSORS_NAME, PICKLE_NAME = "open_clip_model.safetensors", "open_clip_pytorch_model.bin"


def hub_file(url: str, label: str) -> tuple[str, str]:
    """The hub file to fetch and its SHA-256: the URL's, or, where the hub has no open_clip_model.safetensors
    in that repository, its open_clip_pytorch_model.bin (open_clip's own order: safetensors first)."""
    try:
        return url, hub_sha256(url, label)
    except _NotOnHub:
        if not url.endswith("/" + SAFETENSORS_NAME):
            raise
    other = url[: -len(SAFETENSORS_NAME)] + PICKLE_NAME
    return other, hub_sha256(other, label)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _open_response(url: str, offset: int, label: str, part: Path):
    headers = {"User-Agent": "cliplab", **({"Range": f"bytes={offset}-"} if offset else {})}
    kept = f" The partial file {part} is kept for a resume." if offset else ""
    try:
        return urlopen(Request(url, headers=headers), timeout=TIMEOUT_S)
    except HTTPError as error:
        if error.code == 416 and offset:
            return None  # the part already holds the whole file
        if error.code == 404:
            raise CliplabError(f"{label} was not found at {url} (HTTP 404). If you set CLIPLAB_DOWNLOAD_BASE, "
                               f"check that the mirror holds this file.{kept}") from error
        raise CliplabError(f"The server refused the download of {label} from {url} "
                           f"(HTTP {error.code} {error.reason}). Try again later.{kept}") from error
    except (URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise CliplabError(f"Cannot reach {url} to download {label} ({reason}). Check the internet "
                           f"connection, then run the download again.{kept}") from error


def _copy_stream(response, f, advance: Callable[[int], None]) -> None:
    while True:
        try:
            chunk = response.read(CHUNK)
        except (OSError, http.client.HTTPException) as error:
            raise _Interrupted(str(error) or type(error).__name__) from error
        if not chunk:
            return
        f.write(chunk)  # a disk error propagates as OSError, told apart from network errors above
        advance(len(chunk))


def fetch(url: str, target: Path, sha256: str, label: str, progress: bool = True,
          on_progress: Progress | None = None) -> Path:
    """Download url to target: resumable, verified, renamed into place only when complete."""
    report = on_progress or (lambda done, total, label, stage: None)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    response = _open_response(url, offset, label, part)
    if response is not None:
        with response:
            if response.status != 206:
                offset = 0  # the server ignored the Range header: start over
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            if total is not None:
                free = shutil.disk_usage(target.parent).free
                if free < total - offset:
                    raise CliplabError(f"Not enough disk space for {label}: it needs {_mb(total - offset)} more "
                                       f"in {target.parent}, which has {_mb(free)} free. Free some space or set "
                                       "CLIPLAB_HOME to a folder on a larger disk.")
            done = offset
            report(done, total, label, "downloading")

            def advance(n: int) -> None:
                nonlocal done
                done += n
                bar.update(n)
                report(done, total, label, "downloading")

            try:
                with open(part, "ab" if offset else "wb") as f, tqdm(
                        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=f"downloading {label}", disable=not progress) as bar:
                    _copy_stream(response, f, advance)
            except _Interrupted as error:
                raise CliplabError(
                    f"The download of {label} was interrupted after {_mb(part.stat().st_size)}"
                    f"{f' of {_mb(total)}' if total else ''} ({error}). Run the same download again to resume: "
                    f"the partial file {part} is kept.") from error
            except OSError as error:
                part.unlink(missing_ok=True)
                if error.errno == errno.ENOSPC:
                    raise CliplabError(f"The disk is full: {label} could not be written to {target.parent}, and "
                                       "the partial file was removed. Free some space or set CLIPLAB_HOME to a "
                                       "folder on a larger disk, then download again.") from error
                raise CliplabError(f"Cannot write {label} to {part} ({error}); the partial file was removed.") \
                    from error
            if total is not None and part.stat().st_size < total:
                raise CliplabError(f"The connection closed after {_mb(part.stat().st_size)} of {_mb(total)} of "
                                   f"{label}. Run the same download again to resume: the partial file {part} "
                                   "is kept.")
    size = part.stat().st_size
    report(size, size, label, "verifying")
    actual = git_blob_sha1(part) if sha256.startswith("git:") else weights.sha256_file(part)
    if not actual.startswith(sha256) or len(sha256) < 8:  # a prefix only where open_clip publishes only that
        part.unlink(missing_ok=True)
        raise CliplabError(f"The downloaded {label} is corrupt or not the expected file: its SHA-256 is "
                           f"{actual[:16]}..., expected {sha256[:16]}.... It was deleted; download it again "
                           "(if this repeats, the server or a proxy is altering the file).")
    os.replace(part, target)
    return target


def git_blob_sha1(path: Path) -> str:
    """"git:" + the git blob id of a file (what the hub reports as the ETag of a file kept in git)."""
    import hashlib
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    digest.update(path.read_bytes())
    return "git:" + digest.hexdigest()


def _installed_vocab() -> Path | None:
    """The official merges file inside an installed open_clip, located without importing it."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / VOCAB_NAME
        if path.is_file() and weights.sha256_file(path) == VOCAB_SHA256:
            return path
    return None


def download_vocab(root: str | Path | None = None, progress: bool = True, base_url: str | None = None,
                   on_progress: Progress | None = None) -> Path:
    """The official BPE merges file in the models folder: copied from open_clip if installed, else downloaded."""
    target = Path(root or models_dir()) / VOCAB_NAME
    if target.is_file() and weights.sha256_file(target) == VOCAB_SHA256:
        return target
    installed = _installed_vocab()
    if installed is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(target.name + ".tmp")
        shutil.copyfile(installed, temp)
        os.replace(temp, target)
        return target
    return fetch(vocab_url(base_url), target, VOCAB_SHA256, "the CLIP vocabulary", progress, on_progress)


def convert_official(archive: Path, folder: Path, name: str, merges: Path | None) -> Path:
    """The official TorchScript archive to our format. The releases store most weights in fp16; they
    are widened to fp32 here once (exactly), because widening 150M values at every load costs ~3 s on
    an AVX2 CPU, while reading the larger file costs ~0.1 s."""
    model = weights.model_from_checkpoint(weights.read_checkpoint(archive))  # refuses an archive that does not fit
    meta = {"name": name, "description": f"OpenAI's released CLIP {name} (Radford et al. 2021).",
            "source_sha256": weights.OFFICIAL_SHA256[name]}
    return weights.save_model(model, folder, merges, meta)


def convert_release(file: Path, folder: Path, entry: Release, merges: Path | None, sha256: str,
                    tokenizer: Path | None = None) -> Path:
    """A hub release's weights file to our format, with the table's architecture and preprocessing, and
    the Hugging Face tokenizer's folder for a text tower that reads one (checked against the weights)."""
    checkpoint = weights.read_checkpoint(file, arch=entry.arch)
    model = weights.model_from_checkpoint(checkpoint)
    if tokenizer is not None:
        checkpoint.tokenizer_path = tokenizer
        weights.checkpoint_tokenizer(checkpoint, model.context_length)  # refuses one that does not fit
    meta = {"name": entry.name, "description": f"{entry.family} CLIP {entry.arch} trained on {entry.data}"
                                               f" ({entry.open_clip or entry.url}).",
            "source_url": entry.url, "source_sha256": sha256, "architecture": entry.arch,
            "preprocess": dict(entry.preprocess)}
    return weights.save_model(model, folder, None if tokenizer is not None else merges, meta, tokenizer)


def download_tokenizer(entry: Release, downloads: Path, progress: bool = True,
                       on_progress: Progress | None = None) -> Path:
    """A release's Hugging Face tokenizer as a folder transformers reads offline: the tokenizer.json from
    the hub (verified by the hash the hub reports) and a tokenizer_config.json naming its class, as
    transformers resolves it for that repository (e.g. XLMRobertaTokenizer for facebook/xlm-v-base)."""
    spec = entry.tokenizer or {}
    label = f"the tokenizer of {entry.name}"
    url = _mirrored(spec["url"])
    folder = downloads / f"{slug(entry.name)}-tokenizer"
    target = folder / "tokenizer.json"
    if not target.is_file():
        fetch(url, target, spec.get("sha256") or hub_sha256(url, label), label, progress, on_progress)
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": spec["tokenizer_class"]}) + "\n")
    return folder


def download(name: str, root: str | Path | None = None, progress: bool = True, base_url: str | None = None,
             on_progress: Progress | None = None) -> Path:
    """Download a release (or "vocab") once; returns its converted folder (or the vocabulary file)."""
    if name == "vocab":
        return download_vocab(root, progress, base_url, on_progress)
    entry = release(name)
    name = entry.name
    folder = model_folder(name, root)
    if is_downloaded(name, root):
        return folder
    if entry.is_folder:
        return download_folder(entry, folder, progress, on_progress)
    merges = download_vocab(root, progress, base_url, on_progress)
    downloads = Path(root or models_dir()) / "downloads"
    tokenizer = download_tokenizer(entry, downloads, progress, on_progress) if entry.tokenizer else None
    archive, sha256 = _fetch_weights(entry, downloads, base_url, progress, on_progress)
    if on_progress is not None:
        size = archive.stat().st_size
        on_progress(size, size, name, "converting")
    if entry.is_openai:
        convert_official(archive, folder, name, merges)
    else:
        convert_release(archive, folder, entry, merges, sha256, tokenizer)
    archive.unlink()
    archive.with_name(archive.name + ".sha256").unlink(missing_ok=True)
    if tokenizer is not None:
        shutil.rmtree(tokenizer, ignore_errors=True)
    return folder


def _fetch_weights(entry: Release, downloads: Path, base_url: str | None, progress: bool,
                   on_progress: Progress | None) -> tuple[Path, str]:
    """The release's weights file, verified, and its full SHA-256; a verified file is kept (with its hash
    beside it) until conversion succeeds."""
    name = entry.name
    for kept in downloads.glob(f"{slug(name)}.*.sha256") if downloads.is_dir() else ():
        archive = kept.with_name(kept.name.removesuffix(".sha256"))
        if archive.is_file():
            return archive, kept.read_text().strip()
    url = model_url(name, base_url)
    sha256 = weights.OFFICIAL_SHA256[name] if entry.is_openai else entry.sha256
    if sha256 is None:
        url, sha256 = hub_file(url, name)
    archive = downloads / f"{slug(name)}{'.pt' if entry.is_openai else Path(url).suffix}"
    fetch(url, archive, sha256, name, progress, on_progress)
    if len(sha256) < 64:  # pinned by a prefix: record the whole hash
        sha256 = weights.sha256_file(archive)
    archive.with_name(archive.name + ".sha256").write_text(sha256 + "\n")
    return archive, sha256


def _hub_url(url: str) -> str:
    endpoint = os.environ.get("HF_ENDPOINT")
    return f"{endpoint.rstrip('/')}{url[len(HUB):]}" if endpoint and url.startswith(HUB) else url


def pairing_record(entry: Release) -> list[dict]:
    """The image releases a text tower pairs with, by name and, where the table pins it, the SHA-256 of the
    released file (what a downloaded model records as source_sha256)."""
    table = releases()
    out = []
    for image in entry.pairs_with:
        pinned = weights.OFFICIAL_SHA256.get(image) or (table[image].sha256 if image in table else None)
        out.append({"name": image, **({"sha256": pinned} if pinned else {})})
    return out


def download_folder(entry: Release, folder: Path, progress: bool = True, on_progress: Progress | None = None) -> Path:
    """A release kept as its Hugging Face folder: every file fetched as `fetch` does (resumable, verified by
    the hash the hub reports: the LFS SHA-256, or the git blob id of a small file kept in git), then the
    release record written last (RELEASE_FILE: name, kind, pairing, languages), which marks it complete; an
    open_clip CLIP also gets its open_clip_config.json from the table."""
    for target, url in entry.files.items():
        path = folder / target
        if path.is_file():  # verified by an earlier, interrupted run (fetch renames only verified files)
            continue
        url = _hub_url(url)
        label = f"{entry.name} ({target})"
        fetch(url, path, hub_sha256(url, label, git_blob=True), label, progress, on_progress)
    if entry.model_cfg:
        replace_atomically(folder / OPEN_CLIP_CONFIG, lambda p: p.write_text(json.dumps(
            {"model_cfg": entry.model_cfg, "preprocess_cfg": dict(entry.preprocess)}, indent=1)))
    record = {"name": entry.name, "kind": entry.kind, "languages": entry.languages, "source": entry.url,
              "pairs_with": pairing_record(entry)}
    replace_atomically(folder / RELEASE_FILE, lambda p: p.write_text(json.dumps(record, indent=1)))
    return folder
