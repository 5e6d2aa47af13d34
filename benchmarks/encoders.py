"""Image and text encoder throughput: cliplab vs open_clip vs transformers, same weights, one run.

    python benchmarks/encoders.py [--rounds 3] [--image-batch 32] [--text-batch 256]

Random ViT-B/32 weights are made once with transformers' CLIPModel, loaded into cliplab through
its Hugging Face loader and into open_clip through cliplab's (official-key) state dict, so all
three compute the same function. Prints a Markdown table of medians and ratios.

Then every inference mode of engine.runtime on the same weights and the same image batch (PyTorch
fp32 is the exact mode, through the matrix kernels measured fastest here, engine.runtime.fp32_kernels;
ONNX Runtime fp32 and int8 through cliplab's own export and quantization; bf16 with --bf16), each
timed alternating round by round with open_clip fp32 (fastest of each, so load from other processes
hits both sides), with its cosine to fp32 and how far a row moves when the same images are embedded
in batches of 7 instead of the batch (0: batch-invariant); last, the exact mode alternating with ONNX
Runtime fp32, and onnx-int8 alternating with onnx-fp32. The CPU flags and thread count head the output.
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
from oracles import import_open_clip  # noqa: E402

from cliplab import engine  # noqa: E402
from cliplab.engine.model import convert_weights  # noqa: E402
from cliplab.engine.precision import cpu_summary  # noqa: E402
from cliplab.engine.runtime import candidate_modes, make_encoder  # noqa: E402

CLASSNAMES = ["cat", "dog", "golden retriever", "tabby cat", "red fox", "sports car", "airliner", "mountain bike",
              "espresso", "pizza", "volcano", "coral reef", "lighthouse", "canoe", "umbrella", "violin"]


def timed(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_against(fn, reference, rounds: int) -> tuple[float, float]:
    """Fastest of `rounds` alternating calls of fn and reference (after a warm-up of each): on a
    shared machine a load burst then slows both, not one side of the ratio."""
    fn(), reference()
    ours, theirs = [], []
    for _ in range(rounds):
        for fn_, out in ((fn, ours), (reference, theirs)):
            start = time.perf_counter()
            fn_()
            out.append(time.perf_counter() - start)
    return min(ours), min(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-batch", type=int, default=32)
    parser.add_argument("--text-batch", type=int, default=256)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 weights (slow on AVX2-only CPUs)")
    args = parser.parse_args()
    os.environ.setdefault("CLIPLAB_HOME", tempfile.mkdtemp(prefix="cliplab-bench-"))  # exports of random weights
    open_clip = import_open_clip()  # first: it makes torchvision importable, which transformers also needs
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12,
                         max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu",
                         eos_token_id=49407, bos_token_id=49406, pad_token_id=0),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                           image_size=224, patch_size=32, hidden_act="quick_gelu"),
        projection_dim=512)
    hf = CLIPModel(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours, _, tokenizer = engine.load(folder)
    reference = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    reference.load_state_dict(ours.state_dict())

    images = torch.randn(args.image_batch, 3, 224, 224)
    prompts = [f"a photo of a {CLASSNAMES[i % len(CLASSNAMES)]}." for i in range(args.text_batch)]
    tokens = tokenizer(prompts)
    rows = []
    with torch.inference_mode():
        ref_image = reference.encode_image(images)
        ref_text = reference.encode_text(tokens)
        cos_image = torch.nn.functional.cosine_similarity(ours.encode_image(images), ref_image).min().item()
        diff_text = (ours.encode_text(tokens) - ref_text).abs().max().item()
        t_ref_img = timed(lambda: reference.encode_image(images), args.rounds)
        t_hf_img = timed(lambda: hf.get_image_features(pixel_values=images), args.rounds)
        t_our_img = timed(lambda: ours.encode_image(images), args.rounds)
        rows.append((f"image, batch {args.image_batch}, fp32", t_our_img, t_ref_img, t_hf_img, f"cos {cos_image:.6f}"))
        t_ref_txt = timed(lambda: reference.encode_text(tokens), args.rounds)
        t_hf_txt = timed(lambda: hf.get_text_features(input_ids=tokens), args.rounds)
        t_our_txt = timed(lambda: ours.encode_text(tokens), args.rounds)
        rows.append((f"text, batch {args.text_batch}, fp32", t_our_txt, t_ref_txt, t_hf_txt, f"max abs diff {diff_text:.1e}"))
        encoders, exact_vs_onnx = {}, ""
        for mode in candidate_modes(torch.device("cpu")):
            if mode == "bf16" and not args.bf16:
                continue
            encoder = encoders[mode] = make_encoder(ours, mode)
            cos = torch.nn.functional.cosine_similarity(encoder.encode_image(images), ref_image).min().item()
            whole = encoder.encode_image(images)
            by_7 = torch.cat([encoder.encode_image(images[i:i + 7]) for i in range(0, len(images), 7)])
            moved = (whole - by_7).abs().max().item() / whole.abs().max().item()
            t_mode, t_ref_pair = timed_against(lambda enc=encoder: enc.encode_image(images),
                                               lambda: reference.encode_image(images), args.rounds)
            label = "exact mode, PyTorch fp32 through " + encoder.kernels if mode == "fp32" else mode
            rows.append((f"image, batch {args.image_batch}, {label} (min of {args.rounds}, alternating with "
                         f"open_clip: {t_ref_pair:.3f} s)", t_mode, t_ref_pair, t_hf_img,
                         f"cos {cos:.6f}; batches of 7 move a row by {moved:.1e} of the largest feature"))
        exact = encoders["fp32"]
        if exact.kernels != "blas":  # the text tower too: zero-shot classifiers and audits embed many prompts
            diff = (exact.encode_text(tokens) - ref_text).abs().max().item()
            t_mode, t_ref_pair = timed_against(lambda: exact.encode_text(tokens), lambda: ours.encode_text(tokens),
                                               args.rounds)
            rows.append((f"text, batch {args.text_batch}, exact mode through {exact.kernels} (min of {args.rounds}, "
                         f"alternating with cliplab through PyTorch's BLAS: {t_ref_pair:.3f} s)", t_mode, t_ref_txt,
                         t_hf_txt, f"max abs diff {diff:.1e}"))
        if "onnx-fp32" in encoders:  # the target: the exact mode at least as fast as ONNX Runtime fp32
            t_exact, t_onnx = timed_against(lambda: exact.encode_image(images),
                                            lambda: encoders["onnx-fp32"].encode_image(images), args.rounds)
            exact_vs_onnx = (f"\nExact fp32 mode ({exact.kernels}) against ONNX Runtime fp32, alternating, "
                             f"min of {args.rounds}: {t_exact:.3f} s vs {t_onnx:.3f} s = {t_onnx / t_exact:.2f}x")
        if "onnx-int8" in encoders:
            t_int8, t_onnx = timed_against(lambda: encoders["onnx-int8"].encode_image(images),
                                           lambda: encoders["onnx-fp32"].encode_image(images), args.rounds)
            exact_vs_onnx += (f"\nonnx-int8 against onnx-fp32, alternating, min of {args.rounds}: {t_int8:.3f} s vs "
                              f"{t_onnx:.3f} s = {t_onnx / t_int8:.2f}x")
        if args.bf16 and "bf16" not in candidate_modes(torch.device("cpu")):
            convert_weights(ours, torch.bfloat16)
            cos_bf16 = torch.nn.functional.cosine_similarity(ours.encode_image(images).float(), ref_image).min().item()
            t_bf16 = timed(lambda: ours.encode_image(images), args.rounds)
            rows.append((f"image, batch {args.image_batch}, bf16 weights", t_bf16, t_ref_img, t_hf_img,
                         f"cos {cos_bf16:.6f}"))
    print(f"CPU flags: {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"native bf16: {engine.precision.cpu_has_native_bf16()}\n")
    print("| workload | cliplab s | open_clip s | transformers s | open_clip / cliplab | transformers / cliplab | agreement |")
    print("|---|---|---|---|---|---|---|")
    for name, ours_t, ref_t, hf_t, note in rows:
        print(f"| {name} | {ours_t:.3f} | {ref_t:.3f} | {hf_t:.3f} | {ref_t / ours_t:.2f}x | {hf_t / ours_t:.2f}x | {note} |")
    if exact_vs_onnx:
        print(exact_vs_onnx)


if __name__ == "__main__":
    main()
