"""The CLIP engine: model, tokenizer, preprocessing, weights, zero-shot, probes and audits.

Nothing here imports from trainer/, indexes/ or app/.
"""

from cliplab.engine.api import available_models, default_model, load, load_text_tower, model_preprocess
from cliplab.engine.errors import CliplabError
from cliplab.engine.images import Preprocess
from cliplab.engine.model import ARCHITECTURES, CLIP
from cliplab.engine.precision import default_device
from cliplab.engine.tokenizer import Tokenizer, tokenize

__all__ = ["ARCHITECTURES", "CLIP", "CliplabError", "Preprocess", "Tokenizer", "available_models", "default_device",
           "default_model", "load", "load_text_tower", "model_preprocess", "tokenize"]
