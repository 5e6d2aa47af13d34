"""A rolled classifier in one small file: class names, templates, the class weights it scores with (the
zero-shot ensembles or the improved head), the logit scale, the abstention threshold, and the model it
belongs to (name, weights' fingerprint, mode, image preprocessing), with the classifier's own fingerprint.

The file is JSON (UTF-8; the weights as base64 little-endian float32, exact), so it is readable without
cliplab (docs/classifiers.md shows ten lines of numpy). `read` refuses a file of another format version
or one made for another model, naming both. `export_onnx` writes the image tower and the head as one ONNX
graph: preprocessed pixels in, class probabilities out.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cliplab.engine.errors import CliplabError
from cliplab.engine.labelling import TopLabels, top_labels

FORMAT = "cliplab-classifier"
VERSION = 1


def classifier_fingerprint(classes: list[str], templates: list[str], weights: np.ndarray, scale: float,
                           model_fingerprint: str) -> str:
    """What decides the labels (not the threshold, which applies at reading time): 16 bytes of blake2b."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([classes, templates, float(scale), model_fingerprint]).encode())
    digest.update(np.ascontiguousarray(weights, np.float32).tobytes())
    return digest.hexdigest()


@dataclass
class ClassifierFile:
    name: str
    classes: list[str]
    templates: list[str]
    weights: np.ndarray  # [C, d] float32, rows L2-normalised
    scale: float
    threshold: float | None
    model_name: str
    model_fingerprint: str
    mode: str | None  # the inference mode the weights' text embeddings were computed in
    preprocessing: str | None  # engine.images.Preprocess.record() of the model's images
    head: dict = field(default_factory=dict)  # how the weights were made: {"alpha", "examples", ...}; {} zero-shot

    @property
    def fingerprint(self) -> str:
        return classifier_fingerprint(self.classes, self.templates, self.weights, self.scale, self.model_fingerprint)

    def labels(self, vectors: np.ndarray, k: int = 3) -> TopLabels:
        return top_labels(self.weights, self.scale, vectors, k)

    def to_dict(self) -> dict:
        weights = np.ascontiguousarray(self.weights, "<f4")
        return {"format": FORMAT, "version": VERSION, "name": self.name, "classes": list(self.classes),
                "templates": list(self.templates), "scale": float(self.scale), "threshold": self.threshold,
                "weights_shape": list(weights.shape), "weights": base64.b64encode(weights.tobytes()).decode("ascii"),
                "model": {"name": self.model_name, "fingerprint": self.model_fingerprint, "mode": self.mode,
                          "preprocessing": self.preprocessing},
                "head": dict(self.head), "fingerprint": self.fingerprint}

    def write(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def read(path: str | Path, model_fingerprint: str | None = None, model_name: str | None = None) -> ClassifierFile:
    """The classifier in a file; refused with a sentence when it is not one, is of a newer format, or (given the
    model that will use it) was made for another model."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CliplabError(f"The classifier file {path} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CliplabError(f"{path.name} is not a classifier file (it is not JSON); export one from the Classify "
                           "tab or with cliplab first.") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CliplabError(f"{path.name} is not a classifier file (no {FORMAT!r} format mark).")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CliplabError(f"{path.name} is a classifier file of format version {version}, newer than this cliplab "
                           f"reads (version {VERSION}); update cliplab to use it.")
    model = data["model"]
    if model_fingerprint is not None and model["fingerprint"] != model_fingerprint:
        raise CliplabError(f"{path.name} was made for the model {model['name']} ({model['fingerprint'][:12]}), not "
                           f"for {model_name or 'this model'} ({model_fingerprint[:12]}): load that model to use it.")
    weights = np.frombuffer(base64.b64decode(data["weights"]), "<f4").reshape(data["weights_shape"]).astype(np.float32)
    loaded = ClassifierFile(data["name"], list(data["classes"]), list(data["templates"]), weights,
                            float(data["scale"]), data.get("threshold"), model["name"], model["fingerprint"],
                            model.get("mode"), model.get("preprocessing"), dict(data.get("head") or {}))
    if loaded.fingerprint != data.get("fingerprint"):
        raise CliplabError(f"{path.name} is damaged: its weights do not match its fingerprint; export it again.")
    return loaded


class ClassifierGraph(torch.nn.Module):
    """Preprocessed pixels [n, 3, r, r] -> class probabilities [n, C]: the image tower, normalised, then the head."""

    def __init__(self, model: torch.nn.Module, weights: np.ndarray, scale: float):
        super().__init__()
        self.model = model
        self.register_buffer("weights", torch.from_numpy(np.ascontiguousarray(weights, np.float32)))
        self.scale = float(scale)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.model.encode_image(pixels)
        features = features / features.norm(dim=-1, keepdim=True)
        return torch.softmax(self.scale * features @ self.weights.T, dim=-1)


def export_onnx(classifier: ClassifierFile, model: torch.nn.Module, path: str | Path) -> Path:
    """The image tower and the head as one ONNX graph (input "pixels", output "probabilities")."""
    from cliplab.engine.runtime import export_graph
    if classifier.model_fingerprint != getattr(model, "fingerprint", None):
        raise CliplabError(f"The classifier {classifier.name!r} was made for the model {classifier.model_name}; load "
                           "that model to export it with its image tower.")
    resolution = model.image_resolution
    return export_graph(ClassifierGraph(model.cpu().eval(), classifier.weights, classifier.scale),
                        (torch.zeros(2, 3, resolution, resolution),), Path(path).expanduser(), ["pixels"],
                        ["probabilities"], {"pixels": {0: "batch"}, "probabilities": {0: "batch"}})
