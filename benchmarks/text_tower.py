"""Query latency of a multilingual text tower (XLM-RoBERTa-Large, M-CLIP's) on this CPU: plain transformers
(PyTorch fp32, cliplab's exact mode) against the ONNX Runtime modes of engine.runtime, in one run.

    python benchmarks/text_tower.py [--queries 40] [--threads 2] [--small]

The tower is M-CLIP's XLM-Roberta-Large-Vit-B-32 at its real shape (24 layers, width 1024, 16 heads, a
250,002-token vocabulary, a 1024 -> 512 linear map) with random weights: speed does not depend on the
values. It is paired with a small image model and encoded through the handle's machinery: the exact mode
is the transformers model itself; onnx-fp32 and onnx-int8 are engine.runtime's export and per-row int8
quantization (`quantize_rowwise`), the int8 graph taken only where its cosine to fp32 is >= 0.999 on probe
texts (`text_int8_safe`). Each query is one text of 6 to 24 tokens (what people type), encoded alone as
a search does; the modes are timed alternating query by query, so load from other processes hits all of
them. Prints p50 / p95 per mode, the ratio to transformers, and the cosine to fp32 ("onnx-int8 graph" is
the int8 graph itself, timed whatever the gate says; the handle's onnx-int8 mode runs it only where the
gate passes, else onnx-fp32's graph).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracles import import_transformers_models  # noqa: E402

from cliplab.engine.model import CLIP  # noqa: E402
from cliplab.engine.precision import cpu_summary  # noqa: E402


def build_tower(small: bool):
    """The XLM-RoBERTa-Large M-CLIP tower (random weights) as engine.text_towers builds it."""
    from transformers import AutoModel, XLMRobertaConfig

    from cliplab.engine.text_towers import MeanPoolTower

    shape = (dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                  vocab_size=30000) if small else
             dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  vocab_size=250002))
    config = XLMRobertaConfig(max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
                              bos_token_id=0, eos_token_id=2, **shape)
    torch.manual_seed(0)
    transformer = AutoModel.from_config(config, add_pooling_layer=False).eval()
    proj = torch.nn.Linear(config.hidden_size, 512)
    return MeanPoolTower(transformer, proj, config.pad_token_id, 512).eval()


def paired_model(tower):
    """The tower paired with a small image model (only the text side is timed)."""
    from cliplab.engine.text_towers import PairedCLIP, TextTower

    image = CLIP(embed_dim=512, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16,
                 context_length=77, vocab_size=49408, transformer_width=64, transformer_layers=1).eval()
    image.name = "image"
    text = TextTower(tower, tokenizer=None, name="XLM-Roberta-Large (random)", fingerprint="bench-xlmr-large-random",
                     family="M-CLIP")
    return PairedCLIP(image, text)


class Int8Graph:
    """The tower's int8 graph (engine.runtime.quantized_onnx) run as OnnxEncoder runs a text graph."""

    def __init__(self, model, threads: int) -> None:
        import onnxruntime as ort

        from cliplab.engine.runtime import quantized_onnx
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
        self.session = ort.InferenceSession(str(quantized_onnx(model, "text")), options,
                                            providers=["CPUExecutionProvider"])
        self.pad = model.text.pad_token_id

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        from cliplab.engine.text_towers import valid_length
        cut = tokens[:, :valid_length(tokens, self.pad)].numpy()
        return torch.from_numpy(self.session.run(None, {"tokens": cut})[0])


def queries(count: int, vocab: int, pad: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for i in range(count):
        length = 6 + (i * 7) % 19  # 6 to 24 tokens with BOS and EOS
        ids = torch.randint(5, vocab, (1, length), generator=generator)
        ids[0, 0], ids[0, -1] = 0, 2
        out.append(torch.cat([ids, torch.full((1, 77 - length), pad)], dim=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="a small config, to check the script quickly")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("CLIPLAB_HOME", tempfile.mkdtemp(prefix="cliplab-bench-"))
    # the int8 gate is measured here, not read from this machine's cache
    os.environ.setdefault("CLIPLAB_MACHINE_CACHE", tempfile.mkdtemp(prefix="cliplab-bench-machine-"))
    import_transformers_models()
    from cliplab.engine.runtime import OnnxEncoder, TorchEncoder, text_int8_safe

    tower = build_tower(args.small)
    model = paired_model(tower)
    encoders = {"transformers fp32 (exact)": TorchEncoder(model, "fp32", kernels="blas"),
                "onnx-fp32": OnnxEncoder(model, "onnx-fp32", threads=args.threads),
                "onnx-int8 graph": Int8Graph(model, args.threads)}
    batch = queries(args.queries, tower.vocab_rows, tower.pad_token_id)
    with torch.inference_mode():
        reference = [encoders["transformers fp32 (exact)"].encode_text(q) for q in batch[:8]]
    cosines = {}
    for name, encoder in encoders.items():  # also the warm-up (and the export, once)
        got = [encoder.encode_text(q) for q in batch[:8]]
        cosines[name] = min(float(torch.nn.functional.cosine_similarity(a, b).min()) for a, b in zip(got, reference))
    times = {name: [] for name in encoders}
    for query in batch:
        for name, encoder in encoders.items():
            start = time.perf_counter()
            encoder.encode_text(query)
            times[name].append(time.perf_counter() - start)
    print(f"CPU: {cpu_summary()}, {args.threads} threads; {len(batch)} queries of 6-24 tokens, one at a time; "
          f"{'small config' if args.small else 'XLM-RoBERTa-Large (560M parameters)'}, random weights")
    safe = text_int8_safe(model)
    from cliplab.engine.runtime import _read_choices
    gate = next(v for k, v in _read_choices().items() if k.startswith("text-int8-"))
    print(f"int8 text gate (32 probe texts): min cosine {gate['cosine']:.6f} -> "
          f"{'int8 taken in onnx-int8' if safe else 'the text stays fp32 in onnx-int8'}")
    base = statistics.median(times["transformers fp32 (exact)"])
    print("| mode | p50 ms | p95 ms | p50 vs transformers | min cosine to fp32 |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        values = sorted(values)
        p50, p95 = statistics.median(values), values[min(len(values) - 1, int(0.95 * len(values)))]
        print(f"| {name} | {1000 * p50:.1f} | {1000 * p95:.1f} | {base / p50:.2f}x | {cosines[name]:.6f} |")


if __name__ == "__main__":
    main()
