"""Inference backends for a loaded model, and the measured choice of the fastest safe one.

PyTorch stays the reference and the training engine. For inference on CPUs this module adds
ONNX Runtime: each tower (image, text) is exported once per model with `torch.onnx.export`, and
an int8 form of its linear layers with per-row activation scales is derived from that export
(`quantize_rowwise`: an embedding never depends on the other images in its batch); both are cached
on disk by model fingerprint. Which mode runs is decided once per machine and model by measurement
(`choose_mode`): every candidate that the CPU supports is timed on a probe batch and checked
against fp32 on it; among the modes within their stated tolerance (engine.precision.MODES) that the
quality gate on trained weights allows, a rule that timing noise cannot flip decides (`pick`), and
the choice is kept for every data folder on the machine (`machine_cache`), keyed by the CPU's
flags, the thread count, the library versions and the weights.

int8 on CPUs without VNNI (AVX2 only): u8 x s8 products there go through an instruction that
saturates 16-bit sums, which costs accuracy (cosine 0.994 to fp32 on ViT-B/32); weights are then
quantized to 7 bits (`reduce_range`), measured at cosine >= 0.9997 for the same speed.
onnx-int8 quantizes the image tower only: int8 text embeddings of the trained demo model fell to
cosine 0.9985, below the mode's 0.999, while a query is one short text whose fp32 cost is small;
indexing, where the time goes, is all image encoding. A Hugging Face text tower (engine.text_towers:
XLM-RoBERTa-Large is 560M parameters, where a query's cost is not small) is quantized the same way
where its own int8 graph keeps cosine >= 0.999 to fp32 on probe texts (`text_int8_safe`, measured once
per machine and tower), and stays fp32 otherwise.

The exact fp32 mode itself runs PyTorch's fp32 arithmetic through one of two kernel libraries that
the CPU wheel holds, measured once per machine (`fp32_kernels`): its default BLAS (MKL), the
reference, or oneDNN (engine.onednn), which is taken where it runs a ViT-B transformer block at
least 10% faster (MKL takes its AVX2 path on AMD processors with AVX-512). The two differ by
summation order only; the choice is cached, so the app and the CLI on one machine compute the same
numbers, and provenance records it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cliplab.engine import paths
from cliplab.engine.features import model_fingerprint
from cliplab.engine.images import MEAN, STD
from cliplab.engine.precision import DTYPES, EXACT, MODES, check_mode, cpu_features, cpu_has_vnni, cpu_summary
from cliplab.engine.text_towers import TowerGraph, hf_text_tower, valid_length
from cliplab.engine.text_towers import probe_tokens as text_probe_tokens
from cliplab.engine.weights import replace_atomically

log = logging.getLogger(__name__)

MODE_ENV = "CLIPLAB_INFERENCE_MODE"  # forces a mode for indexing/search (e.g. fp32 to opt out)
KERNELS_ENV = "CLIPLAB_FP32_KERNELS"  # forces the fp32 mode's matrix kernels: blas or onednn
KERNELS = ("blas", "onednn")
# Modes whose zero-shot accuracy on the demo model's held-out sets moved by more than 0.5 points
# in benchmarks/quality.py (docs/benchmarks.md): never chosen automatically. Empty: all passed.
FAILED_QUALITY_GATE: frozenset[str] = frozenset()
MIN_GAIN = 1.10  # a mode must beat the more exact mode it would replace by this factor (timing noise)
# The order in which modes give up exactness: a mode is taken only where it beats the one before it
# that was taken by MIN_GAIN, so noise between two fast modes cannot flip the choice (pick).
EXACTNESS_ORDER = ("fp32", "fp16", "onnx-fp32", "bf16", "onnx-int8")
MACHINE_CACHE_ENV = "CLIPLAB_MACHINE_CACHE"  # where the per-machine measurements live (tests, containers)


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# ---- encoders: what a model handle calls; every one returns float32 features, unnormalised ----

class _ModuleLike:
    """Enough of nn.Module's surface that trainer.evaluate and engine.features take an encoder as a model."""
    training = False
    reference: torch.nn.Module  # the fp32 model the encoder computes

    @property
    def fingerprint(self) -> str:
        """The weights' id (what a classifier built with the encoder records)."""
        return model_fingerprint(self.reference)

    @property
    def context_length(self) -> int:
        return self.reference.context_length

    @property
    def text_fingerprint(self) -> str | None:
        """A paired text tower's own weights id (engine.text_towers), which text caches are keyed by too."""
        return getattr(self.reference, "text_fingerprint", None)

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self


class TorchEncoder(_ModuleLike):
    """PyTorch in fp32 (the reference, through the matrix kernels measured fastest on this CPU:
    `fp32_kernels`), or a bf16/fp16 copy of the weights."""

    def __init__(self, model: torch.nn.Module, mode: str = EXACT, kernels: str | None = None):
        """kernels: 'blas' or 'onednn' for fp32 on a CPU; None takes this machine's measured choice."""
        self.mode, self.reference = mode, model
        precision = MODES[mode].precision
        self.device = next(model.parameters()).device
        if kernels is None or precision != "fp32" or self.device.type != "cpu" or model.dtype != torch.float32:
            kernels = mode_kernels(mode, self.device, model.dtype)
        self.kernels = kernels
        if self.kernels == "onednn":
            from cliplab.engine.onednn import inference_copy
            self.model = inference_copy(model)
        elif precision == "fp32" or model.dtype == DTYPES[precision]:
            self.model = model
        else:
            import copy

            from cliplab.engine.model import convert_weights
            self.model = convert_weights(copy.deepcopy(model), DTYPES[precision]).eval()
        self.embed_dim = model.embed_dim

    @torch.inference_mode()
    def encode_image(self, images: torch.Tensor, project: bool = True) -> torch.Tensor:
        return self.model.encode_image(images.to(self.device), project=project).float()

    @torch.inference_mode()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens.to(self.device)).float()


class ImageTower(torch.nn.Module):
    """The projected image features, as one exportable graph."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


class TextTower(torch.nn.Module):
    """encode_text for tokens already cut after the batch's longest sequence, with the length taken
    from the input's shape (encode_text computes it from the values, which a trace would freeze)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        m = self.model
        eot = m.eot_positions(tokens)  # the highest id, or the first config.text_eos_id (MetaCLIP 2)
        x = m.token_embedding(tokens) + m.positional_embedding[:tokens.shape[1]]
        x = m.ln_final(m.transformer(x, causal=True))
        return x[torch.arange(x.shape[0]), eot] @ m.text_projection


def export_folder(model: torch.nn.Module) -> Path:
    return paths.cache_dir("onnx") / model_fingerprint(model)


def _graph_name(model: torch.nn.Module, tower: str) -> str:
    """A tower's file stem: a Hugging Face text tower is named by its own weights, since a model pairing one
    with an image model shares that model's fingerprint (and export folder)."""
    if tower == "text" and hf_text_tower(model) is not None:
        return f"text-{model.text_fingerprint}"
    return tower


def export_onnx(model: torch.nn.Module, tower: str, folder: Path | None = None) -> Path:
    """The fp32 ONNX graph of one tower ('image' or 'text'), exported once and cached."""
    folder = folder or export_folder(model)
    if _graph_name(model, tower) != tower:  # a graph over 2 GB keeps its tensors as files beside it: its own folder
        folder = folder / _graph_name(model, tower)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_graph_name(model, tower)}-fp32.onnx"
    if path.is_file():
        return path
    if model.dtype != torch.float32:
        raise ValueError("ONNX export needs the fp32 weights: load the model with precision fp32.")
    resolution = model.image_resolution
    if tower == "image":
        module, example = ImageTower(model), (torch.zeros(2, 3, resolution, resolution),)
        names, axes = ["pixels"], {"pixels": {0: "batch"}, "features": {0: "batch"}}
    elif hf_text_tower(model) is not None:  # the mask is computed in the graph from the pad id
        text = hf_text_tower(model)
        module, example = TowerGraph(text), (torch.tensor([[5, 6, 7], [5, 6, text.pad_token_id]]),)
        names, axes = ["tokens"], {"tokens": {0: "batch", 1: "length"}, "features": {0: "batch"}}
    else:
        sot, eot = model.token_embedding.num_embeddings - 2, model.token_embedding.num_embeddings - 1
        module, example = TextTower(model), (torch.tensor([[sot, 1, eot], [sot, eot, 0]]),)
        names, axes = ["tokens"], {"tokens": {0: "batch", 1: "length"}, "features": {0: "batch"}}
    model = model.cpu().eval()
    log.info("exporting the %s tower of %s to ONNX (once per model): %s", tower, getattr(model, "name", "?"), path)
    return export_graph(module, example, path, names, ["features"], axes)


def export_graph(module: torch.nn.Module, example: tuple, path: Path, input_names: list[str],
                 output_names: list[str], axes: dict) -> Path:
    """One module as an fp32 ONNX graph at path (written atomically): the towers, a classifier with its head."""
    if any(p.dtype != torch.float32 for p in module.parameters()):
        raise ValueError("ONNX export needs the fp32 weights: load the model with precision fp32.")

    def write(tmp: Path) -> None:
        # grad stays enabled: under no_grad the attention takes PyTorch's fused kernel, which has no ONNX form
        with torch.enable_grad(), warnings.catch_warnings():
            # "aten::index ... negative values": the graph indexes with arange and argmax, never negative
            warnings.filterwarnings("ignore", message="Exporting aten::index", category=UserWarning)
            torch.onnx.export(module.eval(), example, str(tmp), input_names=input_names, output_names=output_names,
                              dynamic_axes=axes, opset_version=17, dynamo=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    return replace_atomically(path, write)


def quantized_onnx(model: torch.nn.Module, tower: str, folder: Path | None = None) -> Path:
    """The int8 form of a tower's export (`quantize_rowwise`), cached; 7-bit weights on CPUs
    without VNNI (see the module docstring)."""
    source = export_onnx(model, tower, folder)
    reduce_range = not cpu_has_vnni()
    path = source.with_name(f"{_graph_name(model, tower)}-int8-rows{'-r7' if reduce_range else ''}.onnx")
    if path.is_file():
        return path
    return replace_atomically(path, lambda tmp: quantize_rowwise(source, tmp, reduce_range))


def quantize_rowwise(source: Path, target: Path, reduce_range: bool) -> None:
    """Every product with constant weights (MatMul, Gemm) as an 8-bit integer product whose activation
    scale is each row's own, so that an embedding never depends on the other images in its batch.

    ONNX Runtime's dynamic quantization scales the whole activation tensor, which spans the batch: the
    same photo came out differently in a batch of 32 and of 7. Here each row (one token of one image)
    is quantized by its own largest magnitude (symmetric, around the zero point 128, so that one zero
    point serves every row and the integer kernel takes it out exactly); the weights are symmetric per
    output column (7 bits without VNNI, where 8-bit products saturate). The product accumulates in
    int32 (exact, whatever the kernel's blocking) and is scaled by the weights' column scales in the
    same kernel (MatMulIntegerToFloat), then by the row's scale. The rest of the graph is the fp32
    export's, which computes row by row."""
    import onnx
    from onnx import helper, numpy_helper

    graph_model = onnx.load(str(source))
    graph = graph_model.graph
    weights = {init.name: init for init in graph.initializer}
    qmax = 63 if reduce_range else 127
    nodes, added = [], []

    def const(name: str, array: np.ndarray) -> str:
        added.append(numpy_helper.from_array(array, name))
        return name

    shared = {"one": const("q_one", np.array(1.0, np.float32)), "zp": const("q_zp", np.array(128, np.uint8)),
              "zp1": const("q_zp1", np.array([128], np.uint8)), "tiny": const("q_tiny", np.array(1e-30, np.float32)),
              "127": const("q_127", np.array(127, np.float32)), "axis1": const("q_axis1", np.array([1], np.int64)),
              "start": const("q_start", np.array([0], np.int64)), "last": const("q_last", np.array([-1], np.int64))}
    for index, node in enumerate(graph.node):
        gemm = node.op_type == "Gemm"
        if node.op_type not in ("MatMul", "Gemm") or node.input[1] not in weights:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)
        if w.ndim != 2 or (gemm and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                                     or attrs.get("beta", 1.0) != 1.0)):
            nodes.append(node)
            continue
        if gemm and attrs.get("transB", 0):
            w = w.T
        w_scale = np.maximum(np.abs(w).max(axis=0), 1e-30) / qmax  # per output column
        w_q = np.clip(np.rint(w / w_scale), -qmax, qmax).astype(np.int8)
        p, x, out = f"q{index}_", node.input[0], node.output[0]
        bias = node.input[2] if gemm and len(node.input) > 2 and node.input[2] else None
        scaled = p + "scaled" if bias else p + "y2"
        nodes += [
            helper.make_node("Reshape", [x, const(p + "rows_shape", np.array([-1, w.shape[0]], np.int64))], [p + "x2"]),
            helper.make_node("ReduceMax", [p + "x2"], [p + "max"], axes=[1], keepdims=0),
            helper.make_node("ReduceMin", [p + "x2"], [p + "min"], axes=[1], keepdims=0),  # no |x| written out
            helper.make_node("Neg", [p + "min"], [p + "neg_min"]),
            # the largest magnitude; a row of zeros keeps a positive scale and stays zeros
            helper.make_node("Max", [p + "max", p + "neg_min", shared["tiny"]], [p + "amax1"]),
            helper.make_node("Div", [p + "amax1", shared["127"]], [p + "scale"]),
            helper.make_node("Shape", [p + "scale"], [p + "rows"]),
            helper.make_node("Expand", [shared["zp1"], p + "rows"], [p + "zps"]),
            helper.make_node("QuantizeLinear", [p + "x2", p + "scale", p + "zps"], [p + "xq"], axis=0),
            helper.make_node("MatMulIntegerToFloat", [p + "xq", const(p + "w", w_q), shared["one"],
                                                      const(p + "w_scale", w_scale.astype(np.float32)), shared["zp"]],
                             [p + "unscaled"], domain="com.microsoft"),
            helper.make_node("Unsqueeze", [p + "scale", shared["axis1"]], [p + "scale_col"]),
            helper.make_node("Mul", [p + "unscaled", p + "scale_col"], [scaled]),
        ]
        if bias:
            nodes.append(helper.make_node("Add", [scaled, bias], [p + "y2"]))
        nodes += [
            helper.make_node("Shape", [x], [p + "x_shape"]),
            helper.make_node("Slice", [p + "x_shape", shared["start"], shared["last"]], [p + "lead"]),
            helper.make_node("Concat", [p + "lead", const(p + "n", np.array([w.shape[1]], np.int64))],
                             [p + "y_shape"], axis=0),
            helper.make_node("Reshape", [p + "y2", p + "y_shape"], [out]),
        ]
    graph.ClearField("node")
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}  # the fp32 weights replaced are dropped
    kept = [init for init in list(graph.initializer) + added if init.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    if not any(opset.domain == "com.microsoft" for opset in graph_model.opset_import):
        graph_model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(graph_model, str(target))


class OnnxEncoder(_ModuleLike):
    """ONNX Runtime sessions for both towers (fp32 or int8), created on first use."""

    def __init__(self, model: torch.nn.Module, mode: str = "onnx-fp32", threads: int | None = None,
                 folder: Path | None = None):
        self.mode, self.reference, self.folder = mode, model, folder
        self.kernels = "onnxruntime"
        self.threads = threads or torch.get_num_threads()
        self.embed_dim = model.embed_dim
        self.device = torch.device("cpu")
        self._sessions: dict[str, object] = {}
        self._unprojected: TorchEncoder | None = None

    def session(self, tower: str):
        if tower not in self._sessions:
            import onnxruntime as ort
            # see the module docstring: CLIP's text tower stays fp32; a Hugging Face one where its gate allows
            int8 = self.mode == "onnx-int8" and (tower == "image" or text_int8_safe(self.reference))
            path = (quantized_onnx if int8 else export_onnx)(self.reference, tower, self.folder)
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._sessions[tower] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return self._sessions[tower]

    def encode_image(self, images: torch.Tensor, project: bool = True) -> torch.Tensor:
        if not project:  # only the projected features are exported; the rest is the exact mode's job
            self._unprojected = self._unprojected or TorchEncoder(self.reference)
            return self._unprojected.encode_image(images, project=False)
        pixels = np.ascontiguousarray(images.detach().cpu().float().numpy())
        return torch.from_numpy(self.session("image").run(None, {"pixels": pixels})[0])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.numel() == 0:
            return torch.zeros(0, self.embed_dim)
        text = hf_text_tower(self.reference)
        if text is not None:
            length = valid_length(tokens, text.pad_token_id)
        else:
            length = int(self.reference.eot_positions(tokens).max()) + 1  # as encode_text: stop after the longest
        cut = np.ascontiguousarray(tokens[:, :length].cpu().numpy().astype(np.int64))
        return torch.from_numpy(self.session("text").run(None, {"tokens": cut})[0])


Encoder = TorchEncoder | OnnxEncoder


def make_encoder(model: torch.nn.Module, mode: str) -> Encoder:
    """The encoder of a mode; an ONNX mode without ONNX Runtime installed falls back to fp32 with a log line."""
    check_mode(mode, next(model.parameters()).device)
    if MODES[mode].engine == "onnxruntime":
        if onnx_available():
            return OnnxEncoder(model, mode)
        log.warning("ONNX Runtime is not installed: %s runs as PyTorch fp32 instead "
                    "(`pip install onnxruntime onnx` for the faster modes).", mode)
        return TorchEncoder(model, EXACT)
    return TorchEncoder(model, mode)


# ---- the measured choice ----

def probe_images(resolution: int, count: int = 8, seed: int = 0) -> torch.Tensor:
    """Smooth, photo-like images, normalised as the model expects: coarse random colour fields
    upsampled bicubically (random pixel noise would exercise the model far from real photos)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 6, 6, generator=generator)
    images = F.interpolate(coarse, size=(resolution, resolution), mode="bicubic", align_corners=False).clamp(0, 1)
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def probe_tokens(model: torch.nn.Module, count: int = 8, seed: int = 0) -> torch.Tensor:
    """Token sequences of several lengths in the model's own vocabulary ([SOT] ids [EOT], zero-padded;
    SOT and EOT are the vocabulary's last two ids); for a Hugging Face text tower, its ids right-padded
    with its pad id."""
    if hf_text_tower(model) is not None:
        return text_probe_tokens(hf_text_tower(model), count, seed=seed)
    vocab, context = model.token_embedding.num_embeddings, model.context_length
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(count, context, dtype=torch.long)
    for row in range(count):
        length = 1 + row * (context - 3) // max(1, count - 1)
        tokens[row, 0], tokens[row, length + 1] = vocab - 2, vocab - 1
        tokens[row, 1:length + 1] = torch.randint(1, vocab - 2, (length,), generator=generator)
    return tokens


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.float(), b.float(), dim=-1).min())


@dataclass
class Choice:
    mode: str
    reason: str
    measured: dict  # mode -> {"seconds", "image_cosine", "text_cosine", "safe"}
    cpu: str
    model: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def candidate_modes(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return ["fp32", "fp16"]
    modes = ["fp32"]
    if onnx_available():
        modes += ["onnx-fp32", "onnx-int8"]
    if cpu_features()["avx512_bf16"] or cpu_features()["amx"]:  # emulated bf16 is several times slower: not tried
        modes.append("bf16")
    return modes


def measure_modes(model: torch.nn.Module, modes: list[str], batch: int = 8, rounds: int = 3) -> dict[str, dict]:
    """Seconds per probe batch and the cosine to fp32 (images and texts) of each mode. The modes are
    timed round-robin and each keeps its fastest round, so a burst of load from other processes
    slows one round of every mode instead of deciding the choice."""
    images, tokens = probe_images(model.image_resolution, batch), probe_tokens(model)
    reference = TorchEncoder(model)
    ref_image, ref_text = reference.encode_image(images), reference.encode_text(tokens)
    encoders, results = {}, {}
    for mode in modes:
        encoder = reference if mode == EXACT else make_encoder(model, mode)
        if encoder.mode != mode:  # fell back (ONNX Runtime missing)
            continue
        image_cos = min_cosine(encoder.encode_image(images), ref_image)  # also the warm-up
        text_cos = min_cosine(encoder.encode_text(tokens), ref_text)
        safe = min(image_cos, text_cos) >= MODES[mode].min_cosine - 1e-6 and mode not in FAILED_QUALITY_GATE
        encoders[mode] = encoder
        results[mode] = {"seconds": float("inf"), "image_cosine": round(image_cos, 6),
                         "text_cosine": round(text_cos, 6), "safe": safe}
    for _ in range(rounds):
        for mode, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode_image(images)
            results[mode]["seconds"] = min(results[mode]["seconds"], round(time.perf_counter() - start, 4))
    return results


def pick(measured: dict[str, dict]) -> tuple[str, str]:
    """The mode to index with and why, by a rule that timing noise cannot flip between two close modes:
    walk the safe modes from the most exact (EXACTNESS_ORDER) and take each one that runs at least
    MIN_GAIN times faster than the last one taken. fp32 stays unless a safe mode beats it by 10%."""
    exact = measured[EXACT]["seconds"]
    taken, steps = EXACT, []
    for mode in sorted((m for m, r in measured.items() if r["safe"] and m != EXACT), key=EXACTNESS_ORDER.index):
        gain = measured[taken]["seconds"] / measured[mode]["seconds"]
        if gain >= MIN_GAIN:
            steps.append(f"{mode} {gain:.2f}x {taken}")
            taken = mode
        else:
            steps.append(f"{mode} only {gain:.2f}x {taken}, kept {taken}")
    if taken == EXACT:
        return EXACT, "no safe mode measured at least 10% faster than fp32 on this CPU"
    r = measured[taken]
    return taken, (f"{taken} measured {exact / r['seconds']:.1f}x fp32 on this CPU, cosine to fp32 >= "
                   f"{min(r['image_cosine'], r['text_cosine']):.5f} ({'; '.join(steps)}: a mode replaces a more "
                   f"exact one only where it is {MIN_GAIN:.2f}x faster)")


def machine_cache() -> Path:
    """Measurements of this machine, shared by every data folder on it (CLIPLAB_MACHINE_CACHE, else
    $XDG_CACHE_HOME/cliplab, else ~/.cache/cliplab): two data folders make the same choice, so the
    libraries they index are embedded alike."""
    root = os.environ.get(MACHINE_CACHE_ENV)
    if root:
        path = Path(root).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        path = Path(base) / "cliplab"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _machine_key() -> str:
    import platform
    versions = [torch.__version__, platform.machine(), str(torch.get_num_threads()), cpu_summary(),
                " ".join(sorted(FAILED_QUALITY_GATE))]
    try:
        import onnxruntime
        versions.append(onnxruntime.__version__)
    except ImportError:
        versions.append("no-onnxruntime")
    return hashlib.blake2b("|".join(versions).encode(), digest_size=8).hexdigest()


def _choice_key(model: torch.nn.Module) -> str:
    text = f"+{model.text_fingerprint}" if hf_text_tower(model) is not None else ""
    return f"{model_fingerprint(model)}{text}-{_machine_key()}"


def text_int8_safe(model: torch.nn.Module) -> bool:
    """Whether a Hugging Face text tower's int8 graph stays within onnx-int8's cosine to its fp32 (>= 0.999)
    on probe texts: measured once per machine and tower, cached beside the mode choices."""
    text = hf_text_tower(model)
    if text is None:
        return False
    key = f"text-int8-{model.text_fingerprint}-{_machine_key()}"
    cached = _read_choices().get(key)
    if cached is None:
        import onnxruntime as ort
        tokens = text_probe_tokens(text, count=32)  # many texts: the cosine varies from text to text
        with torch.inference_mode():
            reference = text(tokens).float()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(quantized_onnx(model, "text")), options,
                                       providers=["CPUExecutionProvider"])
        cut = tokens[:, :valid_length(tokens, text.pad_token_id)].numpy()
        cosine = min_cosine(torch.from_numpy(session.run(None, {"tokens": cut})[0]), reference)
        cached = {"cosine": round(cosine, 6), "safe": cosine >= MODES["onnx-int8"].min_cosine}
        choices = _read_choices()
        choices[key] = cached
        replace_atomically(choices_file(), lambda tmp: tmp.write_text(json.dumps(choices, indent=1)))
        log.info("int8 text tower of %s: cosine %.6f to fp32 (%s)", getattr(model, "name", "?"), cosine,
                 "taken" if cached["safe"] else "stays fp32")
    return bool(cached["safe"])


def choices_file() -> Path:
    return machine_cache() / "inference-modes.json"


def _read_choices() -> dict:
    try:
        return json.loads(choices_file().read_text())
    except (OSError, ValueError):
        return {}


def kernels_file() -> Path:
    return machine_cache() / "fp32-kernels.json"


def fp32_kernels(remeasure: bool = False, measure: bool = True) -> dict | None:
    """The matrix kernels of the exact fp32 mode on this CPU (module docstring): {"kernels": "blas" or
    "onednn", "reason", "measured": seconds of one product each}. CLIPLAB_FP32_KERNELS forces one;
    otherwise measured once per machine (CPU flags, threads, library versions) and cached for every
    data folder on it (machine_cache).
    measure=False: None where nothing is cached yet (for pages that only read)."""
    forced = os.environ.get(KERNELS_ENV)
    if forced:
        if forced not in KERNELS:
            raise ValueError(f"{KERNELS_ENV}={forced!r} is not a kernel library: use blas or onednn.")
        return {"kernels": forced, "reason": f"set by {KERNELS_ENV}", "measured": {}}
    from cliplab.engine import onednn
    if not onednn.available():
        return {"kernels": "blas", "reason": "this PyTorch build has no oneDNN linear kernel", "measured": {}}
    key = _machine_key()
    try:
        choices = json.loads(kernels_file().read_text())
    except (OSError, ValueError):
        choices = {}
    if key in choices and not remeasure:
        return choices[key]
    if not measure:
        return None
    measured = onednn.time_block()
    gain = measured["blas"] / measured["onednn"]
    kernels = "onednn" if gain >= MIN_GAIN else "blas"
    choice = {"kernels": kernels, "measured": {k: round(v, 5) for k, v in measured.items()},
              "reason": f"oneDNN ran a ViT-B block at {gain:.2f}x PyTorch's BLAS on this CPU"
                        + ("" if kernels == "onednn" else " (less than 10% faster: the BLAS stays)")}
    try:  # another process on this machine may have decided meanwhile: its choice stands
        choices = json.loads(kernels_file().read_text())
    except (OSError, ValueError):
        choices = {}
    if key in choices and not remeasure:
        return choices[key]
    log.info("fp32 matrix kernels on this CPU (%s): %s (%s)", cpu_summary(), kernels, choice["reason"])
    choices[key] = choice
    replace_atomically(kernels_file(), lambda tmp: tmp.write_text(json.dumps(choices, indent=1)))
    return choice


def mode_kernels(mode: str, device: str | torch.device, weights: torch.dtype = torch.float32) -> str:
    """What a mode's matrix products run through on a device, as provenance records it: 'onnxruntime';
    'torch' (PyTorch's own dispatch) for weights loaded converted (bf16, fp16) or a reduced-precision
    mode on a CPU; 'cuda'; else the exact mode's measured 'blas' or 'onednn'. Builds no encoder."""
    if MODES[mode].engine == "onnxruntime":
        return "onnxruntime"
    if weights != torch.float32:
        return "torch"
    if torch.device(device).type == "cuda":
        return "cuda"
    return fp32_kernels()["kernels"] if MODES[mode].precision == "fp32" else "torch"


def choose_mode(model: torch.nn.Module, remeasure: bool = False) -> Choice:
    """The fastest safe mode for this model on this machine: CLIPLAB_INFERENCE_MODE if set, fp16 on
    CUDA, else measured once per machine and model and cached for every data folder (machine_cache)."""
    device = next(model.parameters()).device
    forced = os.environ.get(MODE_ENV)
    if forced:
        return Choice(check_mode(forced, device), f"set by {MODE_ENV}", {}, cpu_summary())
    if device.type == "cuda":
        return Choice("fp16", "CUDA: fp16 weights as the reference runs them", {}, "cuda")
    key = _choice_key(model)
    cached = _read_choices().get(key)
    if cached and not remeasure:
        return Choice(**cached)
    measured = measure_modes(model, candidate_modes(device))
    mode, reason = pick(measured)
    choice = Choice(mode, reason, measured, cpu_summary(), getattr(model, "name", None) or "")
    choices = _read_choices()
    if key in choices and not remeasure:  # another process on this machine decided meanwhile: its choice stands
        return Choice(**choices[key])
    log.info("inference mode for %s on this CPU (%s): %s (%s)", getattr(model, "name", "model"), choice.cpu,
             mode, reason)
    choices[key] = choice.to_dict()
    replace_atomically(choices_file(), lambda tmp: tmp.write_text(json.dumps(choices, indent=1)))
    return choice


def cached_choice(model: torch.nn.Module) -> Choice | None:
    """The cached measured choice, if any, without measuring."""
    cached = _read_choices().get(_choice_key(model))
    return Choice(**cached) if cached else None


def describe() -> dict:
    """What runs on this machine and why, for `cliplab models` and the Models tab: the detected CPU
    features, ONNX Runtime, the policy, and the choices measured here so far (by model name)."""
    machine = _machine_key()
    try:
        import onnxruntime
        onnx = onnxruntime.__version__
    except ImportError:
        onnx = None
    measured = [Choice(**c) for key, c in _read_choices().items()
                if key.endswith(f"-{machine}") and not key.startswith("text-int8-")]
    return {"cpu": cpu_summary(), "threads": torch.get_num_threads(), "onnxruntime": onnx,
            "forced": os.environ.get(MODE_ENV), "cuda": torch.cuda.is_available(),
            "reproducible": EXACT, "fp32_kernels": fp32_kernels(measure=False), "choices": measured}
