"""Train a byte-level BPE vocabulary from captions, in the official CLIP tokenizer's own space.

Texts go through the engine tokenizer's cleaning (ftfy, HTML unescape, whitespace, lower case)
and its regex pre-split; each piece is mapped byte by byte with the same byte-to-unicode table
and its last symbol carries `</w>`. Merges are learned greedily by pair frequency (weighted by
word counts), ties broken by the lexicographically smallest pair, so training is deterministic.
The result, written with `write_merges` (official format), loads in `engine.tokenizer.Tokenizer`:
vocab = 256 bytes + 256 bytes with `</w>` + merges + SOT + EOT.

Pair counts are updated incrementally: a merge touches only the words that hold the pair.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from cliplab.engine.tokenizer import _PATTERN, EOT_TEXT, SOT_TEXT, bytes_to_unicode, clean_text, write_merges

__all__ = ["train_bpe", "word_counts", "write_merges", "train_vocabulary"]


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """Byte-encoded pre-split words of the texts and how often each occurs."""
    byte_encoder = bytes_to_unicode()
    counts: Counter[str] = Counter()
    for text, repeats in Counter(texts).items():  # captions repeat: clean and split each once
        for piece in _PATTERN.findall(clean_text(text)):
            if piece not in (SOT_TEXT, EOT_TEXT):  # special tokens are never merged
                counts["".join(byte_encoder[b] for b in piece.encode("utf-8"))] += repeats
    return counts


def _pairs(symbols: list[str]) -> Counter[tuple[str, str]]:
    return Counter(zip(symbols, symbols[1:]))


def _merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """Merge every occurrence of pair, left to right without overlap (as the tokenizer applies it)."""
    first, second = pair
    out, i = [], 0
    while i < len(symbols):
        if i < len(symbols) - 1 and symbols[i] == first and symbols[i + 1] == second:
            out.append(first + second)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def train_bpe(texts: Iterable[str], num_merges: int, min_count: int = 2,
              progress: bool = False) -> list[tuple[str, str]]:
    """Up to num_merges merges, most frequent pair first; stops early when no pair occurs min_count times."""
    counts = word_counts(texts)
    words = [list(w[:-1]) + [w[-1] + "</w>"] for w in counts]
    freqs = list(counts.values())
    pair_counts: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for index, (symbols, freq) in enumerate(zip(words, freqs)):
        for pair, n in _pairs(symbols).items():
            pair_counts[pair] += n * freq
            where[pair].add(index)
    # Max-heap on (count, smallest pair first) with lazy deletion: stale entries are skipped on pop.
    heap = [(-n, pair) for pair, n in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    bar = tqdm(total=num_merges, desc="BPE merges", unit="merge", disable=not progress)
    while len(merges) < num_merges and heap:
        negative, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative:
            continue
        if -negative < min_count:
            break
        merges.append(pair)
        bar.update()
        changed: set[tuple[str, str]] = set()
        for index in where.pop(pair):
            symbols = words[index]
            if pair not in zip(symbols, symbols[1:]):
                continue  # a stale entry: an earlier merge already consumed this pair here
            merged = _merge(symbols, pair)
            freq = freqs[index]
            for p, n in _pairs(symbols).items():
                pair_counts[p] -= n * freq
                changed.add(p)
            for p, n in _pairs(merged).items():
                pair_counts[p] += n * freq
                where[p].add(index)
                changed.add(p)
            words[index] = merged
        for p in changed:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                del pair_counts[p]
    bar.close()
    return merges


def train_vocabulary(texts: Iterable[str], num_merges: int, path: str | Path, min_count: int = 2) -> Path:
    """Train merges on texts and write them in the official format; returns the merges file."""
    return write_merges(train_bpe(texts, num_merges, min_count=min_count), path)
