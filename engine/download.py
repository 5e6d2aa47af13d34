"""Downloading OpenAI's released CLIP weights and vocabulary, only when the user asks.

Each file is streamed to a `.part` file with a progress bar, resumed with an HTTP Range request
after a cut connection, verified by SHA-256, and renamed into the cache only when complete; an
`on_progress` callback follows the same steps for callers without a terminal (the app's Models tab).
A model is then converted once to our safetensors format (one folder per model, with its own
vocabulary), so later loads never run the TorchScript archive again. Set CLIPLAB_DOWNLOAD_BASE
(or pass base_url) to fetch from a mirror: models at BASE/<sha256>/<file>.pt, the vocabulary at
BASE/bpe_simple_vocab_16e6.txt.gz.
"""

from __future__ import annotations

import errno
import http.client
import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm.auto import tqdm

from engine import weights
from engine.errors import CliplabError
from engine.paths import models_dir

DEFAULT_BASE = "https://openaipublic.azureedge.net/clip/models"
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


def slug(name: str) -> str:
    """The release file's stem for an architecture name: ViT-L/14@336px -> ViT-L-14-336px."""
    return name.replace("/", "-").replace("@", "-")


def resolve_name(name: str) -> str:
    """An official architecture name from either spelling (ViT-B/32 or ViT-B-32)."""
    for official in weights.OFFICIAL_SHA256:
        if name in (official, slug(official)):
            return official
    raise CliplabError(f"Unknown model {name!r}. The official models are: {', '.join(weights.OFFICIAL_SHA256)} "
                       "(`cliplab models` lists them).")


def model_folder(name: str, root: str | Path | None = None) -> Path:
    return Path(root or models_dir()) / slug(resolve_name(name))


def is_downloaded(name: str, root: str | Path | None = None) -> bool:
    folder = model_folder(name, root)
    return (folder / weights.WEIGHTS_FILE).is_file() and (folder / weights.CONFIG_FILE).is_file()


def _base(base_url: str | None) -> str | None:
    base = base_url or os.environ.get("CLIPLAB_DOWNLOAD_BASE")
    return base.rstrip("/") if base else None


def model_url(name: str, base_url: str | None = None) -> str:
    name = resolve_name(name)
    return f"{_base(base_url) or DEFAULT_BASE}/{weights.OFFICIAL_SHA256[name]}/{slug(name)}.pt"


def vocab_url(base_url: str | None = None) -> str:
    base = _base(base_url)
    return f"{base}/{VOCAB_NAME}" if base else VOCAB_URL


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
    actual = weights.sha256_file(part)
    if actual != sha256:
        part.unlink(missing_ok=True)
        raise CliplabError(f"The downloaded {label} is corrupt or not the expected file: its SHA-256 is "
                           f"{actual[:16]}..., expected {sha256[:16]}.... It was deleted; download it again "
                           "(if this repeats, the server or a proxy is altering the file).")
    os.replace(part, target)
    return target


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


def download(name: str, root: str | Path | None = None, progress: bool = True, base_url: str | None = None,
             on_progress: Progress | None = None) -> Path:
    """Download an official model (or "vocab") once; returns its converted folder (or the vocabulary file)."""
    if name == "vocab":
        return download_vocab(root, progress, base_url, on_progress)
    name = resolve_name(name)
    folder = model_folder(name, root)
    if is_downloaded(name, root):
        return folder
    merges = download_vocab(root, progress, base_url, on_progress)
    archive = Path(root or models_dir()) / "downloads" / f"{slug(name)}.pt"
    if not archive.is_file():  # a verified archive is kept until conversion succeeds
        fetch(model_url(name, base_url), archive, weights.OFFICIAL_SHA256[name], name, progress, on_progress)
    if on_progress is not None:
        size = archive.stat().st_size
        on_progress(size, size, name, "converting")
    convert_official(archive, folder, name, merges)
    archive.unlink()
    return folder
