"""engine.hf_tokenizer gives the ids open_clip's HFTokenizer gives, on a tokenizer trained here
(published vocabularies cannot be downloaded), for texts in several scripts."""

import pytest
import torch

from cliplab.engine.errors import CliplabError
from cliplab.engine.hf_tokenizer import HFTokenizer
from tests import oracles

TEXTS = ["a photo of a dog", "ein Foto von einem Hund", "一张狗的照片", "صورة كلب", "कुत्ते की तस्वीर",
         "  spaced   &amp; out  ", "🐶 emoji"]


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordPiece(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    raw.train_from_iterator(TEXTS * 20, trainer)
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", raw.token_to_id("<s>")), ("</s>", raw.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   sep_token="</s>", cls_token="<s>", unk_token="<unk>")
    folder = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(folder)
    return folder


def test_ids_equal_open_clips_hf_tokenizer(tokenizer_folder):
    oracles.import_open_clip()
    from open_clip.tokenizer import HFTokenizer as Reference

    ours = HFTokenizer(tokenizer_folder, context_length=16)
    reference = Reference(str(tokenizer_folder), context_length=16)
    assert torch.equal(ours(TEXTS), reference(TEXTS))
    assert ours(TEXTS)[0, -1] == ours.pad_token_id


def test_too_long_is_refused_by_name_or_cut_keeping_the_end_token(tokenizer_folder):
    tokenizer = HFTokenizer(tokenizer_folder, context_length=4)
    with pytest.raises(CliplabError, match="a photo of a dog.*limit of 4"):
        tokenizer("a photo of a dog")
    ids = tokenizer("a photo of a dog", truncate=True)
    assert ids.shape == (1, 4) and ids[0, -1] == tokenizer.eot_token


def test_a_missing_folder_is_a_sentence(tmp_path):
    with pytest.raises(CliplabError, match="does not exist"):
        HFTokenizer(tmp_path / "nowhere")
