"""CLIP's byte-level BPE tokenizer, exactly as the reference (openai/CLIP `simple_tokenizer.py`).

Text is cleaned (ftfy, HTML unescaped twice, whitespace collapsed), lower-cased, split by the
reference regex, each piece mapped byte by byte to printable symbols and merged by BPE rank.
Vocabulary: 256 byte symbols, the same with `</w>`, one entry per merge, then SOT and EOT, so
EOT is always the highest id (the model pools text at argmax). Any merges file in the official
format loads (gzip or plain text, a version header line first), so trained vocabularies work too.

Speed: BPE is cached per word and whole texts per tokenizer; plain printable ASCII without `&`
skips ftfy and HTML unescaping, which leave such text unchanged, and cleaned ASCII text is split
by an equivalent ASCII regex (tests check both claims against the reference).
"""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.util
import itertools
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import ftfy
import numpy as np
import regex
import torch

from cliplab.engine.errors import CliplabError
from cliplab.engine.paths import models_dir

OFFICIAL_MERGES_NAME = "bpe_simple_vocab_16e6.txt.gz"
OFFICIAL_MERGES_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
# The reference reads merges[1:49152-256-2+1]: at most this many merges after the header line.
MAX_MERGES = 49152 - 256 - 2
MERGES_HEADER = "#version: 0.2"
SOT_TEXT = "<|startoftext|>"
EOT_TEXT = "<|endoftext|>"

_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
# The same split for cleaned printable ASCII (lower case, single spaces), where the Unicode classes
# reduce to ASCII ones; the stdlib engine runs it about twice as fast.
_ASCII_PATTERN = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^ a-z0-9]+""")
# Printable ASCII (and tab/newline/CR) without '&': ftfy and html.unescape return it unchanged
# up to whitespace, which is collapsed anyway.
_PLAIN_ASCII = regex.compile(r"[\t\n\r\x20-\x25\x27-\x7e]*")
_TEXT_CACHE_SIZE = 200_000
_WORD_CACHE_SIZE = 1_000_000
# Longest cleaned text tokenized (see Tokenizer._encode_capped); a 2,000-letter word takes ~0.4 s.
MAX_TEXT_CHARS = 2_000


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """The reference map from each byte to a printable character (no whitespace/control symbols)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clean_text(text: str) -> str:
    """The reference cleaning: ftfy, HTML unescape twice, whitespace collapse, lower case."""
    if not _PLAIN_ASCII.fullmatch(text):
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def read_merges(path: str | Path) -> list[tuple[str, str]]:
    """The merges of a file in the official format (gzip or plain; header line first), at most MAX_MERGES."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        lines = raw.decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise CliplabError(f"Could not read the BPE merges file {path}: {error}. "
                           "Check the path, or re-create the file.") from error
    merges = []
    for number, line in enumerate(lines[1:], start=2):
        if len(merges) == MAX_MERGES:
            break
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise CliplabError(f"Line {number} of the BPE merges file {path} is {line[:60]!r}, not two "
                               "symbols separated by a space; is this a CLIP merges file?")
        merges.append((parts[0], parts[1]))
    if not merges:
        raise CliplabError(f"The BPE merges file {path} has no merges after its header line.")
    return merges


def write_merges(merges: Sequence[tuple[str, str]], path: str | Path) -> Path:
    """Write merges in the official format (gzip if the name ends in .gz), loadable by any CLIP tokenizer."""
    if len(merges) > MAX_MERGES:
        raise CliplabError(f"{len(merges)} merges is more than the {MAX_MERGES} a CLIP tokenizer reads; "
                           "train a smaller vocabulary.")
    path = Path(path)
    # No trailing newline: the reference reads every line after the header, an empty one included.
    text = "\n".join([MERGES_HEADER] + [f"{a} {b}" for a, b in merges])
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _open_clip_dirs() -> list[Path]:
    """Folders of an installed open_clip package, found without importing it (its import is slow)."""
    spec = importlib.util.find_spec("open_clip")
    return [Path(p) for p in spec.submodule_search_locations or []] if spec is not None else []


def official_merges_path() -> Path:
    """The official merges file: in the models folder, else in an installed open_clip (not imported)."""
    candidates = [models_dir() / OFFICIAL_MERGES_NAME] + [d / OFFICIAL_MERGES_NAME for d in _open_clip_dirs()]
    corrupt = []
    for path in candidates:
        if path.is_file():
            if _sha256(path) == OFFICIAL_MERGES_SHA256:
                return path
            corrupt.append(str(path))
    note = f" ({', '.join(corrupt)} has the wrong checksum)" if corrupt else ""
    raise CliplabError(f"The official CLIP vocabulary ({OFFICIAL_MERGES_NAME}) is not available{note}. "
                       "Run `cliplab download vocab` to fetch it.")


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Tokenizer:
    """CLIP BPE tokenizer for one merges file (the official vocabulary when merges_path is None)."""

    def __init__(self, merges_path: str | Path | None = None, context_length: int = 77) -> None:
        self._merges_path = Path(merges_path) if merges_path is not None else official_merges_path()
        self.context_length = context_length
        merges = read_merges(self._merges_path)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT_TEXT, EOT_TEXT]
        # dict(zip(...)) as the reference: a merge result seen twice keeps its later id.
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {i: s for s, i in self.encoder.items()}
        self.bpe_ranks = {m: rank for rank, m in enumerate(merges)}
        self._vocab_size = len(vocab)
        self._sot = self._vocab_size - 2
        self._eot = self._vocab_size - 1
        self._word_cache: dict[str, tuple[int, ...]] = {}
        self._text_cache: dict[str, tuple[int, ...]] = {}
        self._seed_word_cache()

    def _seed_word_cache(self) -> None:
        self._word_cache.clear()
        self._word_cache[SOT_TEXT] = (self._sot,)
        self._word_cache[EOT_TEXT] = (self._eot,)

    @property
    def sot_token(self) -> int:
        return self._sot

    @property
    def eot_token(self) -> int:
        return self._eot

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def merges_path(self) -> Path:
        return self._merges_path

    def _bpe(self, word: str) -> tuple[int, ...]:
        """Ids of one byte-encoded word: merge the lowest-ranked adjacent pair until none is known."""
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        ranks = self.bpe_ranks
        while len(parts) > 1:
            best = min(zip(parts, parts[1:]), key=lambda pair: ranks.get(pair, MAX_MERGES + 1))
            if best not in ranks:
                break
            first, second = best
            merged = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(self.encoder[p] for p in parts)

    def _encode(self, text: str) -> tuple[int, ...]:
        cached = self._text_cache.get(text)
        if cached is not None:
            return cached
        if len(self._text_cache) >= _TEXT_CACHE_SIZE:
            self._text_cache.clear()
        result = self._text_cache[text] = self._encode_cleaned(clean_text(text))
        return result

    def _encode_cleaned(self, cleaned: str) -> tuple[int, ...]:
        if cleaned.isascii() and cleaned.isprintable():
            pieces = _ASCII_PATTERN.findall(cleaned)  # printable ASCII bytes map to themselves
        else:
            byte_encoder = self.byte_encoder
            pieces = ["".join(byte_encoder[b] for b in piece.encode("utf-8")) for piece in _PATTERN.findall(cleaned)]
        ids: list[int] = []
        words = self._word_cache
        for word in pieces:
            found = words.get(word)
            if found is None:
                if len(words) >= _WORD_CACHE_SIZE:
                    self._seed_word_cache()
                found = words[word] = self._bpe(word)
            ids.extend(found)
        return tuple(ids)

    def _encode_capped(self, text: str, length: int, truncate: bool) -> tuple[int, ...]:
        """Ids of one text whose cleaned form may be at most MAX_TEXT_CHARS long. Byte-level BPE
        is quadratic in a word's length (a 100,000-letter "word" takes minutes), so a longer text is
        refused, or with truncate cut at a space before the cap: no regex piece spans a space,
        so when the cut text still fills the context its first tokens are exactly the full text's."""
        if len(text) <= MAX_TEXT_CHARS:
            return self._encode(text)
        cleaned = clean_text(text)
        if len(cleaned) <= MAX_TEXT_CHARS:
            return self._encode_cleaned(cleaned)
        if truncate:
            cut = cleaned[:MAX_TEXT_CHARS + 1].rpartition(" ")[0]
            ids = self._encode_cleaned(cut) if cut else ()
            if len(ids) >= length - 2:
                return ids
        raise CliplabError(
            f'The text "{_shorten(text)}" is {len(cleaned):,} characters long, over the {MAX_TEXT_CHARS:,} '
            f"this tokenizer reads (CLIP keeps at most {length} tokens, a few hundred characters): "
            "shorten it.")

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without the start and end tokens."""
        return list(self._encode(text))

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Text of token ids; skips SOT, EOT and trailing padding zeros. Words are joined by spaces."""
        if isinstance(ids, torch.Tensor | np.ndarray):
            ids = ids.tolist()
        ids = list(ids)
        # A word's last token always ends in </w>, so id 0 ("!" without </w>) at the end is padding.
        while ids and ids[-1] == 0:
            ids.pop()
        symbols = "".join(self.decoder[i] for i in ids if i not in (self._sot, self._eot))
        data = bytes(self.byte_decoder[c] for c in symbols)
        return data.decode("utf-8", errors="replace").replace("</w>", " ").strip()

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None,
                 truncate: bool = False) -> torch.LongTensor:
        """[n, context_length] ids: SOT, tokens, EOT, zero padding. Too long: error, or cut keeping EOT last."""
        if isinstance(texts, str):
            texts = [texts]
        length = self.context_length if context_length is None else int(context_length)
        if length < 1:
            raise CliplabError(f"The context length must be at least 1 token, not {length}.")
        rows = []
        for text in texts:
            ids = self._encode_capped(text, length, truncate)
            if len(ids) + 2 > length:
                if not truncate:
                    raise CliplabError(
                        f'The text "{_shorten(text)}" is {len(ids) + 2} tokens long with its start and end '
                        f"tokens, more than the context length of {length}. Shorten it, or pass "
                        "truncate=True to cut it to fit.")
                ids = ids[: max(length - 2, 0)]
            rows.append(ids)
        if length == 1:  # the reference keeps tokens[:1] and then sets the last one to EOT
            return torch.full((len(rows), 1), self._eot, dtype=torch.long)
        out = np.zeros((len(rows), length), dtype=np.int64)
        lengths = np.fromiter((len(r) + 2 for r in rows), dtype=np.int64, count=len(rows))
        # Fill all rows at once: flat positions of [SOT, ids..., EOT] in row-major order.
        starts = np.arange(len(rows), dtype=np.int64) * length
        positions = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        positions += np.arange(int(lengths.sum()), dtype=np.int64)
        flat = itertools.chain.from_iterable((self._sot, *r, self._eot) for r in rows)
        out.reshape(-1)[positions] = np.fromiter(flat, dtype=np.int64, count=int(lengths.sum()))
        return torch.from_numpy(out)


@lru_cache(maxsize=1)
def _official_tokenizer() -> Tokenizer:
    return Tokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = 77, truncate: bool = False) -> torch.LongTensor:
    """Tokenize with the official CLIP vocabulary (a shared, cached Tokenizer)."""
    return _official_tokenizer()(texts, context_length=context_length, truncate=truncate)
