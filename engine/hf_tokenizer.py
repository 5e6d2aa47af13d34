"""A Hugging Face tokenizer behind the interface of cliplab's CLIP tokenizer.

Multilingual text towers (M-CLIP's XLM-RoBERTa and LaBSE, open_clip's xlm-roberta CLIPs, MetaCLIP 2's
XLM-V vocabulary) tokenize with a `transformers` tokenizer read from the release's folder, not with
CLIP's BPE. This wrapper gives them the call every text path already makes, `tokenizer(texts,
context_length=None, truncate=False) -> LongTensor [n, context_length]`, and cleans text as open_clip's
HFTokenizer does with clean="whitespace" (ftfy, HTML unescaped twice, whitespace collapsed, case kept),
so that token ids equal the reference's.

Too long: like CLIP's tokenizer, an error naming the text unless truncate=True, which cuts it keeping
the tokenizer's own end token last. Padding uses the tokenizer's pad id (`pad_token_id`), which the
towers read to build their attention masks.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import ftfy
import torch

from cliplab.engine.errors import CliplabError


def clean_text(text: str) -> str:
    """open_clip's 'whitespace' cleaning: ftfy, HTML unescaped twice, whitespace collapsed; case kept."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split())


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HFTokenizer:
    """Token ids from a `transformers` tokenizer, padded to the context length."""

    def __init__(self, source: str | Path | Any, context_length: int = 77, strip_sep_token: bool = False) -> None:
        """source: a folder holding the tokenizer's files (tokenizer.json, sentencepiece model, ...) or a
        ready `transformers` tokenizer. strip_sep_token: replace the separator token by 0, as open_clip
        does for towers trained that way."""
        if isinstance(source, str | Path):
            folder = Path(source)
            if not folder.is_dir():
                raise CliplabError(f"The tokenizer folder {folder} does not exist. Download the release again, "
                                   "or name the folder that holds its tokenizer files.")
            from transformers import AutoTokenizer

            try:
                source = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError) as error:
                raise CliplabError(f"The tokenizer files in {folder} cannot be read ({error}). Download the "
                                   "release again.") from error
        self.hf = source
        self.context_length = int(context_length)
        self.strip_sep_token = strip_sep_token
        if self.hf.pad_token_id is None:
            raise CliplabError("The tokenizer has no padding token, so texts of different lengths cannot be "
                               "batched. Use the tokenizer files published with the release.")

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def pad_token_id(self) -> int:
        return int(self.hf.pad_token_id)

    @property
    def eot_token(self) -> int:
        """The id that ends a text (the separator or end-of-sequence token)."""
        for token_id in (self.hf.sep_token_id, self.hf.eos_token_id):
            if token_id is not None:
                return int(token_id)
        raise CliplabError("The tokenizer has no end token.")

    def encode(self, text: str) -> list[int]:
        """Ids of the text's tokens without special tokens."""
        return list(self.hf(clean_text(text), add_special_tokens=False)["input_ids"])

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.hf.decode(list(ids), skip_special_tokens=True).strip()

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None,
                 truncate: bool = False) -> torch.LongTensor:
        """[n, context_length] ids with the tokenizer's special tokens, padded with its pad id."""
        if isinstance(texts, str):
            texts = [texts]
        length = self.context_length if context_length is None else int(context_length)
        if length < 2:
            raise CliplabError(f"The context length must be at least 2 tokens, not {length}.")
        cleaned = [clean_text(text) for text in texts]
        if any(not text for text in cleaned):
            raise CliplabError("A text is empty (or only spaces): a multilingual text tower has nothing to embed "
                               "for it; type some words.")
        if not truncate:
            full = self.hf(cleaned, truncation=False)["input_ids"]
            for text, ids in zip(texts, full, strict=True):
                if len(ids) > length:
                    raise CliplabError(
                        f'The text "{_shorten(text)}" is {len(ids)} tokens long with its special tokens, more '
                        f"than the text tower's limit of {length}. Shorten it, or pass truncate=True to cut it "
                        "to fit.")
        ids = self.hf(cleaned, return_tensors="pt", max_length=length, padding="max_length",
                      truncation=True)["input_ids"].long()
        if self.strip_sep_token and self.hf.sep_token_id is not None:
            ids = torch.where(ids == self.hf.sep_token_id, torch.zeros_like(ids), ids)
        return ids
