"""The import-layering check of `make lint`: dependencies point one way (docs/architecture.md, "Layers").

    front ends (app/ui, app/dashboard.py, app/gradio_app.py, app/commands, app/cli.py)
        -> services (app/services) -> indexes, trainer -> engine

- engine imports none of trainer, indexes, app; trainer and indexes import engine only (not each
  other, not app);
- a service never imports a front end (nor gradio or streamlit): it returns data;
- a front end imports the services (and the other front-end modules), engine.errors for the one
  error type and assets: never indexes.* (the catalog), trainer.*, or any other engine module;
- nothing under app/ touches the catalog's database itself: no sqlalchemy import, no
  catalog.session() (or .sessions / .engine); it calls the named functions of indexes/.

Every import is checked, also those inside functions. Exit status 1 and one line per violation.
    python scripts/check_layers.py [ROOT]
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("engine", "trainer", "indexes", "app", "assets")
NAMESPACE = "cliplab"  # installed, the folders are cliplab.engine, cliplab.app, ... (pyproject.toml)


def local(name: str) -> str:
    """A module's name within the repository: cliplab.engine.model -> engine.model."""
    return name.removeprefix(NAMESPACE + ".")
FRONT_END_ALLOWED = ("app", "engine.errors", "assets")  # prefixes a front end may import
NO_SQL = "app/ calls the catalog's named functions in indexes/, never SQL or a session of its own"


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    module: str
    rule: str
    verb: str = "imports"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.verb} {self.module}: {self.rule}"


def layer_of(relative: Path) -> str | None:
    parts = relative.parts
    if not parts or parts[0] not in PACKAGES or relative.suffix != ".py":
        return None
    if parts[0] != "app":
        return parts[0]
    if len(parts) > 1 and parts[1] == "services":
        return "services"
    return "front end"  # app/ui, app/commands, app/cli.py, app/dashboard.py, app/gradio_app.py, app/__init__.py


def imports(tree: ast.AST, module: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in the tree, relative ones resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, local(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == NAMESPACE:  # `from cliplab import engine` reaches engine
                for alias in node.names:
                    yield node.lineno, alias.name
            elif local(name) in PACKAGES:  # `from cliplab.engine import zeroshot` reaches engine.zeroshot
                for alias in node.names:
                    yield node.lineno, f"{local(name)}.{alias.name}"
            else:
                yield node.lineno, local(name)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _names_catalog(node: ast.AST) -> bool:
    """catalog, state.catalog, self.catalog, ...: an expression that names an open Catalog."""
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name.endswith("catalog")


def database_uses(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, what) of every place a module opens the catalog's database itself: any call of
    `.session()` / `.sessions()`, and `<catalog>.engine`."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("session", "sessions")):
            yield node.lineno, f".{node.func.attr}()"
        elif isinstance(node, ast.Attribute) and node.attr == "engine" and _names_catalog(node.value):
            yield node.lineno, "<catalog>.engine"


def rule_broken(layer: str, name: str) -> str | None:
    top = name.split(".")[0]
    if layer in ("services", "front end") and top == "sqlalchemy":
        return NO_SQL
    if layer == "engine" and top in ("trainer", "indexes", "app"):
        return "the engine imports nothing from trainer, indexes or app"
    if layer in ("trainer", "indexes") and top in ("trainer", "indexes", "app") and top != layer:
        return f"{layer} imports only the engine (and itself)"
    if layer == "services" and (top in ("gradio", "streamlit")
                                or any(_within(name, f) for f in ("app.ui", "app.commands", "app.cli",
                                                                  "app.gradio_app", "app.dashboard"))):
        return "a service returns data and never imports a front end"
    if layer == "front end" and top in PACKAGES and not any(_within(name, p) for p in FRONT_END_ALLOWED):
        if name == "engine":
            return "a front end calls the services, not the engine"
        return "a front end calls the services only (and engine.errors for CliplabError)"
    return None


def check(root: Path) -> list[Violation]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            layer = layer_of(relative)
            if layer is None:
                continue
            module = ".".join(relative.with_suffix("").parts)
            tree = ast.parse(path.read_text(encoding="utf-8"), str(relative))
            for line, name in imports(tree, module):
                rule = rule_broken(layer, name)
                if rule:
                    found.append(Violation(str(relative), line, name, rule))
            if layer in ("services", "front end"):
                found += [Violation(str(relative), line, what, NO_SQL, "uses") for line, what in database_uses(tree)]
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1]
    violations = check(root)
    for violation in violations:
        print(violation)
    if violations:
        print(f"{len(violations)} layering violation(s); see scripts/check_layers.py for the rules.")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
