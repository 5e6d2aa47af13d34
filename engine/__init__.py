"""The CLIP engine: model, tokenizer, preprocessing, weights, zero-shot, probes and audits.

Nothing here imports from trainer/, indexes/ or app/.
"""

from engine.api import available_models, load
from engine.errors import CliplabError
from engine.images import Preprocess
from engine.model import ARCHITECTURES, CLIP
from engine.tokenizer import Tokenizer, tokenize

__all__ = ["ARCHITECTURES", "CLIP", "CliplabError", "Preprocess", "Tokenizer", "available_models", "load",
           "tokenize"]
