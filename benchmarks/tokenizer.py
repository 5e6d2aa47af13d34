"""Tokenizer throughput: cliplab vs open_clip on 100k prompts like "a photo of a {classname}.", one run.

    python benchmarks/tokenizer.py [--prompts 100000] [--rounds 3]

Class names are made up from adjectives and nouns (some with accents or CJK, so ftfy's path runs
too) and filled into ten templates: every prompt is distinct, words repeat as in a real prompt
ensemble. "cold" is a fresh Tokenizer's first call (empty caches); "warm" repeats the same texts.
Both produce [n, 77] tensors and the outputs are checked to be identical. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from oracles import import_open_clip, official_merges_file  # noqa: E402

from cliplab.engine.tokenizer import Tokenizer  # noqa: E402

TEMPLATES = ["a photo of a {}.", "a bad photo of the {}.", "a close-up photo of a {}.", "a drawing of a {}.",
             "itap of a {}.", "a photo of the large {}.", "a blurry photo of a {}.", "a sculpture of a {}.",
             "a rendering of the {}.", "a photo of my {}."]
ADJECTIVES = ["red", "small", "golden", "spotted", "wild", "arctic", "giant", "striped", "old", "electric",
              "wooden", "crested", "northern", "pygmy", "common", "royal", "black-footed", "two-toed",
              "great", "lesser", "broad-billed", "snowy", "dwarf", "mountain", "sea", "desert", "tufted",
              "long-eared", "french", "crème", "jalapeño", "bavarian", "東京", "sacred", "flying", "hairy",
              "banded", "rock", "fire", "ice", "brown", "white", "tiny", "spiny", "blue"]
NOUNS = """cat dog fox wolf bear hare owl eagle heron finch sparrow robin falcon salmon trout shark whale
dolphin seal otter beaver lynx tiger lion leopard jaguar panther cougar bison moose elk deer antelope
gazelle zebra horse donkey camel llama alpaca goat sheep ram pig boar rabbit squirrel chipmunk mouse
rat hamster gerbil ferret mink weasel badger skunk raccoon opossum koala kangaroo wallaby wombat
platypus echidna sloth armadillo anteater lizard gecko iguana chameleon snake python cobra viper
turtle tortoise frog toad newt salamander beetle ant bee wasp hornet moth butterfly dragonfly spider
scorpion crab lobster shrimp octopus squid jellyfish starfish urchin coral sponge snail slug worm
mushroom fern moss oak maple pine birch willow cedar palm cactus tulip rose daisy lily orchid violet
poppy sunflower lotus car truck bus train tram bicycle scooter motorcycle airliner helicopter glider
canoe kayak yacht ferry submarine rocket tractor bulldozer crane forklift ambulance taxi limousine
guitar violin cello piano drum trumpet flute harp banjo accordion lamp chair table sofa bed desk
clock mirror vase bowl cup mug plate spoon fork knife kettle teapot toaster blender oven fridge
umbrella backpack suitcase wallet watch ring necklace hat scarf glove boot sandal sneaker jacket
coat dress skirt shirt tie sock pizza burger taco burrito sushi ramen dumpling bagel croissant
pretzel donut muffin pancake waffle omelette salad soup curry risotto lasagna espresso latte""".split()


def make_prompts(n: int, seed: int = 0) -> list[str]:
    names = [f"{a} {b}" for a, b in itertools.product(ADJECTIVES, NOUNS)] + NOUNS
    random.Random(seed).shuffle(names)
    prompts = [t.format(name) for name, t in itertools.product(names, TEMPLATES)]
    assert len(prompts) >= n, "not enough distinct prompts"
    return prompts[:n]


def timed(fn, rounds: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds (CPU time is steadier when other jobs share the cores)."""
    walls, cpus, result = [], [], None
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    prompts = make_prompts(args.prompts)
    merges = official_merges_file()
    open_clip = import_open_clip()
    reference = open_clip.tokenizer.SimpleTokenizer(str(merges))

    load_s, _, _ = timed(lambda: Tokenizer(merges), args.rounds)
    ref = timed(lambda: reference(prompts), args.rounds)
    fresh = iter([Tokenizer(merges) for _ in range(args.rounds)])  # built outside the timing
    cold = timed(lambda: next(fresh)(prompts), args.rounds)
    warm_tokenizer = Tokenizer(merges)
    warm_tokenizer(prompts)
    warm = timed(lambda: warm_tokenizer(prompts), args.rounds)
    assert all(torch.equal(out, ref[2]) for _, _, out in (cold, warm)), "outputs differ from open_clip"

    n = len(prompts)
    print(f"{n} prompts ({sum(not p.isascii() for p in prompts)} non-ASCII), median of {args.rounds} rounds, "
          f"outputs identical to open_clip\n")
    print("| tokenizer | wall s | CPU s | prompts/s (wall) | vs open_clip (wall) | vs open_clip (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [("open_clip SimpleTokenizer (its word cache warm after round 1)", ref),
            ("cliplab, cold (fresh Tokenizer, empty caches)", cold),
            ("cliplab, warm (same texts again)", warm)]
    for name, (wall, cpu, _) in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {n / wall:,.0f} | {ref[0] / wall:.1f}x | {ref[1] / cpu:.1f}x |")
    print(f"\nLoading the official vocabulary: {load_s:.2f} s")

if __name__ == "__main__":
    main()
