"""Multilingual releases in the release table, downloaded by name as their Hugging Face folders against a
local HTTP server (as tests/test_download.py does for the other releases): every file verified by the hash
the hub reports (the LFS SHA-256 of the weights, the git blob id of a small file), the release record
written last, then loaded as a text tower paired with its image release."""

from __future__ import annotations

import hashlib
import json

import pytest
from test_download import server  # noqa: F401 - the local hub
from text_tower_fixtures import mclip_folder

from cliplab import engine
from cliplab.app.services import models as models_service
from cliplab.engine import download
from cliplab.engine.errors import CliplabError
from cliplab.engine.text_towers import RELEASE_FILE


def test_the_table_lists_the_multilingual_releases_with_pairing_languages_and_figures():
    table = download.releases()
    towers = {n for n, e in table.items() if e.kind == "text-tower"}
    assert towers == {"M-CLIP/XLM-Roberta-Large-Vit-B-32", "M-CLIP/XLM-Roberta-Large-Vit-L-14",
                      "M-CLIP/XLM-Roberta-Large-Vit-B-16Plus", "M-CLIP/LABSE-Vit-L-14"}
    for name in towers | {"xlm-roberta-base-ViT-B-32-laion5b", "xlm-roberta-large-ViT-H-14-laion5b"}:
        entry = table[name]
        assert entry.is_folder and entry.languages and entry.size_mb > 0 and entry.embed_dim
        assert entry.retrieval["scores"]["en"] > 0 and entry.retrieval["metric"]
        assert all(url.startswith("https://huggingface.co/") for url in entry.files.values())
    assert table["M-CLIP/XLM-Roberta-Large-Vit-B-32"].retrieval["scores"]["de"] == 88.7
    assert download.pairing_record(table["M-CLIP/XLM-Roberta-Large-Vit-L-14"]) == [
        {"name": "ViT-L/14", "sha256": download.weights.OFFICIAL_SHA256["ViT-L/14"]}]
    assert models_service.text_towers_for("ViT-B-32") == ["M-CLIP/XLM-Roberta-Large-Vit-B-32"]
    assert set(models_service.text_towers_for("ViT-L/14")) == {"M-CLIP/XLM-Roberta-Large-Vit-L-14",
                                                                "M-CLIP/LABSE-Vit-L-14"}


@pytest.fixture
def hub_tower(server, tmp_path, monkeypatch):  # noqa: F811
    """An M-CLIP folder published on the local hub: the weights as an LFS file, the rest kept in git."""
    folder = mclip_folder(tmp_path)
    files = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        data = path.read_bytes()
        lfs = path.suffix == ".bin"
        digest = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(
            f"blob {len(data)}\0".encode() + data).hexdigest()
        server.files[f"/storage/{path.name}"] = data
        server.hub[f"/org/tower/resolve/main/{path.name}"] = (f"{server.base}/storage/{path.name}", digest)
        files[path.name] = f"{server.base}/org/tower/resolve/main/{path.name}"
    entry = download.Release(name="org/tower", arch="xlm-roberta", family="Test", data="none",
                             url=f"{server.base}/org/tower", size_mb=1, params_m=0.1, imagenet_top1=None,
                             kind="text-tower", files=files, pairs_with=["tiny-image"], embed_dim=16,
                             languages="test")
    table = {**download.releases(), entry.name: entry}
    monkeypatch.setattr(download, "releases", lambda: table)
    return entry


def test_a_text_tower_downloads_as_its_folder_and_loads_by_name(server, hub_tower):  # noqa: F811
    folder = download.download("org/tower", progress=False)
    assert folder.name == "org-tower" and download.is_downloaded("org/tower")
    record = json.loads((folder / RELEASE_FILE).read_text())
    assert record["pairs_with"] == [{"name": "tiny-image"}] and record["kind"] == "text-tower"
    tower = engine.load_text_tower("org/tower", device="cpu")
    assert tower.name == "org/tower" and tower.embed_dim == 16 and tower.pairing_names() == ["tiny-image"]
    requests = len(server.requests)
    assert download.download("org-tower", progress=False) == folder and len(server.requests) == requests
    with pytest.raises(CliplabError, match="is a text tower without an image tower"):
        engine.load("org/tower", device="cpu")


def test_a_file_that_does_not_match_the_reported_hash_is_refused(server, hub_tower):  # noqa: F811
    server.files["/storage/tokenizer.json"] = b"{}"
    with pytest.raises(CliplabError, match="SHA-256 .* deleted"):
        download.download("org/tower", progress=False)
    assert not download.is_downloaded("org/tower")
