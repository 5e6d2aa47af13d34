"""The typed result of an audit: groupings (the whole sample, one group column, or an intersection
of columns), the groups of each, the cells of every table, and the AuditResult that holds them.

An intersection is a Grouping with several columns; its columns are a tuple, and its name ("race x
gender") is only ever written for people, never read back. In memory a missing number is NaN; as
JSON (to_dict: what the catalog stores, `--json` prints and the CSV holds) it is null, and the rows
keep the keys they always had. The JSON lists every grouping with its columns and groups once, so a
row's grouping is looked up by name; a session saved before that list existed (the previous build)
has its groupings rebuilt from its per-image group columns (legacy_groupings).
"""

from __future__ import annotations

import importlib.metadata
import itertools
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

ALL = "all"  # the grouping (and group) of the whole sample
SEP = " / "  # joins the values of an intersection's group for display, e.g. "Black / Male"
CROSS = " x "  # joins an intersection's columns for display, e.g. "race x gender"
RACE_BINARY = "race (White / Non-White)"  # the paper's tables 3-4 grouping, derived for FairFace
PAPER_THRESHOLDS = (0.005, 0.04)  # 0.5% and 4%, as the paper's threshold experiment
SWEEP = (0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)


@dataclass
class AuditOptions:
    """Everything a run depends on besides the files themselves; saved with the session."""

    dataset: str
    labels: str | dict = "paper"  # a shipped name, a file, or a full label-set mapping
    add: list[str] = field(default_factory=list)  # classes for label set B (e.g. ['child'])
    split: str = "val"
    sample: int | None = None
    seed: int = 0
    model: str = "demo"
    group_columns: list[str] | None = None
    templates: list[str] = field(default_factory=list)  # prompt-sensitivity variants ('{}' templates)
    thresholds: list[float] = field(default_factory=lambda: list(PAPER_THRESHOLDS))
    sweep: list[float] = field(default_factory=lambda: list(SWEEP))
    min_count: int = 5  # threshold association: labels given to fewer images are not tested
    probe_folds: int = 3  # 0 skips the linear probe
    n_boot: int = 1000
    service_test_only: bool = False
    padding: str | None = None
    label_column: str | None = None  # the true class of each image: worst-group accuracy (DataComp style)
    search_queries: list[str] = field(default_factory=list)  # neutral queries (default: the label set's)
    search_k: int = 10  # the K of MaxSkew@K, MinSkew@K and NDKL
    preset: str = "paper"  # "paper" or "datacomp" (the layout of the report)

    def to_dict(self) -> dict:
        return asdict(self)


def cliplab_version() -> str:
    try:
        return importlib.metadata.version("cliplab")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------------------
# groupings and groups


@dataclass(frozen=True)
class Grouping:
    """A way to split the images: no columns (the whole sample), one column, or an intersection of
    several. derived names a grouping computed from its column(s), such as the paper's White /
    Non-White split of FairFace's race."""

    columns: tuple[str, ...] = ()
    derived: str = ""

    @property
    def name(self) -> str:
        return self.derived or CROSS.join(self.columns) or ALL

    @property
    def is_all(self) -> bool:
        return not self.columns

    @property
    def is_intersection(self) -> bool:
        return len(self.columns) > 1

    def __str__(self) -> str:
        return self.name


EVERYONE = Grouping()


@dataclass(frozen=True)
class Group:
    """One group of a grouping: a value of each of its columns (('Black', 'Female') in race x gender)."""

    grouping: Grouping
    values: tuple[str, ...]

    @property
    def name(self) -> str:
        return SEP.join(self.values)

    def __str__(self) -> str:
        return self.name


@dataclass
class Partition:
    """A grouping over the audited images: each image's group name, and the groups in display order."""

    labels: np.ndarray  # object array, one group name per image
    groups: list[Group]


def groupings(groups: dict[str, np.ndarray], values: dict[str, list[str]],
              intersections: bool = True) -> dict[Grouping, Partition]:
    """'all', each column, and each pair of columns (in column order), with only the groups present."""
    n = len(next(iter(groups.values()))) if groups else 0
    out = {EVERYONE: Partition(np.full(n, ALL, dtype=object), [Group(EVERYONE, (ALL,))])}
    order: dict[str, list[str]] = {}
    for column, labels in groups.items():
        present = set(labels)
        order[column] = [v for v in values.get(column, sorted(present)) if v in present]
        grouping = Grouping((column,))
        out[grouping] = Partition(np.asarray(labels, dtype=object), [Group(grouping, (v,)) for v in order[column]])
    if intersections:
        for a, b in itertools.combinations(groups, 2):
            grouping = Grouping((a, b))
            pairs = set(zip(groups[a], groups[b]))
            labels = np.array([SEP.join(pair) for pair in zip(groups[a], groups[b])], dtype=object)
            out[grouping] = Partition(labels, [Group(grouping, (x, y)) for x in order[a] for y in order[b]
                                               if (x, y) in pairs])
    return out


def audit_groupings(groups: dict[str, np.ndarray], values: dict[str, list[str]], kind: str) -> dict[Grouping, Partition]:
    """The groupings an audit measures: groupings() plus, for FairFace, the paper's White / Non-White."""
    out = groupings(groups, values)
    if kind == "fairface" and "race" in groups:
        grouping = Grouping(("race",), RACE_BINARY)
        binary = np.where(np.asarray(groups["race"], dtype=object) == "White", "White", "Non-White").astype(object)
        out[grouping] = Partition(binary, [Group(grouping, (v,)) for v in ("White", "Non-White") if v in set(binary)])
    return out


class Registry:
    """Groupings and groups by the names the JSON rows carry."""

    def __init__(self, groups_of: dict[Grouping, list[Group]]):
        self.groups_of = groups_of
        self.by_name = {g.name: g for g in groups_of}
        self.group_by_name = {(g.name, group.name): group for g, members in groups_of.items() for group in members}

    def grouping(self, name: str) -> Grouping:
        return self.by_name[name]

    def group(self, grouping: str, group: str) -> Group:
        return self.group_by_name[(grouping, group)]

    def to_list(self) -> list[dict]:
        return [{"name": g.name, "columns": list(g.columns), **({"derived": g.derived} if g.derived else {}),
                 "groups": [list(group.values) for group in members]} for g, members in self.groups_of.items()]

    @classmethod
    def from_list(cls, entries: list[dict]) -> Registry:
        groups_of = {}
        for entry in entries:
            grouping = Grouping(tuple(entry["columns"]), entry.get("derived", ""))
            groups_of[grouping] = [Group(grouping, tuple(values)) for values in entry["groups"]]
        return cls(groups_of)


def legacy_groupings(data: dict) -> Registry:
    """The groupings of a session saved by the previous build, which named them only inside its rows:
    rebuilt from the per-image group columns, as the run built them (values in sorted order)."""
    columns = {k: np.asarray(v, dtype=object) for k, v in data["per_image"]["groups"].items()}
    kind = data["provenance"]["dataset"].get("kind", "csv")
    built = audit_groupings(columns, {}, kind)
    return Registry({g: p.groups for g, p in built.items()})


# ---------------------------------------------------------------------------------------------
# cells: the rows of the tables


def json_ready(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/inf to None, tuples to lists, keys to strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


class Cell:
    """A table row. to_dict gives the row as JSON, with the keys rows always had ('grouping' and
    'group' by name); from_dict reads one back, looking its grouping and group up in the registry."""

    KEYS: ClassVar[dict[str, str]] = {}  # field -> JSON key where they differ
    OPTIONAL: ClassVar[tuple[str, ...]] = ()  # context fields left out of the JSON when None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Group):
                out["grouping"], out["group"] = value.grouping.name, value.name
            elif isinstance(value, Grouping):
                out["grouping"] = value.name
            elif not (value is None and f.name in self.OPTIONAL):
                out[self.KEYS.get(f.name, f.name)] = json_ready(value)
        return out

    @classmethod
    def from_dict(cls, row: dict, registry: Registry):
        values: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            # f.type is the annotation's text (from __future__ import annotations): "float", "Group", ...
            raw = row.get(cls.KEYS.get(f.name, f.name))
            if f.type == "Group":
                values[f.name] = registry.group(row["grouping"], row["group"])
            elif f.type == "Grouping":
                values[f.name] = registry.grouping(row["grouping"])
            elif f.type == "float":
                values[f.name] = _number(raw)
            elif f.type == "dict[str, float]":
                values[f.name] = {k: _number(v) for k, v in (raw or {}).items()}
            else:
                values[f.name] = raw
        return cls(**values)


class GroupCell(Cell):
    """A cell of one group (its grouping is the group's)."""

    group: Group

    @property
    def grouping(self) -> Grouping:
        return self.group.grouping


@dataclass
class ShareCell(GroupCell):
    """Tables 6-7: the share of a group's images whose top-1 class is in a category, with a Wilson interval."""

    group: Group
    category: str
    n: int
    count: int
    share: float
    low: float
    high: float
    small: bool
    label_set: str = "A"

    def to_dict(self) -> dict:  # label_set leads, as it always did in the JSON and the CSV
        row = super().to_dict()
        return {"label_set": row.pop("label_set"), **row}


@dataclass
class AccuracyCell(GroupCell):
    """Tables 3-5: accuracy of classifying a group column, for one group, with a Wilson interval."""

    method: str  # 'zero-shot' or 'linear probe'
    attribute: str  # the group column classified
    group: Group
    n: int
    count: int
    low: float
    high: float
    small: bool
    accuracy: float


@dataclass
class Disparity(Cell):
    """Per grouping and category: the groups with the highest and lowest value, difference and ratio."""

    grouping: Grouping
    category: str
    highest: str
    highest_value: float
    lowest: str
    lowest_value: float
    difference: float
    ratio: float
    small_extremes: list[str]
    direction: str
    label_set: str | None = None  # for category shares
    method: str | None = None  # for attribute accuracy
    attribute: str | None = None
    # the worst group of the measure and its gap to the best, with bootstrap intervals (seed recorded);
    # None (left out of the JSON) in sessions of earlier builds, which did not measure them
    worst: str | None = None
    worst_value: float | None = None
    worst_low: float | None = None  # the worst group's own (Wilson) interval
    worst_high: float | None = None
    worst_n: int | None = None
    best: str | None = None
    best_value: float | None = None
    gap: float | None = None  # |best - worst| = difference
    difference_low: float | None = None
    difference_high: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    bootstrap: int | None = None
    seed: int | None = None
    interval_note: str | None = None  # why an interval was not estimated (a group of one image)
    OPTIONAL: ClassVar[tuple[str, ...]] = ("label_set", "method", "attribute", "worst", "worst_value", "worst_low",
                                           "worst_high", "worst_n", "best", "best_value", "gap", "difference_low",
                                           "difference_high", "ratio_low", "ratio_high", "bootstrap", "seed",
                                           "interval_note")

    def to_dict(self) -> dict:  # the context (label set, or method and attribute) leads
        row = super().to_dict()
        context = {k: row.pop(k) for k in ("label_set", "method", "attribute") if k in row}
        return {**context, **row}


@dataclass
class LabelSetChange(GroupCell):
    """The same images under label sets A and B: a group's focus share under each and the paired change."""

    group: Group
    n: int
    share_a: float
    share_b: float
    change: float
    change_low: float
    change_high: float
    left_focus: int
    entered_focus: int
    p: float
    test: str
    small: bool


@dataclass
class Transition(GroupCell):
    """How many of a group's images moved from one top-1 value under A to another under B."""

    group: Group
    source: str
    target: str
    count: int
    n: int
    KEYS: ClassVar[dict[str, str]] = {"source": "from", "target": "to"}


@dataclass
class Association(GroupCell):
    """Figure 18: a label given at a threshold, in one group against the rest, tested and with an odds ratio."""

    group: Group
    threshold: float
    label: str
    category: str
    versus: str
    count_group: int
    n_group: int
    share_group: float
    count_rest: int
    n_rest: int
    share_rest: float
    odds_ratio: float
    or_low: float
    or_high: float
    haldane: bool
    test: str
    statistic: float | None
    p: float
    more_often_in: str
    small: bool
    p_bh: float = math.nan
    p_holm: float = math.nan


@dataclass
class SweepPoint(GroupCell):
    """The threshold experiment's curves: a group's share given at least one label of a category."""

    group: Group
    threshold: float
    category: str
    mean_labels: float
    n: int
    count: int
    share: float
    low: float
    high: float
    small: bool


@dataclass
class PromptSpread(GroupCell):
    """One category share under every prompt variant, and their spread."""

    group: Group
    category: str
    n: int
    small: bool
    shares: dict[str, float]
    min: float = math.nan
    max: float = math.nan
    mean: float = math.nan
    sd: float = math.nan
    spread: float = math.nan


@dataclass
class SearchBias(Cell):
    """Search bias of one neutral query over one group column (Geyik et al. 2019): the top K images
    by similarity to the query, each group's share there against its share of the whole set."""

    query: str
    grouping: Grouping
    k: int
    n: int  # images ranked
    max_skew: float  # max over groups of ln(share in top K / share overall)
    max_skew_group: str
    max_skew_low: float
    max_skew_high: float
    min_skew: float  # -inf (null in JSON) when a group is absent from the top K
    min_skew_group: str
    min_skew_low: float
    min_skew_high: float
    ndkl: float  # rank-discounted KL divergence of the top-i shares from the overall shares, i = 1..K
    ndkl_low: float
    ndkl_high: float
    top_shares: dict[str, float]  # each group's share of the top K
    shares: dict[str, float]  # each group's share of the whole set (the desired distribution)
    absent: list[str]  # groups of the set with no image in the top K
    bootstrap: int
    seed: int
    small: bool  # fewer than K images per group on average: the figures are coarse


@dataclass
class Tables:
    """Every table of an audit; a table that was not measured is None (and absent from the JSON)."""

    category_shares: list[ShareCell] = field(default_factory=list)
    disparities: list[Disparity] = field(default_factory=list)
    label_set_diff: list[LabelSetChange] | None = None
    transitions: list[Transition] | None = None
    threshold_association: list[Association] = field(default_factory=list)
    threshold_sweep: list[SweepPoint] = field(default_factory=list)
    prompt_sensitivity: list[PromptSpread] | None = None
    attribute_accuracy: list[AccuracyCell] | None = None
    accuracy_disparities: list[Disparity] | None = None
    label_accuracy: list[AccuracyCell] | None = None  # the label column classified zero-shot, per group
    label_disparities: list[Disparity] | None = None  # its worst group and gap per group column
    search_bias: list[SearchBias] | None = None

    ROWS: ClassVar[dict[str, type[Cell]]] = {
        "category_shares": ShareCell, "disparities": Disparity, "label_set_diff": LabelSetChange,
        "transitions": Transition, "threshold_association": Association, "threshold_sweep": SweepPoint,
        "prompt_sensitivity": PromptSpread, "attribute_accuracy": AccuracyCell, "accuracy_disparities": Disparity,
        "label_accuracy": AccuracyCell, "label_disparities": Disparity, "search_bias": SearchBias}

    def items(self) -> Iterator[tuple[str, list[Cell]]]:
        """(name, rows) of each measured table, in the order of the report."""
        for name in self.ROWS:
            rows = getattr(self, name)
            if rows is not None:
                yield name, rows

    def to_dict(self) -> dict[str, list[dict]]:
        return {name: [row.to_dict() for row in rows] for name, rows in self.items()}

    @classmethod
    def from_dict(cls, data: dict[str, list[dict]], registry: Registry) -> Tables:
        return cls(**{name: [cls.ROWS[name].from_dict(row, registry) for row in rows]
                      for name, rows in data.items()})


@dataclass
class Measurements:
    """What measure() computes from the probabilities: the tables and what to say about them."""

    tables: Tables
    groupings: dict[Grouping, list[Group]]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    filtered_labels: dict[str, list[str]] = field(default_factory=dict)  # "grouping @ threshold" -> labels left out


@dataclass(kw_only=True)
class AuditResult(Measurements):
    """A whole audit: the measurements, everything needed to re-run it (options, with the label sets
    in full), and what it ran on (provenance: weights, file, rows, methods, times)."""

    options: AuditOptions
    labelsets: dict  # "A" and "B": LabelSet.to_dict() (B None without one)
    provenance: dict  # model, dataset, label sets, thresholds, methods, versions, times
    per_image: dict  # row, groups (column -> values), top1_a[, top1_b]: what `audit diff` pairs on
    headline: list[str]
    reference: dict  # the paper's figures (engine.audit.reference)
    session_id: str | None = None

    def to_dict(self) -> dict:
        """The session's JSON: the keys of the previous build's results, plus the groupings."""
        out = {"tables": self.tables.to_dict(), "groupings": Registry(self.groupings).to_list(),
               "notes": self.notes, "warnings": self.warnings, "filtered_labels": self.filtered_labels,
               "options": self.options.to_dict(), "labelsets": self.labelsets, "provenance": self.provenance,
               "per_image": self.per_image, "headline": self.headline, "reference": self.reference}
        if self.session_id is not None:
            out["session_id"] = self.session_id
        return json_ready(out)

    @classmethod
    def from_dict(cls, data: dict) -> AuditResult:
        """A saved session, of this build or of the previous one (no groupings list)."""
        registry = Registry.from_list(data["groupings"]) if "groupings" in data else legacy_groupings(data)
        return cls(tables=Tables.from_dict(data["tables"], registry), groupings=registry.groups_of,
                   notes=list(data.get("notes") or []), warnings=list(data.get("warnings") or []),
                   filtered_labels=dict(data.get("filtered_labels") or {}), options=AuditOptions(**data["options"]),
                   labelsets=data["labelsets"], provenance=data["provenance"], per_image=data["per_image"],
                   headline=list(data.get("headline") or []), reference=data.get("reference") or {},
                   session_id=data.get("session_id"))


@dataclass
class SessionDiff:
    """Two sessions over the same images: where each group's images moved between them."""

    a: str
    b: str
    images: int
    focus: list[str]
    label_sets: list[str]
    models: list[str]
    label_set_diff: list[LabelSetChange]
    transitions: list[Transition]

    def to_dict(self) -> dict:
        return json_ready({"a": self.a, "b": self.b, "images": self.images, "focus": self.focus,
                           "label_sets": self.label_sets, "models": self.models,
                           "tables": {"label_set_diff": [r.to_dict() for r in self.label_set_diff],
                                      "transitions": [r.to_dict() for r in self.transitions]}})
