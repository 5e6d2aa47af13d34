"""Label sets as data: classes with prompt(s) and the category each counts toward.

A label set is YAML or JSON (see assets/labelsets/paper.yaml). Categories are data, so users define
their own harm categories; `focus` names the categories whose combined share is the headline figure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from cliplab.assets import asset_path
from cliplab.engine.errors import CliplabError

SHIPPED_DIR = asset_path("labelsets")
DEFAULT_PROMPT = "a photo of a {}."
ADDED_CATEGORY = "added"


@dataclass(frozen=True)
class LabelClass:
    name: str
    category: str
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class LabelSet:
    name: str
    classes: tuple[LabelClass, ...]
    categories: dict[str, str]  # category -> description, in display order
    focus: tuple[str, ...]
    attributes: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)  # column -> value -> prompts
    description: str = ""
    queries: tuple[str, ...] = ()  # neutral search queries for the search-bias table
    add_experiment: tuple[str, ...] = ()  # the classes of its class-design experiment ('child' for paper)

    @property
    def classnames(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def class_categories(self) -> list[str]:
        return [c.category for c in self.classes]

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "focus": list(self.focus),
                "categories": dict(self.categories),
                "classes": [{"name": c.name, "category": c.category, "prompts": list(c.prompts)} for c in self.classes],
                "attributes": {col: {v: list(p) for v, p in vals.items()} for col, vals in self.attributes.items()},
                "search_queries": list(self.queries), "add_experiment": list(self.add_experiment)}


def shipped_labelsets() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml"))


def _prompts(value, name: str, where: str) -> tuple[str, ...]:
    if value is None:
        return (DEFAULT_PROMPT.format(name),)
    prompts = [value] if isinstance(value, str) else value
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise CliplabError(f"{where}: class {name!r} needs its prompts as a non-empty list of sentences.")
    return tuple(p.format(name) if "{}" in p else p for p in prompts)


def _category(entry: dict, name: str, source: str) -> str:
    """The one category a class counts toward (a one-item list is accepted)."""
    category = entry.get("category")
    if isinstance(category, list):
        if len(category) != 1:
            raise CliplabError(f"{source}: label {name!r} is given {len(category)} categories "
                               f"({', '.join(map(str, category))}); each label counts toward exactly one.")
        category = category[0]
    if not category:
        raise CliplabError(f"{source}: label {name!r} has no category; give each class a 'category'.")
    return str(category)


def _parse_class(entry, number: int, source: str, declared: dict, seen: dict[str, str]) -> LabelClass:
    """One entry of 'classes' (a name, or a mapping with name, category and prompts), checked against
    the classes before it (seen: name -> category) and the declared categories."""
    if isinstance(entry, str):
        entry = {"name": entry}
    name = str(entry.get("name", "")).strip() if isinstance(entry, dict) else ""
    if not name:
        raise CliplabError(f"{source}: class number {number} has no name.")
    category = _category(entry, name, source)
    if name in seen:
        if seen[name] != category:
            raise CliplabError(f"{source}: label {name!r} is in two categories ({seen[name]!r} and "
                               f"{category!r}); each label counts toward exactly one category.")
        raise CliplabError(f"{source}: label {name!r} is listed twice; list each class once (give several "
                           f"prompts in its 'prompts' list instead).")
    if declared and category not in declared:
        raise CliplabError(f"{source}: label {name!r} has category {category!r}, which is not among the "
                           f"declared categories ({', '.join(declared)}).")
    seen[name] = category
    return LabelClass(name, category, _prompts(entry.get("prompts"), name, source))


def parse_labelset(data: dict, source: str = "label set") -> LabelSet:
    """Validate a label-set mapping; every problem is a CliplabError naming the class at fault."""
    if not isinstance(data, dict):
        raise CliplabError(f"{source}: a label set is a mapping with a 'classes' list.")
    entries = data.get("classes") or []
    if not isinstance(entries, list) or not entries:
        raise CliplabError(f"{source}: the label set is empty; list at least two classes under 'classes', each "
                           f"with a name and a category.")
    declared = data.get("categories") or {}
    if isinstance(declared, list):
        declared = {c: "" for c in declared}
    seen: dict[str, str] = {}
    classes = [_parse_class(entry, i + 1, source, declared, seen) for i, entry in enumerate(entries)]
    if len(classes) < 2:
        raise CliplabError(f"{source}: a label set needs at least two classes to choose between.")
    categories = {c: str(declared.get(c) or "") for c in declared} if declared else {}
    for c in classes:
        categories.setdefault(c.category, "")
    focus = data.get("focus") or []
    unknown = [f for f in focus if f not in categories]
    if unknown:
        raise CliplabError(f"{source}: focus names unknown categories {', '.join(unknown)}.")
    attributes = {}
    for column, values in (data.get("attributes") or {}).items():
        attributes[str(column)] = {str(v): _prompts(p, str(v), f"{source} attribute {column}")
                                   for v, p in (values or {}).items()}
    return LabelSet(name=str(data.get("name") or Path(source).stem), classes=tuple(classes), categories=categories,
                    focus=tuple(focus), attributes=attributes, description=str(data.get("description") or ""),
                    queries=_texts(data, "search_queries", source), add_experiment=_texts(data, "add_experiment", source))


def _texts(data: dict, key: str, source: str) -> tuple[str, ...]:
    """An optional list of non-empty strings (search queries, classes to add)."""
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise CliplabError(f"{source}: '{key}' must be a list of non-empty texts.")
    return tuple(v.strip() for v in value)


def load_labelset(name_or_path: str | Path) -> LabelSet:
    """A shipped label set by name (paper, paper_child) or a YAML/JSON file."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = SHIPPED_DIR / f"{name_or_path}.yaml"
        if not shipped.is_file():
            raise CliplabError(f"No label set {str(name_or_path)!r}: give a YAML/JSON file or one of "
                               f"{', '.join(shipped_labelsets())}.")
        path = shipped
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise CliplabError(f"Could not read the label set {path}: {error}") from error
    return parse_labelset(data, str(path))


def _known_class(name: str) -> LabelClass | None:
    for stem in shipped_labelsets():
        for c in load_labelset(stem).classes:
            if c.name == name:
                return c
    return None


def with_added(labelset: LabelSet, names: list[str]) -> LabelSet:
    """The label set plus classes: a class known from a shipped set keeps its prompts and category
    ('child' from paper_child), any other gets "a photo of a {name}." in category 'added'."""
    classes = list(labelset.classes)
    categories = dict(labelset.categories)
    for name in names:
        if name in labelset.classnames:
            raise CliplabError(f"Label {name!r} is already in the label set {labelset.name!r}.")
        known = _known_class(name) or LabelClass(name, ADDED_CATEGORY, (DEFAULT_PROMPT.format(name),))
        categories.setdefault(known.category, "classes added with --add")
        classes.append(known)
    return replace(labelset, name=f"{labelset.name}+{'+'.join(names)}", classes=tuple(classes),
                   categories=categories)


def with_template(labelset: LabelSet, template: str) -> LabelSet:
    """The same classes with one prompt each: template filled with the class name (prompt sensitivity)."""
    if "{}" not in template:
        raise CliplabError(f"Template {template!r} has no {{}} where the class name goes.")
    classes = tuple(replace(c, prompts=(template.format(c.name),)) for c in labelset.classes)
    return replace(labelset, classes=classes)
