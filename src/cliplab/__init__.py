"""cliplab: a from-scratch PyTorch CLIP with a local app.

The repository keeps its top-level folders (engine/, trainer/, indexes/, app/, assets/); this folder
gathers them under one package through relative symlinks, so that an editable install is a plain
path (src/) that static tools (pyright, jedi, an editor's jump-to-definition) can follow.
"""
