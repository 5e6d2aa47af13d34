"""The tokenizer gives open_clip's ids exactly, loads any merges file in the official format, and fails clearly."""

from __future__ import annotations

import gzip
import random
import shutil

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from oracles import import_open_clip, official_merges_file, official_merges_lines

import cliplab.engine.tokenizer as tokenizer_module
from cliplab.engine.errors import CliplabError
from cliplab.engine.tokenizer import (
    MAX_MERGES,
    Tokenizer,
    clean_text,
    official_merges_path,
    read_merges,
    tokenize,
    write_merges,
)

WORDS = ["a", "photo", "of", "the", "cat", "dog", "diagram", "Golden", "RETRIEVER", "sea-lion", "t-shirt",
         "rock'n'roll", "don't", "it's", "we're", "they've", "i'm", "you'll", "he'd", "O'Neil", "x-ray",
         "iPhone", "McDonald's", "naïve", "café", "crème", "brûlée", "jalapeño", "Zürich", "Ångström", "straße",
         "東京", "猫", "写真", "고양이", "кошка", "γάτα", "قطة", "बिल्ली", "🐱", "🐶🐕", "👍🏽", "❤️", "🇫🇷",
         "2024", "3.14", "1,000", "42nd", "½", "①", "٣", "&amp;", "&lt;b&gt;", "&amp;amp;", "&quot;hi&quot;",
         "&#39;", "&eacute;", "AT&T", "R&D", "<b>", "...", "?!", "--", "(test)", "[x]", "#tag", "@user",
         "e-mail", "https://example.com/a?b=c", "ﬁne", "ｆｕｌｌ", "cafÃ©", "â€œquotedâ€\x9d", "\u00a0nbsp",
         "zero\u200bwidth", "tab\there", "CR\r\nLF", "ctrl\x07bell", "esc\x1b[31m", "ǅ", "İstanbul", "ß"]
SPACES = [" ", " ", " ", "  ", "\t", "\n", " \n\t ", "\u3000", "\u2003", ""]


@pytest.fixture(scope="module")
def open_clip():
    return import_open_clip()


@pytest.fixture(scope="module")
def reference(open_clip):
    return open_clip.tokenizer.SimpleTokenizer()


@pytest.fixture(scope="module")
def ours() -> Tokenizer:
    return Tokenizer(official_merges_file())


def generated_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(1, 12))
        if rng.random() < 0.3:
            words = [w.upper() if rng.random() < 0.5 else w.title() for w in words]
        text = "".join(w + rng.choice(SPACES) for w in words)
        texts.append(rng.choice(["", " ", "  "]) + text)
    texts += ["a photo of a " + " ".join(rng.choices(WORDS, k=60)) for _ in range(50)]  # over 77 tokens
    return texts


def test_known_vectors():
    ids = tokenize(["a photo of a cat.", "a diagram"])
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    assert ids[1, :4].tolist() == [49406, 320, 22697, 49407]
    assert ids[0, 8:].eq(0).all() and ids[1, 4:].eq(0).all()


def test_official_vocabulary_layout(ours):
    assert ours.vocab_size == 49408 and ours.sot_token == 49406 and ours.eot_token == 49407
    assert ours.merges_path == official_merges_file()
    assert tokenize("x", context_length=5).shape == (1, 5)


def test_same_ids_as_open_clip_on_thousands_of_strings(ours, reference, open_clip):
    texts = generated_texts(3000)
    for text in texts:
        assert ours.encode(text) == reference.encode(text), repr(text)
    # Whole tensors, with open_clip's truncation (it always truncates, keeping EOT last).
    assert torch.equal(ours(texts, truncate=True), open_clip.tokenize(texts))
    assert torch.equal(ours(texts[:200], context_length=20, truncate=True),
                       open_clip.tokenize(texts[:200], context_length=20))


@pytest.mark.parametrize("text", [
    "&amp; &lt; &gt; &amp;amp; &amp;amp;amp;lt; &#x27;&#39; &nbsp;x &copy; 5 &lt 6",
    "it's the cat's toy; don't, we're, they've, I'm, you'll, he'd, 'S 'T 'RE",
    "0123456789 3.14159 1e10 ¹²³ ٠١٢ 〇",
    "🐱🐶🦄 👩‍👩‍👧 🏳️‍🌈 ☃ ✓",
    "东京的猫 日本語のテキスト 한국어 텍스트",
    "àéîõü ÀÉÎÕÜ naïve façade cœur Œuvre",
    "  many   spaces\t\ttabs\n\nnewlines \u3000 ideographic\u00a0nbsp  ",
    "MiXeD CaSe WoRdS",
    "",
    "   ",
])
def test_categories_match_open_clip(ours, reference, open_clip, text):
    assert ours.encode(text) == reference.encode(text)
    assert torch.equal(ours(text), open_clip.tokenize(text))


def test_truncation_keeps_eot_last_like_open_clip(ours, open_clip):
    text = " ".join(f"word{i}" for i in range(100))
    cut = ours(text, truncate=True)
    assert torch.equal(cut, open_clip.tokenize(text))
    assert cut[0, 0] == ours.sot_token and cut[0, -1] == ours.eot_token
    assert cut[0, 1:-1].tolist() == ours.encode(text)[:75]
    exact = "a " * 75  # 75 tokens + SOT + EOT fills 77 exactly: no error
    assert ours(exact)[0, -1] == ours.eot_token


def test_too_long_text_is_a_clear_error(ours):
    text = "a photo of " + "very " * 100 + "long text"
    with pytest.raises(CliplabError) as raised:
        ours([text, "short"])
    message = str(raised.value)
    assert "a photo of very very" in message and "..." in message and len(message) < 300
    assert f"{len(ours.encode(text)) + 2} tokens" in message
    assert "77" in message and "truncate=True" in message


def test_special_token_text_maps_to_its_id_as_the_reference(ours):
    # openai/CLIP's regex matches the literal special tokens (open_clip renamed them, so not compared).
    assert ours.encode("a <|endoftext|> b") == [320, ours.eot_token, 321]
    assert ours.encode("<|startoftext|>") == [ours.sot_token]


def test_decode_skips_special_tokens_and_padding(ours):
    ids = ours(["a photo of a cat!!", "hi!"])
    assert ours.decode(ids[0]) == "a photo of a cat !!"
    assert ours.decode(ids[1].tolist()) == "hi !"
    assert ours.decode(ours.encode("!!")) == "!!"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_never_crashes_and_matches_open_clip(ours, reference, text):
    row = ours(text, truncate=True)[0]
    assert row[0] == ours.sot_token
    n = int(row.ne(0).nonzero().max()) + 1
    assert row[n - 1] == ours.eot_token and row[n:].eq(0).all()
    # The literal special tokens are the one known divergence (see the test above): openai/CLIP
    # maps them to their ids, open_clip 3 spells them out.
    if not any(token in text.lower() for token in ("<|startoftext|>", "<|endoftext|>")):
        assert ours.encode(text) == reference.encode(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=15), min_size=1, max_size=10))
def test_round_trip_lower_case_ascii_words(ours, words):
    text = " ".join(words)
    assert ours.decode(ours.encode(text)) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from([chr(c) for c in range(128)]), max_size=80))
def test_ascii_fast_paths_match_the_reference(open_clip, reference, ours, text):
    # clean_text skips ftfy for printable ASCII without '&', and ASCII text is split by an ASCII regex.
    assert clean_text(text) == open_clip.tokenizer._clean_lower(text)
    # A literal "<|endoftext|>" (any case: text is lower-cased) is OpenAI's special token, which open_clip's
    # tokenizer names "<end_of_text>"; OpenAI's reference is the one cliplab follows there.
    cleaned = clean_text(text)
    assume("<|startoftext|>" not in cleaned and "<|endoftext|>" not in cleaned)
    assert ours.encode(text) == reference.encode(text)


def test_a_literal_special_token_in_any_case_is_the_special_token_as_in_openais_reference(ours):
    assert ours.encode("<|ENDOFTEXT|>") == ours.encode("<|endoftext|>") == [ours.eot_token]


def test_text_and_word_caches_do_not_change_results(ours):
    fresh = Tokenizer(official_merges_file())
    texts = generated_texts(300, seed=1)
    assert torch.equal(fresh(texts, truncate=True), fresh(texts, truncate=True))
    assert torch.equal(fresh(texts, truncate=True), ours(texts, truncate=True))
    assert fresh.encode(texts[0]) is not fresh.encode(texts[0])  # callers get their own list


@pytest.mark.parametrize("name", ["tiny.txt", "tiny.txt.gz"])
def test_hand_made_merges_file(tmp_path, name):
    text = "#version: 0.2\nc a\nca t</w>\n\n"
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    tok = Tokenizer(path, context_length=8)
    assert tok.merges_path == path
    assert tok.vocab_size == 512 + 2 + 2 and tok.sot_token == 514 and tok.eot_token == 515
    b_end = 256 + (ord("b") - ord("!"))  # "b</w>": byte symbols start at "!"
    assert tok.encode("CAT") == [513]
    assert tok.encode("cab") == [512, b_end]
    assert tok("cat cab").tolist() == [[514, 513, 512, b_end, 515, 0, 0, 0]]
    assert tok.decode(tok("cat cab")[0]) == "cat cab"


def test_fewer_official_merges_match_open_clip(tmp_path, open_clip):
    merges = [tuple(line.split()) for line in official_merges_lines()[1:1001]]
    path = write_merges(merges, tmp_path / "small.txt.gz")
    assert read_merges(path) == merges
    tok = Tokenizer(path)
    assert tok.vocab_size == 512 + 1000 + 2
    assert tok.eot_token == tok.vocab_size - 1 and tok.sot_token == tok.vocab_size - 2
    reference = open_clip.tokenizer.SimpleTokenizer(str(path))
    assert reference.vocab_size == tok.vocab_size
    texts = generated_texts(300, seed=2)
    assert torch.equal(tok(texts, truncate=True), reference(texts))
    # The ids stop below EOT, so the model's argmax pooling finds EOT.
    assert int(tok(texts, truncate=True).max()) == tok.eot_token


def test_only_the_reference_number_of_merges_is_read(tmp_path):
    lines = official_merges_lines()
    assert len(lines) - 1 > MAX_MERGES
    assert len(read_merges(official_merges_file())) == MAX_MERGES
    with pytest.raises(CliplabError, match="more than the 48894"):
        write_merges([("a", "b")] * (MAX_MERGES + 1), tmp_path / "big.txt")


def test_bad_merges_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("#version: 0.2\na b c\n")
    with pytest.raises(CliplabError, match="Line 2 of the BPE merges file"):
        Tokenizer(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("#version: 0.2\n")
    with pytest.raises(CliplabError, match="no merges"):
        Tokenizer(empty)
    with pytest.raises(CliplabError, match="Could not read"):
        Tokenizer(tmp_path / "missing.txt.gz")
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(gzip.compress(b"#version: 0.2\na b\n")[:15])
    with pytest.raises(CliplabError, match="Could not read"):
        Tokenizer(broken)


def test_official_merges_path_prefers_the_models_folder(cliplab_home, monkeypatch):
    installed = official_merges_file()
    assert official_merges_path() == installed  # nothing downloaded yet: open_clip's copy
    local = cliplab_home / "models" / "bpe_simple_vocab_16e6.txt.gz"
    shutil.copyfile(installed, local)
    assert official_merges_path() == local
    local.write_bytes(b"not the vocabulary")
    assert official_merges_path() == installed  # a corrupt download is never used
    monkeypatch.setattr(tokenizer_module, "_open_clip_dirs", lambda: [])  # as if open_clip were absent
    with pytest.raises(CliplabError, match="cliplab download vocab") as raised:
        official_merges_path()
    assert "wrong checksum" in str(raised.value)
    local.unlink()
    with pytest.raises(CliplabError, match="cliplab download vocab"):
        Tokenizer()
