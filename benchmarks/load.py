"""Time engine.load on a converted ViT-B/32 (random weights saved in our safetensors format).

    python benchmarks/load.py [--repeats 5] [--fp16-storage]

Reports the whole engine.load call (read weights, build the model, copy the weights in, build the
tokenizer and preprocess) and its parts; the first call in a fresh process is timed separately.
--fp16-storage stores the weights as fp16, as a converted official download does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from cliplab import engine
from cliplab.engine import weights
from cliplab.engine.model import CLIP, convert_weights
from cliplab.engine.tokenizer import Tokenizer


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fp16-storage", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        model = CLIP.from_name("ViT-B/32")
        if args.fp16_storage:
            convert_weights(model, torch.float16)
        folder = weights.save_model(model, Path(tmp) / "ViT-B-32")
        size = (folder / weights.WEIGHTS_FILE).stat().st_size
        del model
        _, first = timed(lambda: engine.load(folder, device="cpu"))
        totals, parts = [], {"read safetensors": [], "build + copy weights": [], "tokenizer": []}
        for _ in range(args.repeats):
            _, total = timed(lambda: engine.load(folder, device="cpu"))
            totals.append(total)
            checkpoint, t = timed(lambda: weights.read_checkpoint(folder))
            parts["read safetensors"].append(t)
            parts["build + copy weights"].append(timed(lambda c=checkpoint: weights.model_from_checkpoint(c))[1])
            parts["tokenizer"].append(timed(lambda: Tokenizer(None))[1])
    load = os.getloadavg()[0]
    print(f"ViT-B/32, {size / 1e6:.0f} MB {'fp16' if args.fp16_storage else 'fp32'} safetensors, "
          f"{torch.get_num_threads()} threads, load average {load:.1f}")
    print(f"engine.load, first call in the process: {first:.2f} s")
    print(f"engine.load, repeated: median {statistics.median(totals):.2f} s, best {min(totals):.2f} s "
          f"({args.repeats} runs)")
    for name, values in parts.items():
        print(f"  {name}: median {statistics.median(values):.2f} s")


if __name__ == "__main__":
    main()
