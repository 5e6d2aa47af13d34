"""Static tools must resolve every import of cliplab's own modules (`make lint` runs this).

Runs basedpyright with every check off but import resolution, over the package folders, tests,
benchmarks and scripts, and fails on any unresolved `cliplab` import. The pyright project root is a
temporary folder, so nothing but the interpreter's own paths (an installed cliplab, PYTHONPATH) can
resolve `cliplab`: the check sees what an editor sees, and catches a layout that only an import hook
can follow (pyright cannot run one). Third-party packages without stubs or not installed are not its
business: only imports of `cliplab` count.

    python scripts/check_imports.py            # exit 1 when an import of cliplab does not resolve
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("engine", "trainer", "indexes", "app", "assets", "tests", "benchmarks", "scripts")
OWN_IMPORT = re.compile(r'Import "cliplab(\.[\w.]+)?" could not be resolved')


def basedpyright() -> list[str]:
    if importlib.util.find_spec("basedpyright") is None:
        raise SystemExit("basedpyright is not installed: `pip install basedpyright` (`make install-test` "
                         "installs it with the test extra).")
    return [sys.executable, "-m", "basedpyright"]


def unresolved(root: Path = ROOT) -> list[str]:
    """'file:line: message' for every import of cliplab that basedpyright cannot resolve."""
    config = {
        "include": [str(root / folder) for folder in FOLDERS if (root / folder).is_dir()],
        "exclude": ["**/__pycache__"],
        "typeCheckingMode": "off",
        "reportMissingImports": "error",
    }
    with tempfile.TemporaryDirectory(prefix="cliplab-imports-") as project:
        (Path(project) / "pyrightconfig.json").write_text(json.dumps(config))
        run = subprocess.run([*basedpyright(), "--outputjson", "--pythonpath", sys.executable, "-p", project],
                             capture_output=True, text=True, cwd=project)
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"basedpyright failed (exit {run.returncode}):\n{run.stdout}{run.stderr}") from None
    found = []
    for diagnostic in report["generalDiagnostics"]:
        if diagnostic.get("rule") == "reportMissingImports" and OWN_IMPORT.search(diagnostic["message"]):
            where = Path(diagnostic["file"]).relative_to(root)
            found.append(f"{where}:{diagnostic['range']['start']['line'] + 1}: {diagnostic['message']}")
    return found


def main() -> int:
    found = unresolved()
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} import(s) of cliplab that static tools cannot resolve: install cliplab "
              "(`make install-test`, an editable install of src/) in the interpreter running this check.")
        return 1
    print("static import check: every import of cliplab resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
