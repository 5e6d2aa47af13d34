"""Bias audits: the paper's FairFace probes (section 7.1) and class-design audits for any label set.

stats (intervals, tests, corrections), datasets (FairFace and generic CSVs), labelsets (classes with
prompts and categories), results (the typed result: groupings, groups, cells, AuditResult), measures
(tables from arrays), runner (features -> measurements, with provenance), reference (the paper's
published figures). Only computation: the report is rendered by app.services.audit_report.
"""
