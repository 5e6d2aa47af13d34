"""Measure a model trained on the synthetic world and write its model card.

    python -m trainer.demo_card assets/demo --run RUN_DIR

Held-out figures: zero-shot accuracy per task with the single prompt and the prompt ensemble
on shape-colour combinations never seen in training; a linear probe (logistic regression on the
same L2-normalised image features, fitted on training-split images, tested on the held-out
ones); image-text retrieval R@1/5/10 on held-out scenes with full captions; and, for contrast,
zero-shot accuracy on combinations seen in training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from engine.api import load
from trainer.evaluate import RetrievalSet, ZeroShotSet, evaluate, image_features
from trainer.synthetic import World

TASKS = ("shape", "colour", "count", "position", "word")


def measure(folder: str | Path, n_test: int = 400, n_probe: int = 600, n_retrieval: int = 500) -> dict:
    model, preprocess, tokenizer = load(str(folder), device="cpu", precision="fp32")
    world = World(seed=0, image_size=model.image_resolution)
    tasks = world.zero_shot_tasks()

    def tensors(images) -> torch.Tensor:
        return torch.stack([preprocess(i) for i in images])

    zero_shot, seen, probe = {}, {}, {}
    for name in TASKS:
        task = tasks[name]
        images, labels = world.labelled(task, n_test, split="heldout", seed=2)
        test = ZeroShotSet(task.classnames, task.prompts[0], task.ensemble, tensors(images), labels)
        zero_shot[name] = test
        # The same task on combinations seen in training: separates "not learned" from "not transferred".
        seen_images, seen_labels = world.labelled(task, n_test, split="train", seed=4)
        seen[name] = ZeroShotSet(task.classnames, task.prompts[0], task.ensemble, tensors(seen_images), seen_labels)
        train_images, train_labels = world.labelled(task, n_probe, split="train", seed=3)
        classifier = LogisticRegression(max_iter=2000, C=10.0)
        classifier.fit(image_features(model, tensors(train_images)), train_labels)
        probe[name] = float(classifier.score(image_features(model, test.images), labels))
    images, captions = world.retrieval_set(n_retrieval, split="heldout", seed=2)
    results = evaluate(model, tokenizer, zero_shot, RetrievalSet(tensors(images), captions))
    seen_results = evaluate(model, tokenizer, seen, None)
    return {"results": results, "seen": seen_results, "probe": probe, "chance": {n: 1 / len(tasks[n].classnames) for n in TASKS},
            "n_test": n_test, "n_probe": n_probe, "n_retrieval": n_retrieval,
            "params": sum(p.numel() for p in model.parameters()), "config": model.config.to_dict(),
            "vocab_size": tokenizer.vocab_size}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def figures_markdown(m: dict) -> str:
    r = m["results"]
    lines = ["| task | chance | zero-shot, one prompt | zero-shot, ensemble | linear probe "
             "| zero-shot on seen combinations (one prompt) |", "|---|---|---|---|---|---|"]
    for name in TASKS:
        lines.append(f"| {name} | {_pct(m['chance'][name])} | {_pct(r[f'zeroshot/{name}'])} | "
                     f"{_pct(r[f'zeroshot/{name}/ensemble'])} | {_pct(m['probe'][name])} | "
                     f"{_pct(m['seen'][f'zeroshot/{name}'])} |")
    lines += ["", f"Retrieval on {m['n_retrieval']} held-out scenes (one full caption each; chance R@1 = "
              f"{_pct(1 / m['n_retrieval'])}):", "", "| direction | R@1 | R@5 | R@10 |", "|---|---|---|---|"]
    for short, label in (("i2t", "image → text"), ("t2i", "text → image")):
        lines.append(f"| {label} | " + " | ".join(_pct(r[f"retrieval/{short}@{k}"]) for k in (1, 5, 10)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    args = parser.parse_args()
    torch.manual_seed(0)
    measured = measure(args.folder)
    print(figures_markdown(measured))
    if args.json:
        Path(args.json).write_text(json.dumps(measured, indent=2, default=lambda o: np.asarray(o).tolist()))


if __name__ == "__main__":
    main()
