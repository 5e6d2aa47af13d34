"""From-scratch BPE: hand-checked merges, the official format, and a round trip through the engine tokenizer."""

from __future__ import annotations

import gzip

from cliplab.engine.tokenizer import Tokenizer, clean_text
from cliplab.trainer.bpe import train_bpe, word_counts, write_merges
from cliplab.trainer.demo.world import World


def test_merges_of_the_textbook_example():
    # low x5, lower x2, newest x6, widest x3 (Sennrich et al.). Worked by hand: (e,s) and (s,t</w>)
    # tie at 9 -> the smaller pair; then es+t</w> (9); l+o (7); e,w / n,e / w,est</w> tie at 6 -> (e,w);
    # then ew+est</w> and n+ewest</w> (6 each, smaller first); lo+w</w> (5).
    text = "low " * 5 + "lower " * 2 + "newest " * 6 + "widest " * 3
    assert train_bpe([text], 7) == [("e", "s"), ("es", "t</w>"), ("l", "o"), ("e", "w"),
                                    ("ew", "est</w>"), ("n", "ewest</w>"), ("lo", "w</w>")]
    # min_count stops the training: no pair occurs twice after these.
    assert len(train_bpe([text], 100)) < 20


def test_words_are_split_and_byte_encoded_like_the_tokenizer():
    counts = word_counts(["A  Cat's &amp; DOG!!", "café <|endoftext|>"])
    assert counts == {"a": 1, "cat": 1, "'s": 1, "&": 1, "dog": 1, "!!": 1, "cafÃ©": 1}


def test_trained_vocabulary_round_trips_through_the_engine_tokenizer(tmp_path):
    corpus = World(seed=0).caption_corpus(2000) + ["Café naïve 東京 — 42 cats!"] * 3
    merges = train_bpe(corpus, 400)
    assert len(merges) == len(set(merges)) > 100
    path = write_merges(merges, tmp_path / "vocab.txt.gz")
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert lines[0].startswith("#version") and lines[1] == " ".join(merges[0])
    tokenizer = Tokenizer(path)
    assert tokenizer.vocab_size == 512 + len(merges) + 2 and tokenizer.eot_token == tokenizer.vocab_size - 1
    for text in corpus[:50] + ['the word "cat" written in red.', "Café naïve 東京 — 42 cats!"]:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids).replace(" ", "") == clean_text(text).replace(" ", "")
    # Frequent caption words became single tokens; the tokens are far fewer than the characters.
    assert tokenizer.encode("circle") == [tokenizer.encoder["circle</w>"]]
    caption = corpus[0]
    assert len(tokenizer.encode(caption)) <= len(caption) / 3


def test_training_is_deterministic_and_order_independent():
    corpus = World(seed=1).caption_corpus(500)
    assert train_bpe(corpus, 150) == train_bpe(list(reversed(corpus)), 150)
