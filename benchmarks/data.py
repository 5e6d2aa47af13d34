"""Throughput of the synthetic world, the synthetic training stream, and BPE training.

Run: python benchmarks/data.py
"""

from __future__ import annotations

import random
import time

import numpy as np

from cliplab.engine.images import Preprocess
from cliplab.engine.tokenizer import Tokenizer
from cliplab.trainer.bpe import train_bpe
from cliplab.trainer.data import Batches, build_dataset
from cliplab.trainer.demo.world import World


def main() -> None:
    world = World(seed=0)
    world.sample(100)
    start = time.perf_counter()
    world.sample(2000, rng=np.random.default_rng(1))
    print(f"synthetic images (64 px, PIL): {2000 / (time.perf_counter() - start):.0f} samples/s (1 process)")

    corpus_start = time.perf_counter()
    corpus = world.caption_corpus(50_000)
    print(f"caption corpus of {len(corpus)}: {time.perf_counter() - corpus_start:.1f} s")
    start = time.perf_counter()
    merges = train_bpe(corpus, 2000)
    print(f"BPE on the synthetic corpus: {len(merges)} merges (vocabulary exhausted) in {time.perf_counter() - start:.1f} s")
    rnd = random.Random(0)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 10))) for _ in range(20_000)]
    weights = [1 / (i + 1) for i in range(len(words))]
    texts = [" ".join(rnd.choices(words, weights=weights, k=12)) for _ in range(50_000)]
    start = time.perf_counter()
    merges = train_bpe(texts, 2000)
    print(f"BPE on 50k Zipf captions of 20k random words: {len(merges)} merges in {time.perf_counter() - start:.1f} s")

    path = "/tmp/cliplab_bench_merges.txt"
    from cliplab.trainer.bpe import write_merges
    write_merges(train_bpe(corpus, 1000), path)
    tokenizer = Tokenizer(path)
    for workers in (0, 2):
        dataset = build_dataset("synthetic", Preprocess(64), world=world, epoch_size=2048)
        start = time.perf_counter()
        n = sum(len(images) for images, _ in Batches(dataset, 64, tokenizer=tokenizer, num_workers=workers).epoch(0))
        print(f"synthetic training stream, {workers} workers: {n / (time.perf_counter() - start):.0f} samples/s "
              "(images + crop + tokens, incl. worker start)")


if __name__ == "__main__":
    main()
