"""The CLIP engine: model, tokenizer, preprocessing, weights, zero-shot, probes and audits.

Nothing here imports from trainer/, indexes/ or app/.
"""

from engine.errors import CliplabError
from engine.model import ARCHITECTURES, CLIP

__all__ = ["ARCHITECTURES", "CLIP", "CliplabError"]
