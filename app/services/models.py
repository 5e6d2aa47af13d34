"""Which models exist, which are on disk, and fetching them: behind `cliplab models` / `cliplab download`
and the app's model picker, where a download runs as a background job that reports its bytes.
The rows are the release table (assets/models.json): size, published ImageNet top-1, downloaded or not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open

from cliplab.engine import download
from cliplab.engine.api import DEMO, demo_folder
from cliplab.engine.config import named_architectures
from cliplab.engine.errors import CliplabError
from cliplab.engine.precision import EXACT
from cliplab.engine.weights import CONFIG_FILE, WEIGHTS_FILE, load_model, save_model

if TYPE_CHECKING:  # the CLI lists and downloads without loading the app's catalog and job machinery
    from cliplab.app.services.app_state import AppState, Job, Jobs

# Parameter counts of the nine architectures, so listing builds no model (tests/test_weights.py checks them).
PARAMS = {
    "RN50": 102_007_137, "RN101": 119_688_033, "RN50x4": 178_300_601, "RN50x16": 290_979_217,
    "RN50x64": 623_258_305, "ViT-B/32": 151_277_313, "ViT-B/16": 149_620_737, "ViT-L/14": 427_616_513,
    "ViT-L/14@336px": 427_944_193,
}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _stored_params(weights_file: Path) -> int:
    """Parameters in a safetensors file, from its header (BatchNorm statistics are buffers, not counted)."""
    total = 0
    with safe_open(str(weights_file), "pt") as f:
        for key in f.keys():
            if "running_" not in key and not key.endswith("num_batches_tracked"):
                count = 1
                for dim in f.get_slice(key).get_shape():
                    count *= dim
                total += count
    return total


def _demo_row() -> dict:
    folder = demo_folder()
    row = dict(name=DEMO, family="cliplab", data="synthetic", arch=None, embed_dim=None, resolution=None, params=None,
               imagenet_top1=None, download_bytes=None, url=None, downloaded=False, size_bytes=None,
               description="a small CLIP trained on cliplab's synthetic world; not built in this installation")
    if (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file():
        config = json.loads((folder / CONFIG_FILE).read_text())
        row.update(embed_dim=config["embed_dim"], resolution=config["image_resolution"], downloaded=True,
                   params=_stored_params(folder / WEIGHTS_FILE), size_bytes=_folder_bytes(folder),
                   description=config.get("description") or row["description"])
    return row


def list_models() -> list[dict]:
    """One row per release (OpenAI's nine, then the open_clip releases), then the demo model."""
    rows = []
    for name, entry in download.releases().items():
        if entry.is_folder:
            rows.append(_folder_row(name, entry))
            continue
        config = named_architectures()[entry.arch]
        on_disk = download.is_downloaded(name)
        rows.append(dict(name=name, family=entry.family, data=entry.data, arch=entry.arch,
                         embed_dim=config.embed_dim, resolution=config.image_resolution,
                         params=PARAMS.get(name, round(entry.params_m * 1e6)), imagenet_top1=entry.imagenet_top1,
                         download_bytes=entry.size_mb * 1_000_000, downloaded=on_disk,
                         size_bytes=_folder_bytes(download.model_folder(name)) if on_disk else None,
                         url=entry.url, description=f"{entry.family} CLIP {entry.arch} trained on {entry.data}"))
    rows.append(_demo_row())
    return rows


def _folder_row(name: str, entry: download.Release) -> dict:
    """A release kept as its published folder: a multilingual text tower (what it pairs with) or an open_clip
    CLIP with a Hugging Face text tower; with the languages and the published multilingual figures."""
    on_disk = download.is_downloaded(name)
    vision = (entry.model_cfg or {}).get("vision_cfg") or {}
    what = (f"{entry.family} multilingual text tower ({entry.arch}) for {', '.join(entry.pairs_with)}"
            if entry.kind == "text-tower" else f"{entry.family} multilingual CLIP ({entry.arch}) trained on {entry.data}")
    return dict(name=name, family=entry.family, data=entry.data, arch=entry.arch, embed_dim=entry.embed_dim,
                resolution=vision.get("image_size"), params=round(entry.params_m * 1e6),
                imagenet_top1=entry.imagenet_top1, download_bytes=entry.size_mb * 1_000_000, downloaded=on_disk,
                size_bytes=_folder_bytes(download.model_folder(name)) if on_disk else None, url=entry.url,
                description=what, kind=entry.kind, pairs_with=list(entry.pairs_with), languages=entry.languages,
                retrieval=dict(entry.retrieval))


def text_towers_for(image_name: str) -> list[str]:
    """The text towers of the release table made for an image release (by name), e.g. the M-CLIP towers of
    ViT-B/32: what the app offers beside a library indexed with it."""
    return [name for name, entry in download.releases().items()
            if entry.kind == "text-tower" and any(download.slug(image_name) == download.slug(pair)
                                                  for pair in entry.pairs_with)]


def fitting_text_towers(image_name: str) -> tuple[list[str], str]:
    """The downloaded text towers made for an image model (by its release name), and a sentence for the
    page: which fit, or which could be downloaded when none is on disk."""
    names = text_towers_for(image_name)
    ready = [name for name in names if download.is_downloaded(name)]
    if ready:
        return ready, (f"Text towers made for {image_name}: {', '.join(ready)}. They search its library in other "
                       "languages without re-embedding a photo.")
    if names:
        return [], (f"No multilingual text tower for {image_name} is downloaded; download {' or '.join(names)} in "
                    "the Models tab to search and classify in other languages.")
    return [], (f"No multilingual text tower in the release table was made for {image_name}; texts go through its "
                "own text tower (a text tower's folder can still be named, and is checked against the model).")


def import_checkpoint(path: str | Path, arch: str | None = None, allow_torchscript: bool = False,
                      name: str | None = None) -> Path:
    """Convert a checkpoint once into cliplab's format under the models folder (imported/NAME), so its
    architecture and preprocessing travel with it and a TorchScript archive never runs again."""
    from cliplab.engine.paths import models_dir

    model, checkpoint = load_model(path, allow_torchscript=allow_torchscript, arch=arch)
    name = download.slug(name or model.name)
    meta = {"name": name, "description": f"converted from {Path(path).expanduser()} ({checkpoint.format}; "
                                         f"architecture from {checkpoint.config_source})"}
    return save_model(model, models_dir() / "imported" / name, checkpoint.merges_path, meta,
                      tokenizer_path=checkpoint.tokenizer_path)


def architecture_names() -> list[str]:
    """Every name --arch (and the Models tab's architecture choice) accepts, besides 'gelu' / 'quickgelu'."""
    return list(named_architectures())


def download_models(names: list[str], progress: bool = True, base_url: str | None = None,
                    on_progress: download.Progress | None = None) -> list[Path]:
    """Fetch releases ("all" = OpenAI's nine) or the vocabulary ("vocab"); each is verified and converted."""
    expanded = []
    for name in names:
        expanded += [n for n, r in download.releases().items() if r.is_openai] if name == "all" else [name]
    for name in expanded:  # unknown names fail before anything is fetched
        if name != "vocab":
            download.resolve_name(name)
    return [download.download(name, progress=progress, base_url=base_url, on_progress=on_progress)
            for name in dict.fromkeys(expanded)]


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}" if n < 10e6 else f"{n / 1e6:.0f}"


def progress_message(done: int, total: int | None, label: str, stage: str) -> str:
    """One line for a download step: "downloading ViT-B/32: 123 / 338 MB (36%)", "verifying ViT-B/32 ..."."""
    if stage == "verifying":
        return f"verifying {label} (SHA-256 of {_mb(done)} MB)"
    if stage == "converting":
        return f"converting {label} to cliplab's format"
    if not total:
        return f"downloading {label}: {_mb(done)} MB"
    return f"downloading {label}: {_mb(done)} / {_mb(total)} MB ({100 * done // total}%)"  # 100% only when complete


def report_to(job: Job) -> download.Progress:
    """A download callback that moves a job's progress with the bytes of the file being fetched."""
    def report(done: int, total: int | None, label: str, stage: str) -> None:
        fraction = None  # an unknown size keeps the bar where it is
        if stage != "downloading":
            fraction = 1.0
        elif total:
            fraction = done / total
        text = progress_message(done, total, label, stage)
        job.update(fraction, text if text != job.message else None)  # the log gets each new line once
    return report


def start_download(jobs: Jobs, name: str, base_url: str | None = None) -> Job:
    """Download, verify and convert a released model in a background "download" job; its progress and
    message follow the bytes, and a failure leaves the job's error as the sentence that says what to do."""
    if not name or name == DEMO:
        raise CliplabError("The demo model ships with cliplab; pick one of the released models to download.")
    name = download.resolve_name(name)  # an unknown name fails here, before a job starts
    return jobs.start("download", f"downloading {name}", lambda job: download_models(
        [name], progress=False, base_url=base_url, on_progress=report_to(job))[0])


def reindex_library(state: AppState) -> None:
    """Embed the library with the new current model in the background, so Search and Map work with it."""
    # imported here: the CLI imports this module without the catalog's machinery
    from cliplab.app.services import library

    roots, last = state.library_roots(), state.jobs.latest("index")
    if roots and (last is None or last.finished):
        bundle = state.search_bundle
        state.jobs.start("index", f"indexing the library with {state.model_name}",
                         lambda job: library.add_folders(state.catalog, bundle, roots, job=job, confirm_system=True))


def load_checkpoint(state: AppState, path: str, arch: str | None, allow_torchscript: bool) -> str:
    """Load a local checkpoint; with an architecture or the TorchScript opt-in it is converted once to
    cliplab's format (so the choice travels with it), then loaded. arch None: the file must say
    its architecture. Returns what was loaded."""
    if arch is None and not allow_torchscript:
        state.switch_model(path)
        return path
    folder = import_checkpoint(path, arch=arch, allow_torchscript=allow_torchscript)
    state.switch_model(str(folder))
    return str(folder)


def running_lines(state: AppState) -> list[str]:
    """How the current model computes here: exact fp32 for every result meant to be reproduced, and
    for indexing and search the mode the library was indexed in, else the measured choice, else what
    happens on first use. Reads only: no measurement is started and no model row is written."""
    from cliplab.engine.runtime import cached_choice

    bundle = state.bundle
    lines = [f"Classifications, audits, evaluations and saved classifiers: {EXACT} (exact, PyTorch), "
             "recorded with each result."]
    recorded = state.catalog.recorded_mode(bundle.fingerprint)
    choice = cached_choice(bundle.model)
    if recorded:
        lines.append(f"Indexing and search: {recorded}, the mode this library was indexed in (queries are "
                     "embedded the same way).")
    elif choice is not None:
        lines.append(f"Indexing and search: {choice.mode} ({choice.reason}).")
    else:
        lines.append("Indexing and search: the fastest safe mode, measured on this machine the first time the "
                     "library is indexed with this model.")
    return lines


def machine_line(info: dict | None = None) -> str:
    """'CPU <features>, <n> threads, ONNX Runtime <version>[, CUDA]' (engine.runtime.describe)."""
    from cliplab.engine.runtime import describe

    info = info or describe()
    onnx = f"ONNX Runtime {info['onnxruntime']}" if info["onnxruntime"] else "no ONNX Runtime (PyTorch only)"
    return f"CPU {info['cpu']}, {info['threads']} threads, {onnx}{', CUDA' if info['cuda'] else ''}"


KERNEL_NAMES = {"blas": "PyTorch's BLAS (MKL)", "onednn": "oneDNN"}


def kernels_line(info: dict | None = None) -> str:
    """Which kernel library the exact fp32 mode's matrix products run through here, and why."""
    from cliplab.engine.runtime import describe

    kernels = (info or describe())["fp32_kernels"]
    if kernels is None:
        return "measured on this machine on first use (PyTorch's BLAS or oneDNN, whichever is faster)"
    return f"{KERNEL_NAMES[kernels['kernels']]} ({kernels['reason']})"


def inference_lines() -> list[str]:
    """What runs on this machine and why: CPU features, ONNX Runtime, the policy, each model's
    measured mode (engine.runtime.describe), as lines for a terminal or a page."""
    from cliplab.engine.runtime import MODE_ENV, describe

    info = describe()
    lines = [f"\ninference: {machine_line(info)}",
             f"  audits, evaluations, saved classifications: {info['reproducible']} (exact, PyTorch)",
             f"  fp32 matrix kernels: {kernels_line(info)}"]
    if info["forced"]:
        lines.append(f"  indexing and search: {info['forced']} (set by {MODE_ENV})")
    elif not info["choices"]:
        lines.append("  indexing and search: the fastest safe mode, measured on first use per model")
    lines += [f"  indexing and search with {choice.model or 'a model'}: {choice.mode} ({choice.reason})"
              for choice in info["choices"]]
    return lines
