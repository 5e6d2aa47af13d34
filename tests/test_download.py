"""Downloads against a local HTTP server serving files made in the test: success with hash check and
conversion, resume after a cut connection, wrong hash, 404, unreachable server, full disk, and the
progress callback that the app's download job reports through."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from test_weights import assert_same_outputs, tiny, torchscript_archive

from cliplab import engine
from cliplab.engine import download, weights
from cliplab.engine.errors import CliplabError
from cliplab.engine.images import Preprocess
from cliplab.engine.model import CLIP
from cliplab.engine.paths import models_dir
from cliplab.engine.tokenizer import official_merges_path

NAME = "RN50"  # any official name: its hash is pointed at the archive made here


class Handler(BaseHTTPRequestHandler):
    """Serves server.files with Range support; with server.cut, sends half the body and hangs up; with
    server.gate (an Event), sends half the body and the rest only once the gate is set."""

    def _hub_redirect(self) -> bool:
        """The hub's resolve URL: a 302 to the file's storage, carrying the LFS sha256 as X-Linked-ETag."""
        hub = self.server.hub.get(self.path)
        if hub is None:
            return False
        location, sha256 = hub
        self.send_response(302)
        self.send_header("Location", location)
        if sha256:
            self.send_header("X-Linked-ETag", f'"{sha256}"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def do_HEAD(self) -> None:
        self.server.requests.append((self.path, "HEAD"))
        if not self._hub_redirect():
            self.send_error(404)

    def do_GET(self) -> None:
        server = self.server
        if self._hub_redirect():
            return
        asked = self.headers.get("Range")
        server.requests.append((self.path, asked))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = int(asked.removeprefix("bytes=").split("-")[0]) if asked else 0
        if start >= len(data):
            self.send_error(416)
            return
        body = data[start:]
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if server.gate is not None:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            server.gate.wait(30)
            body = body[len(body) // 2:]
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-body is what some tests do (a cancelled download): not an error."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def server():
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.requests, httpd.cut, httpd.gate, httpd.hub = {}, [], False, None, {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def release(tmp_path, monkeypatch, server):
    """A tiny official-style TorchScript archive served where NAME's release would be."""
    model = tiny()
    data = torchscript_archive(model, tmp_path / "release.pt").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(weights.OFFICIAL_SHA256, NAME, digest)
    server.files[f"/{digest}/{NAME}.pt"] = data
    return model, data


def files_in_cache() -> list[str]:
    return sorted(str(p.relative_to(models_dir())) for p in models_dir().rglob("*") if p.is_file())


def test_download_verifies_converts_and_loads(server, release, monkeypatch):
    model, _ = release
    monkeypatch.setenv("CLIPLAB_DOWNLOAD_BASE", server.base)
    folder = download.download(NAME, progress=False)
    assert folder == models_dir() / NAME
    cached = files_in_cache()
    assert f"{NAME}/model.safetensors" in cached and f"{NAME}/config.json" in cached
    assert not [f for f in cached if f.endswith((".part", ".pt", ".tmp"))]  # the archive is gone after conversion
    assert (folder / "bpe.txt.gz").read_bytes() == official_merges_path().read_bytes()
    loaded, _, tokenizer = engine.load(NAME, device="cpu")
    assert loaded.name == NAME and tokenizer.vocab_size == 49408
    assert_same_outputs(model, loaded)
    assert engine.available_models()[NAME]
    # Loading the converted copy never runs the archive again; a second download is a no-op.
    assert weights.read_checkpoint(folder).format == "cliplab"
    requests = len(server.requests)
    assert download.download(NAME, progress=False) == folder
    assert len(server.requests) == requests


def test_resume_after_a_cut_connection(server, release):
    _, data = release
    server.cut = True
    with pytest.raises(CliplabError, match="(interrupted|closed).*again to resume") as info:
        download.download(NAME, progress=False, base_url=server.base)
    part = models_dir() / "downloads" / f"{NAME}.pt.part"
    assert str(part) in str(info.value)
    # Kept for the resume, never under the final name (the vocabulary was copied from open_clip first).
    assert files_in_cache() == ["bpe_simple_vocab_16e6.txt.gz", f"downloads/{NAME}.pt.part"]
    assert part.stat().st_size == len(data) // 2
    server.cut = False
    folder = download.download(NAME, progress=False, base_url=server.base)
    assert server.requests[-1][1] == f"bytes={len(data) // 2}-"  # only the missing half was fetched
    assert (folder / "model.safetensors").is_file() and not part.exists()


def test_wrong_hash_deletes_the_file(server, release):
    _, data = release
    digest = weights.OFFICIAL_SHA256[NAME]
    server.files[f"/{digest}/{NAME}.pt"] = data[:-10] + b"x" * 10  # same size, altered content
    with pytest.raises(CliplabError, match="SHA-256 .* deleted"):
        download.download(NAME, progress=False, base_url=server.base)
    assert files_in_cache() == ["bpe_simple_vocab_16e6.txt.gz"]


def test_not_found_and_unreachable(server):
    with pytest.raises(CliplabError, match="HTTP 404"):
        download.download("ViT-B/32", progress=False, base_url=server.base)
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(CliplabError, match="Cannot reach"):
        download.download("ViT-B/16", progress=False, base_url=f"http://127.0.0.1:{closed}")
    assert files_in_cache() == ["bpe_simple_vocab_16e6.txt.gz"]


class FullDisk(io.FileIO):
    """A stand-in for a full disk (a real one cannot be made here): the first write fails with
    ENOSPC, as write(2) does when the file system has no free block left."""

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_leaves_no_half_file(server, release, monkeypatch):
    real_open = open

    def open_on_full_disk(path, mode="r", *args, **kwargs):
        if str(path).endswith(".part"):
            return FullDisk(path, mode.replace("b", ""))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(download, "open", open_on_full_disk, raising=False)
    with pytest.raises(CliplabError, match="disk is full"):
        download.download(NAME, progress=False, base_url=server.base)
    assert files_in_cache() == ["bpe_simple_vocab_16e6.txt.gz"]


def test_vocabulary_download_when_open_clip_is_absent(server, monkeypatch):
    vocab = official_merges_path().read_bytes()
    monkeypatch.setattr(download, "_installed_vocab", lambda: None)
    server.files[f"/{download.VOCAB_NAME}"] = b"not the vocabulary"
    with pytest.raises(CliplabError, match="SHA-256"):
        download.download("vocab", progress=False, base_url=server.base)
    server.files[f"/{download.VOCAB_NAME}"] = vocab
    path = download.download("vocab", progress=False, base_url=server.base)
    assert path == models_dir() / download.VOCAB_NAME and path.read_bytes() == vocab
    assert official_merges_path() == path


def test_names_and_urls():
    assert download.model_url("ViT-L/14@336px") == (
        "https://openaipublic.azureedge.net/clip/models/"
        "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt")
    assert download.resolve_name("ViT-B-32") == "ViT-B/32"
    assert download.vocab_url() == "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz"
    with pytest.raises(CliplabError, match="Unknown model 'ViT-H/14'"):
        download.download("ViT-H/14", progress=False)
    assert Path(download.model_folder("RN50x4")).name == "RN50x4"


def test_downloaded_fp16_tensors_are_widened_once(server, tmp_path, monkeypatch):
    """The releases store most weights in fp16: the converted copy holds them exactly, as fp32."""
    model = tiny()
    half = tiny()
    engine.model.convert_weights(half, torch.float16)
    data = torchscript_archive(half, tmp_path / "half.pt").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(weights.OFFICIAL_SHA256, NAME, digest)
    server.files[f"/{digest}/{NAME}.pt"] = data
    folder = download.download(NAME, progress=False, base_url=server.base)
    stored = weights.read_checkpoint(folder).state_dict
    assert stored["visual.conv1.weight"].dtype == torch.float32
    torch.testing.assert_close(stored["visual.conv1.weight"], model.visual.conv1.weight.half().float(),
                               rtol=0, atol=0)
    loaded, _, _ = engine.load(NAME, device="cpu")
    assert loaded.dtype == torch.float32


def test_cli_download_then_models(server, release, capsys):
    from cliplab.app.cli import main

    assert main(["download", "ViT-Q/1"]) == 2
    assert "Unknown model 'ViT-Q/1'" in capsys.readouterr().err
    assert main(["download", NAME, "--base-url", server.base, "--quiet"]) == 0
    assert f"ready: {models_dir() / NAME}" in capsys.readouterr().out
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line.split() for line in lines if line.startswith(f"{NAME} "))
    assert row[:5] == [NAME, "1024", "224", "102.0M", "yes"]  # the listing shows the architecture's facts
    assert next(line.split() for line in lines if line.startswith("ViT-B/32 "))[4] == "no"


def test_progress_callback_follows_the_bytes(server, release):
    _, data = release
    calls = []
    download.download(NAME, progress=False, base_url=server.base, on_progress=lambda *call: calls.append(call))
    fetched = [(done, total) for done, total, _, stage in calls if stage == "downloading"]
    assert {label for _, _, label, _ in calls} == {NAME}  # the vocabulary came from open_clip, not the server
    assert fetched[0] == (0, len(data)) and fetched[-1] == (len(data), len(data))
    done = [d for d, _ in fetched]
    assert len(done) > 3 and all(a < b for a, b in zip(done, done[1:]))  # one call per 1 MB chunk, growing
    assert calls[len(fetched):] == [(len(data), len(data), NAME, "verifying"),
                                    (len(data), len(data), NAME, "converting")]


def test_progress_of_a_resume_starts_from_the_kept_bytes(server, release):
    _, data = release
    server.cut = True
    with pytest.raises(CliplabError, match="again to resume"):
        download.download(NAME, progress=False, base_url=server.base)
    server.cut = False
    calls = []
    download.download(NAME, progress=False, base_url=server.base, on_progress=lambda *call: calls.append(call))
    assert calls[0] == (len(data) // 2, len(data), NAME, "downloading")
    assert (len(data), len(data), NAME, "verifying") in calls


# --- Releases by name: the table, and hub downloads verified by the hash the hub reports ---------------

def test_every_release_builds_and_its_table_figures_fit():
    from cliplab.app.services.models import PARAMS

    built = {}
    for name, entry in download.releases().items():
        if entry.is_folder:  # multilingual releases kept as their folders: tests/test_multilingual_download.py
            continue
        if entry.arch not in built:  # each architecture once: 74 releases share about 20
            with torch.device("meta"):  # shapes only: cheap even for ViT-bigG-14
                built[entry.arch] = CLIP.from_name(entry.arch)
        model = built[entry.arch]
        params = sum(p.numel() for n, p in model.named_parameters() if n != "logit_bias")
        assert abs(params / 1e6 - entry.params_m) < 0.01 * entry.params_m, name
        assert (entry.imagenet_top1 is None or 0 < entry.imagenet_top1 < 100) and entry.size_mb > 0, name
        if entry.is_openai:
            assert PARAMS[name] == params and entry.sha256 == weights.OFFICIAL_SHA256[name]
        elif entry.sha256 is None:  # else pinned (a file outside the hub: tests/test_release_table.py)
            assert entry.url.startswith("https://huggingface.co/") and "/resolve/main/open_clip_" in entry.url, name
        Preprocess(model.image_resolution, **entry.preprocess)  # the preprocessing is one cliplab applies
    families = {entry.family for entry in download.releases().values()}
    assert {"OpenAI", "LAION", "DataComp", "MetaCLIP", "DFN"} <= families
    assert download.release("ViT-H-14-dfn5b").preprocess == {"resize_mode": "squash"}
    assert CLIP.from_name(download.release("ViT-L-14-laion2b").arch).config.activation == "gelu"
    assert CLIP.from_name(download.release("ViT-L-14-metaclip-2.5b").arch).config.activation == "quick_gelu"


@pytest.fixture
def hub_release(server, monkeypatch):
    """A release entry whose file is on the local server, published like the hub does: the resolve URL
    redirects to storage and reports the file's sha256."""
    model = tiny()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    server.files["/storage/blob"] = data
    url = f"{server.base}/org/tiny-clip/resolve/main/open_clip_pytorch_model.bin"
    server.hub["/org/tiny-clip/resolve/main/open_clip_pytorch_model.bin"] = (f"{server.base}/storage/blob", digest)
    entry = download.Release(name="tiny-hub", arch="quickgelu", family="Test", data="none", url=url, size_mb=1,
                             params_m=0.3, imagenet_top1=1.0, preprocess={"resize_mode": "squash"})
    table = {**download.releases(), entry.name: entry}
    monkeypatch.setattr(download, "releases", lambda: table)
    return model, data, digest


def test_hub_download_verifies_by_the_reported_hash_and_records_it(server, hub_release):
    model, data, digest = hub_release
    folder = download.download("tiny-hub", progress=False)
    assert ("/org/tiny-clip/resolve/main/open_clip_pytorch_model.bin", "HEAD") in server.requests
    record = json.loads((folder / "config.json").read_text())
    assert record["source_sha256"] == digest and record["preprocess"] == {"resize_mode": "squash"}
    assert not [f for f in files_in_cache() if "downloads/" in f]  # the hub file is gone after conversion
    loaded, preprocess, _ = engine.load("tiny-hub", device="cpu")
    assert preprocess.resize_mode == "squash" and loaded.name == "tiny-hub"
    assert_same_outputs(model, loaded)
    assert engine.available_models()["tiny-hub"]


def test_hub_download_with_a_wrong_or_missing_hash_is_refused(server, hub_release):
    _, data, digest = hub_release
    server.files["/storage/blob"] = data[:-4] + b"oops"
    with pytest.raises(CliplabError, match="SHA-256 .* deleted"):
        download.download("tiny-hub", progress=False)
    path = "/org/tiny-clip/resolve/main/open_clip_pytorch_model.bin"
    server.hub[path] = (server.hub[path][0], None)
    with pytest.raises(CliplabError, match="reported no SHA-256 .* could not be verified"):
        download.download("tiny-hub", progress=False)
    assert not download.is_downloaded("tiny-hub")


def test_cli_lists_the_release_table(capsys):
    from cliplab.app.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith("ViT-H-14-laion2b "))
    assert "77.96" in row and "no" in row
    assert "ViT-B-16-dfn2b" in out and "ViT-L-14-datacomp-xl" in out
    lines = out.splitlines()
    for name in ("ViT-L-14-dfn2b-s39b", "ViT-H-14-metaclip-altogether", "ViT-bigG-14-metaclip2-worldwide"):
        row = next(line.split() for line in lines if line.startswith(f"{name} "))
        assert "no" in row and "-" in row, name  # not on disk; no ImageNet figure where open_clip publishes none
    row = next(line.split() for line in lines if line.startswith("RN50-cc12m "))
    assert "36.47" in row and "RN50-quickgelu" in row


def test_release_names_and_hub_urls(monkeypatch):
    assert download.resolve_name("ViT-L-14-dfn2b") == "ViT-L-14-dfn2b"
    assert download.model_url("ViT-H-14-laion2b") == (
        "https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K/resolve/main/open_clip_model.safetensors")
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example/")
    assert download.model_url("ViT-B-16-dfn2b") == (
        "https://hf-mirror.example/apple/DFN2B-CLIP-ViT-B-16/resolve/main/open_clip_pytorch_model.bin")
    assert download.model_folder("ViT-B-32-metaclip-2.5b").name == "ViT-B-32-metaclip-2.5b"


def test_a_file_outside_the_hub_is_verified_by_its_pinned_prefix(server, monkeypatch):
    """open_clip publishes only a SHA-256 prefix in the file name of its GitHub release files (the e32
    ViT-B-16-plus-240): the file must start with it, and the whole hash is recorded."""
    model = tiny()
    buffer = io.BytesIO()
    torch.save({"epoch": 32, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    server.files["/releases/tiny-e32.pt"] = data
    entry = download.Release(name="tiny-e32", arch="quickgelu", family="Test", data="none",
                             url=f"{server.base}/releases/tiny-e32.pt", size_mb=1, params_m=0.3,
                             imagenet_top1=None, sha256="0123abcd")
    table = {**download.releases(), entry.name: entry}
    monkeypatch.setattr(download, "releases", lambda: table)
    with pytest.raises(CliplabError, match="SHA-256 .* expected 0123abcd"):
        download.download("tiny-e32", progress=False)
    table["tiny-e32"] = download.Release(**{**entry.__dict__, "sha256": digest[:8]})
    folder = download.download("tiny-e32", progress=False)
    assert json.loads((folder / "config.json").read_text())["source_sha256"] == digest
    assert_same_outputs(model, engine.load("tiny-e32", device="cpu")[0])
