"""The demo model's world, kept apart from the trainer proper.

world (the seeded synthetic image-caption world: scenes, words, captions, held-out pairs, test sets),
render (how a scene is drawn: backgrounds, shapes, strokes, photo-like finishing), recipe (the demo
model's shape and training recipe, `cliplab train --preset demo`), card (measures a model trained on
the world and regenerates the tables of assets/demo/MODEL_CARD.md:
`python -m cliplab.trainer.demo.card assets/demo`). The trainer reads the world only as one more
data source (trainer.data, `--data synthetic`).
"""
