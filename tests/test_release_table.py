"""The release table (assets/models.json) against open_clip 3.3.0's own list: every plain-CLIP release
open_clip lists (`list_pretrained()` and pretrained.py's entries) is a row, with the architecture open_clip
builds for it, its weights' location and its preprocessing. "Plain" is what cliplab's CLIP computes
(engine.config.open_clip_config accepts the model_cfg); the other families stay refused."""

from __future__ import annotations

import pytest
from oracles import import_open_clip

from cliplab.engine import download
from cliplab.engine.config import named_architectures, open_clip_config
from cliplab.engine.errors import CliplabError

# open_clip 3.3.0's hf_hub for this tag names the e31 repository (the same weights as laion400m_e31), so
# the table fetches the tag's own file from its url, verified by the hash prefix in the file's name.
OWN_URL = {"ViT-B-16-plus-240/laion400m_e32"}
PREPROCESS_DEFAULTS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                       "interpolation": "bicubic", "resize_mode": "shortest"}


@pytest.fixture(scope="module")
def plain():
    """open_clip's plain releases: "model/tag" -> (the ModelConfig open_clip's model_cfg means, the pretrained
    cfg), named as open_clip names the weights' own activation (-quickgelu where the tag says quick_gelu)."""
    open_clip = import_open_clip()
    from open_clip import pretrained

    out, refused = {}, set()
    for model, tag in open_clip.list_pretrained():
        cfg = pretrained.get_pretrained_cfg(model, tag)
        quick = bool(cfg.get("quick_gelu")) or model.endswith("-quickgelu")
        arch = f"{model}-quickgelu" if quick and not model.endswith("-quickgelu") else model
        try:
            config = open_clip_config(open_clip.get_model_config(model), quick_gelu=quick)
        except CliplabError:
            refused.add(model)
            continue
        out[f"{arch}/{tag}"] = (config, cfg)
    assert {"ViT-SO400M-14-SigLIP", "coca_ViT-B-32", "EVA02-B-16", "convnext_base", "MobileCLIP-S1",
            "xlm-roberta-base-ViT-B-32", "ViT-L-14-CLIPA"} <= refused  # the other families stay refused
    return out


def rows_by_tag() -> dict[str, download.Release]:
    return {entry.open_clip: entry for entry in download.releases().values() if entry.open_clip}


def test_every_plain_release_open_clip_lists_is_a_row(plain):
    rows = rows_by_tag()
    assert len(plain) == 74  # open_clip 3.3.0: 70 English-tokenizer releases and MetaCLIP 2's four worldwide
    assert sorted(set(plain) - set(rows)) == []
    for key in ("ViT-L-14/dfn2b_s39b", "ViT-bigG-14-quickgelu/metaclip_fullcc", "ViT-H-14/metaclip_altogether",
                "ViT-g-14/laion2b_s12b_b42k", "ViT-B-32-quickgelu/laion400m_e31", "RN50-quickgelu/yfcc15m",
                "RN50-quickgelu/cc12m", "ViT-B-32/commonpool_s_clip_s13m_b4k", "ViT-H-14-worldwide-quickgelu/"
                "metaclip2_worldwide", "ViT-bigG-14-worldwide-378/metaclip2_worldwide"):
        assert key in rows, key
    # one row per release (rows of other kinds, such as the multilingual text towers, are not counted)
    assert sum(entry.open_clip in plain for entry in download.releases().values()) == len(plain)


def test_each_row_is_the_architecture_file_and_preprocessing_open_clip_uses(plain):
    for key, entry in rows_by_tag().items():
        if key not in plain:
            continue
        config, cfg = plain[key]
        assert named_architectures()[entry.arch] == config, key  # every field: shapes, activation, heads, eos
        hub = cfg.get("hf_hub", "")
        if entry.is_openai:
            assert entry.url == cfg["url"] and cfg["url"].split("/")[-2] == entry.sha256, key
        elif key in OWN_URL:
            assert entry.url == cfg["url"] and cfg["url"].rsplit("-", 1)[1].startswith(entry.sha256), key
        else:
            repo, _, file = hub.rstrip("/").rpartition("/") if not hub.endswith("/") else (hub.rstrip("/"), "", "")
            assert entry.url.startswith(f"https://huggingface.co/{repo}/resolve/main/"), key
            assert entry.url.rsplit("/", 1)[1] in ((file,) if file else (download.SAFETENSORS_NAME,
                                                                          download.PICKLE_NAME)), key
            assert entry.sha256 is None, key  # verified by the hash the hub reports
        wanted = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if k in PREPROCESS_DEFAULTS}
        assert {**PREPROCESS_DEFAULTS, **entry.preprocess} == wanted, key
        tokenizer = config.text_tokenizer
        assert (entry.tokenizer or {}).get("url") == (
            f"https://huggingface.co/{tokenizer}/resolve/main/tokenizer.json" if tokenizer else None), key


def test_published_figures_and_sizes():
    releases = download.releases()
    # copied from open_clip's docs/openclip_classification_results.csv (ImageNet 1k, params (M))
    for name, top1, params in (("ViT-g-14-laion2b-s12b", 76.63, 1366.68), ("RN50-yfcc15m", 32.75, 102.01),
                               ("ViT-B-32-laion400m-e31", 62.94, 151.28), ("ViT-B-16-laion400m-e32", 67.05, 149.62),
                               ("ViT-B-16-plus-240-laion400m-e32", 69.19, 208.38),
                               ("ViT-L-14-commonpool-xl-clip", 76.37, 427.62), ("ViT-B-32-datacomp-m", 29.72, 151.28)):
        assert (releases[name].imagenet_top1, releases[name].params_m) == (top1, params), name
    # open_clip's results table has no row for these: no figure rather than a guess
    for name in ("ViT-L-14-dfn2b-s39b", "ViT-H-14-metaclip-altogether", "ViT-bigG-14-metaclip-2.5b",
                 "ViT-H-14-metaclip2-worldwide"):
        assert releases[name].imagenet_top1 is None, name
    assert releases["ViT-H-14-378-metaclip2-worldwide"].preprocess == {"resize_mode": "squash"}
    assert releases["ViT-H-14-metaclip2-worldwide"].arch == "ViT-H-14-worldwide-quickgelu"  # the tag's QuickGELU
    assert releases["ViT-bigG-14-metaclip2-worldwide"].arch == "ViT-bigG-14-worldwide"  # GELU, unlike the H-14

