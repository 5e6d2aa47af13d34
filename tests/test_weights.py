"""Checkpoint formats: our safetensors folders, official TorchScript archives, plain and open_clip
state dicts, refusal of unsafe or misfitting files, and engine.load on top of them."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch

from cliplab import engine
from cliplab.engine import download, weights
from cliplab.engine.errors import CliplabError
from cliplab.engine.model import CLIP
from cliplab.engine.tokenizer import Tokenizer, write_merges

TINY_VIT = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
                transformer_width=64, transformer_layers=2)
TINY_RN = dict(embed_dim=32, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=16,
               transformer_width=64, transformer_layers=1)


def tiny(config: dict = TINY_VIT, seed: int = 0, **overrides) -> CLIP:
    torch.manual_seed(seed)
    model = CLIP(**{**config, **overrides}).eval()
    with torch.no_grad():  # BN statistics away from their defaults, so a skipped buffer would show
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.normal_(1, 0.1)
    return model


def inputs(model: CLIP, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, model.image_resolution, model.image_resolution, generator=gen)
    text = torch.zeros(n, model.context_length, dtype=torch.long)
    for i in range(n):
        length = 3 + 2 * i
        text[i, :length] = torch.randint(1, model.vocab_size - 2, (length,), generator=gen)
        text[i, 0], text[i, length] = model.vocab_size - 2, model.vocab_size - 1
    return images, text


def assert_same_outputs(a: CLIP, b: CLIP) -> None:
    """Bit-identical weights, and outputs equal up to the last bit of float32: a convolution may take
    another kernel for a weight buffer at another memory alignment (a safetensors file's tensors are
    not 64-byte aligned), which rounds differently (seen: 8e-8 on a ResNet with one thread)."""
    mine, theirs = a.state_dict(), b.state_dict()
    assert mine.keys() == theirs.keys()
    for name, tensor in mine.items():
        assert theirs[name].dtype == tensor.dtype and torch.equal(theirs[name], tensor), name
    images, text = inputs(a)
    with torch.no_grad():
        torch.testing.assert_close(a.encode_image(images), b.encode_image(images), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.encode_text(text), b.encode_text(text), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a(images, text)[0], b(images, text)[0], rtol=1e-5, atol=1e-6)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("config", [TINY_VIT, TINY_RN], ids=["vit", "resnet"])
def test_our_format_round_trip(tmp_path, config):
    model = tiny(config)
    folder = weights.save_model(model, tmp_path / "mine", meta={"description": "a test model"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]  # no temp files left
    record = json.loads((folder / "config.json").read_text())
    assert record["name"] == "mine" and record["description"] == "a test model"
    assert record["fingerprint"] == sha(folder / "model.safetensors")[:32]
    assert record["vision_layers"] == (list(config["vision_layers"]) if isinstance(config["vision_layers"], tuple)
                                       else config["vision_layers"])
    loaded, checkpoint = weights.load_model(folder)
    assert checkpoint.format == "cliplab" and checkpoint.merges_path is None
    assert loaded.config == model.config
    assert loaded.name == "mine" and loaded.fingerprint == record["fingerprint"]
    assert_same_outputs(model, loaded)


def test_each_model_brings_its_own_vocabulary(tmp_path):
    merges = [("a", "b"), ("ab", "c</w>"), ("t", "h"), ("th", "e</w>")]
    merges_file = write_merges(merges, tmp_path / "trained_bpe.txt.gz")
    vocab_size = 512 + len(merges) + 2
    model = tiny(vocab_size=vocab_size)
    folder = weights.save_model(model, tmp_path / "small_vocab", merges_path=merges_file)
    assert (folder / "bpe.txt.gz").read_bytes() == merges_file.read_bytes()
    loaded, preprocess, tokenizer = engine.load(folder, device="cpu")
    assert tokenizer.vocab_size == vocab_size == loaded.vocab_size
    assert tokenizer.merges_path == folder / "bpe.txt.gz"
    assert preprocess.resolution == 32 and tokenizer.context_length == loaded.context_length
    expected = Tokenizer(merges_file)("the abc")
    assert torch.equal(tokenizer("the abc"), expected)
    # Re-saving with a plain-text vocabulary replaces the gzip one rather than leaving both.
    plain = write_merges(merges, tmp_path / "bpe_plain.txt")
    weights.save_model(model, folder, merges_path=plain)
    assert sorted(p.name for p in folder.iterdir()) == ["bpe.txt", "config.json", "model.safetensors"]


def test_fingerprint_follows_the_weights(tmp_path):
    folder = weights.save_model(tiny(seed=0), tmp_path / "m")
    first = weights.load_model(folder)[0].fingerprint
    weights.save_model(tiny(seed=1), folder)  # overwrite in place
    second = weights.load_model(folder)[0]
    assert second.fingerprint != first
    assert second.fingerprint == sha(folder / "model.safetensors")[:32]
    # A weights file swapped in by hand (size differs from the record) is hashed, not trusted.
    other = weights.save_model(tiny(seed=2, transformer_layers=1), tmp_path / "other")
    (folder / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(CliplabError, match="transformer_layers is 2 there, 1 in the weights"):
        weights.load_model(folder)


def test_engine_load_precision_and_device(tmp_path):
    folder = weights.save_model(tiny(), tmp_path / "m")
    model, _, _ = engine.load(str(folder), device="cpu", precision="bf16")
    assert model.dtype == torch.bfloat16 and model.ln_final.weight.dtype == torch.float32
    with pytest.raises(CliplabError, match="fp16"):
        engine.load(folder, device="cpu", precision="fp16")


def torchscript_archive(model: CLIP, path: Path) -> Path:
    """An archive shaped like the official releases: TorchScript, official keys plus three extra entries."""
    release = copy.deepcopy(model)
    for key, value in (("input_resolution", model.image_resolution), ("context_length", model.context_length),
                       ("vocab_size", model.vocab_size)):
        if key in release.__dict__:
            delattr(release, key)  # plain attributes here; tensors in the official archives
        release.register_buffer(key, torch.tensor(value))
    images, _ = inputs(model, 1)
    torch.jit.save(torch.jit.trace_module(release, {"encode_image": images}, check_trace=False), str(path))
    return path


def test_torchscript_only_with_an_official_hash_or_opt_in(tmp_path, monkeypatch):
    model = tiny()
    archive = torchscript_archive(model, tmp_path / "ViT-B-32.pt")
    with pytest.raises(CliplabError, match="TorchScript archive .* runs when it is loaded"):
        weights.read_checkpoint(archive)
    with pytest.raises(CliplabError, match="--allow-torchscript in the CLI"):
        weights.read_checkpoint(archive)
    # A traced archive keeps its module types (QuickGELU) but not its head counts: the caller says them.
    with pytest.raises(CliplabError, match="does not say the activation or the attention head width"):
        weights.read_checkpoint(archive, allow_torchscript=True)
    opted_in = weights.read_checkpoint(archive, allow_torchscript=True, arch="quickgelu")
    assert opted_in.format == "torchscript" and "input_resolution" not in opted_in.state_dict
    monkeypatch.setitem(weights.OFFICIAL_SHA256, "ViT-B/32", sha(archive))
    loaded, checkpoint = weights.load_model(archive)
    assert checkpoint.format == "torchscript"
    assert set(checkpoint.state_dict) == set(model.state_dict())
    assert_same_outputs(model, loaded)


def test_plain_and_open_clip_checkpoints(tmp_path):
    model = tiny()
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    wrapped = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               wrapped)
    for path, kind in ((plain, "state_dict"), (wrapped, "open_clip")):
        with pytest.raises(CliplabError, match=r"does not say the activation.*arch="):
            weights.load_model(path)  # shapes cannot tell QuickGELU from GELU: never guessed
        loaded, checkpoint = weights.load_model(path, arch="quickgelu")
        assert checkpoint.format == kind
        assert_same_outputs(model, loaded)
    assert loaded.name == "epoch_3" and loaded.fingerprint == sha(wrapped)[:32]


class NotAWeight:
    pass


def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny().state_dict(), "extra": NotAWeight()}, path)
    with pytest.raises(CliplabError, match="weights_only=True"):
        weights.read_checkpoint(path)


def test_a_misfitting_checkpoint_names_its_keys_and_shapes(tmp_path):
    sd = tiny().state_dict()
    del sd["visual.ln_post.bias"]
    sd["visual.extra_head.weight"] = torch.zeros(3)
    sd["text_projection"] = torch.zeros(64, 16)  # embed dim disagrees with the image projection
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(CliplabError) as info:
        weights.load_model(path, arch="quickgelu")
    message = str(info.value)
    assert "missing keys: visual.ln_post.bias" in message
    assert "unexpected keys: visual.extra_head.weight" in message
    assert "visual.proj: checkpoint (64, 32) vs model (64, 16)" in message
    assert str(path) in message


HUGE_CONFIG = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # without the check: gigabytes, then MemoryError
from cliplab.engine.errors import CliplabError
from cliplab.engine.weights import load_model
try:
    load_model(sys.argv[1])
except CliplabError as error:
    print(json.dumps(str(error)))
"""


@pytest.mark.parametrize("field, value, fit", [("transformer_layers", 1_000_000, "1 in the weights"),
                                               ("vision_layers", [1_000_000, 1, 1, 1], "[1, 1, 1, 1] in the weights")])
def test_a_config_with_a_huge_layer_count_is_refused_in_seconds(tmp_path, field, value, fit):
    """The config's shapes are compared with the tensors' before a module is made: a million layers in
    a config.json are refused in seconds at bounded memory (before: 4.3 GB after 90 s, no refusal).
    The app's "load a local checkpoint" reads through the same load_model."""
    import subprocess
    import sys
    import time
    folder = weights.save_model(tiny(TINY_RN), tmp_path / "model")
    record = json.loads((folder / "config.json").read_text())
    record[field] = value
    (folder / "config.json").write_text(json.dumps(record))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", HUGE_CONFIG, str(folder)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert time.perf_counter() - start < 60
    message = json.loads(done.stdout)
    assert f"{field} is {value}" in message and fit in message and str(folder / "config.json") in message


@pytest.mark.parametrize("field, value, says", [
    ("transformer_heads", 0, "transformer_heads is 0: it must be a whole number, positive"),
    ("vision_heads", -2, "vision_heads is -2"),
    ("transformer_width", -64, "transformer_width is -64"),
    ("embed_dim", 32.5, "embed_dim is 32.5: it must be a whole number"),
    ("transformer_layers", 2.0, "transformer_layers is 2.0"),
    ("vision_layers", [1, 1, 1], "vision_layers is [1, 1, 1]: a ModifiedResNet has four stages"),
    ("vision_layers", [1, 0, 1, 1], "vision_layers is [1, 0, 1, 1]"),
    ("context_length", "77", "context_length is '77'"),
    ("transformer_heads", 3, "transformer_heads is 3, which does not divide transformer_width (64)"),
    ("layer_norm_eps", -1, "layer_norm_eps is -1"),
])
def test_a_config_with_impossible_sizes_gets_a_sentence_naming_field_and_file(tmp_path, field, value, says):
    folder = weights.save_model(tiny(TINY_RN), tmp_path / "model")
    record = json.loads((folder / "config.json").read_text())
    record[field] = value
    (folder / "config.json").write_text(json.dumps(record))
    with pytest.raises(CliplabError) as info:
        weights.load_model(folder)
    assert says in str(info.value) and str(folder / "config.json") in str(info.value)


def test_an_open_clip_config_with_impossible_sizes_names_its_file(tmp_path):
    folder = tmp_path / "oc"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {"width": 64, "heads": 0, "layers": 2}}}))
    torch.save(tiny().state_dict(), folder / "open_clip_pytorch_model.bin")
    with pytest.raises(CliplabError, match=r"open_clip_config.json: transformer_heads is 0"):
        weights.load_model(folder)


def test_truncated_and_foreign_files(tmp_path):
    folder = weights.save_model(tiny(), tmp_path / "m")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CliplabError, match="truncated"):
        weights.read_checkpoint(folder)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CliplabError, match="Cannot read"):
        weights.read_checkpoint(tmp_path / "notes.txt")
    with pytest.raises(CliplabError, match="no config.json"):
        weights.read_checkpoint(tmp_path)


def test_names_without_downloads_never_touch_the_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr("cliplab.engine.download.urlopen", no_network)
    with pytest.raises(CliplabError, match="cliplab download ViT-B/32"):
        engine.load("ViT-B/32", device="cpu")
    with pytest.raises(CliplabError, match="cliplab download ViT-L/14@336px"):
        engine.load("ViT-L-14-336px", device="cpu")
    with pytest.raises(CliplabError, match="neither a model name"):
        engine.load("ViT-X/99", device="cpu")
    assert set(engine.available_models()) == {*download.releases(), "demo"}
    assert set(engine.ARCHITECTURES) <= set(download.releases())
    assert not any(v for k, v in engine.available_models().items() if k != "demo")


def test_demo_loads_when_built_else_says_so():
    if engine.available_models()["demo"]:
        model, preprocess, tokenizer = engine.load("demo", device="cpu")
        assert model.name == "demo" and tokenizer.merges_path.parent.name == "demo"
        assert preprocess.resolution == model.image_resolution
    else:
        with pytest.raises(CliplabError, match="demo model is not built"):
            engine.load("demo", device="cpu")


def test_listed_parameter_counts_match_the_architectures():
    from cliplab.app.services.models import PARAMS

    for name in engine.ARCHITECTURES:
        with torch.device("meta"):  # no memory and no initialisation: cheap even for ViT-L/14
            model = CLIP.from_name(name)
        assert PARAMS[name] == sum(p.numel() for p in model.parameters()), name


def test_loading_touches_no_global_state_and_is_safe_on_threads(tmp_path):
    """Two loads at once, while a third thread initialises tensors: every model is exact, and
    torch.nn.init keeps working everywhere (building once swapped its functions for the process)."""
    import threading

    model = tiny()
    folder = weights.save_model(model, tmp_path / "m")
    loaded, failures, stop = [], [], threading.Event()

    def load() -> None:
        try:
            for _ in range(3):
                loaded.append(weights.load_model(folder)[0])
        except Exception as error:  # reported below, in the test's thread
            failures.append(error)

    def initialise() -> None:
        while not stop.is_set():
            tensor = torch.nn.init.normal_(torch.zeros(256))
            if not tensor.abs().sum() > 0 or tensor.device.type != "cpu":
                failures.append(AssertionError("torch.nn.init.normal_ did nothing during a load"))
                return

    threads = [threading.Thread(target=load), threading.Thread(target=load)]
    watcher = threading.Thread(target=initialise)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()
    assert not failures, failures
    assert len(loaded) == 6
    for other in loaded:
        assert all(p.device.type == "cpu" for p in other.parameters())
        assert_same_outputs(model, other)
    assert torch.nn.init.normal_(torch.zeros(16)).abs().sum() > 0


def test_cli_names_the_architecture_and_opts_in_to_torchscript(tmp_path, capsys, monkeypatch):
    """The refusal sentence names --arch; --arch and --allow-torchscript make the same files load;
    `cliplab convert` makes the choice travel with the weights."""
    from PIL import Image

    from cliplab.app.cli import main

    monkeypatch.setenv("CLIPLAB_HOME", str(tmp_path / "home"))
    model = tiny()
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(plain))
    image = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(image)
    classify = ["classify", str(image), "--classes", "red,blue", "--device", "cpu", "--model"]
    assert main([*classify, str(plain)]) != 0
    assert "--arch" in capsys.readouterr().err
    assert main([*classify, str(plain), "--arch", "quickgelu"]) == 0
    capsys.readouterr()
    archive = torchscript_archive(model, tmp_path / "scripted.pt")
    assert main([*classify, str(archive), "--arch", "quickgelu"]) != 0
    assert "--allow-torchscript" in capsys.readouterr().err
    assert main([*classify, str(archive), "--arch", "quickgelu", "--allow-torchscript"]) == 0
    capsys.readouterr()
    assert main(["convert", str(plain), "--arch", "quickgelu", "--name", "mine"]) == 0
    folder = tmp_path / "home" / "models" / "imported" / "mine"
    assert f"ready: {folder}" in capsys.readouterr().out
    loaded, _, _ = engine.load(folder, device="cpu")  # nothing to say any more
    assert loaded.config.activation == "quick_gelu"
    assert_same_outputs(model, loaded)


def test_models_tab_lists_the_release_table():
    from cliplab.app.ui.models import model_table

    table = model_table()
    assert {"ImageNet top-1", "size", "on disk", "architecture", "trained on"} <= set(table.columns)
    row = table[table["model"] == "ViT-L-14-dfn2b"].iloc[0]
    assert row["ImageNet top-1"] == "81.4%" and row["on disk"] == "no" and row["architecture"] == "ViT-L-14-quickgelu"


def test_an_openai_state_dict_saved_as_safetensors_is_recognised(tmp_path):
    """OpenAI's state dicts carry three extra entries no other exporter writes: with the shapes of one of
    the nine they say it is OpenAI's (QuickGELU), in a .safetensors as in a .pt."""
    from cliplab.engine.config import ARCHITECTURES, shape_config

    with torch.device("meta"):
        sd = CLIP.from_name("ViT-B/32").state_dict()
    raw = weights._Raw({**sd, **{k: torch.tensor(1) for k in weights.TORCHSCRIPT_EXTRAS}}, "state_dict",
                       tmp_path / "ViT-B-32.safetensors")
    raw.openai_extras = True
    raw.sd = weights._official_keys(raw.sd, raw.weights_file)
    config, source = weights._architecture(raw, raw.weights_file, None)
    assert config == ARCHITECTURES["ViT-B/32"] and source == "OpenAI's release"
    raw.openai_extras = False  # the same tensors without them: open_clip's ViT-B-32 (GELU) or -quickgelu?
    with pytest.raises(CliplabError, match=r"--arch ViT-B/32 or --arch ViT-B-32 or --arch ViT-B-32-quickgelu"):
        weights._architecture(raw, raw.weights_file, None)
    with torch.device("meta"):  # ViT-H-14: head width 80 in every release, the activation differs
        h14 = shape_config(CLIP.from_name("ViT-H-14").state_dict())
    assert "--arch ViT-H-14 or --arch ViT-H-14-quickgelu" in weights._unknown_architecture(Path("h.pt"), h14)


def test_models_tab_loads_a_checkpoint_with_the_architecture_chosen(tmp_path, cliplab_home):
    """The Models tab: a file that does not say its architecture gives the sentence; choosing one (or
    ticking the TorchScript opt-in) converts it once and makes it the current model."""
    from library_fixtures import tiny_bundle
    from safetensors.torch import save_file

    from cliplab.app.services.app_state import AppState
    from cliplab.app.services.models import load_checkpoint
    from cliplab.indexes.catalog import open_catalog

    state = AppState(bundle=tiny_bundle(), catalog=open_catalog())
    model = tiny(seed=3)
    plain = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(plain))
    with pytest.raises(CliplabError, match="Architecture choice in the Models tab"):
        load_checkpoint(state, str(plain), None, False)
    loaded = load_checkpoint(state, str(plain), "quickgelu", False)
    assert Path(loaded).parent.name == "imported" and state.bundle.model.config.activation == "quick_gelu"
    assert_same_outputs(model, state.bundle.model.float())
    archive = torchscript_archive(model, tmp_path / "traced.pt")
    with pytest.raises(CliplabError, match="TorchScript box in the Models tab"):
        load_checkpoint(state, str(archive), "quickgelu", False)
    load_checkpoint(state, str(archive), "quickgelu", True)
    assert_same_outputs(model, state.bundle.model.float())


@pytest.mark.parametrize("name", ["photo.png", "photo.pt"])
def test_an_image_given_as_a_checkpoint_is_named_an_image(tmp_path, name):
    """A picture passed where a checkpoint belongs says so (it used to get the pickle-safety sentence)."""
    from PIL import Image

    path = tmp_path / name
    Image.new("RGB", (8, 8), "red").save(path, format="PNG")
    with pytest.raises(CliplabError, match=r"is a PNG image, not a model checkpoint"):
        engine.load(path)
