"""Bias audits: the paper's FairFace probes (section 7.1) and class-design audits for any label set.

stats (intervals, tests, corrections), datasets (FairFace and generic CSVs), labelsets (classes with
prompts and categories), measures (tables from arrays), runner (features -> measurements, with
provenance), report (self-contained HTML), reference (the paper's published figures).
"""
