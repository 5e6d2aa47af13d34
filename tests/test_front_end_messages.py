"""The app's sentences name the app's own controls, never a CLI command or flag: every sentence a service
or a tab raises (CliplabError, UserError, an `advice=`) is shown in the app too (docs/architecture.md,
"Errors"), so it is phrased for both front ends or neutrally."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI_WORDING = re.compile(r"`cliplab [a-z]|\bcliplab (?:index|search|classify|audit|eval|train|download|models|"
                         r"captions|texts|duplicates|export)\b|(?<![\w-])--[a-z][a-z-]+")
# Reached from the CLI only: the app has no device control, `cliplab app` takes no --device.
CLI_ONLY = {("app/services/loading.py", "check_device")}


def _sentences(path: Path):
    """(function, text) for the literal parts of every sentence raised or passed as advice in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for function in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        for call in [n for n in ast.walk(function) if isinstance(n, ast.Call)]:
            name = getattr(call.func, "id", getattr(call.func, "attr", ""))
            parts = list(call.args) if name in ("CliplabError", "UserError") else []
            parts += [k.value for k in call.keywords if k.arg == "advice"]
            for part in parts:
                for node in ast.walk(part):
                    if isinstance(node, ast.Constant) and isinstance(node.value, str):
                        yield function.name, node.value


def test_no_sentence_the_app_shows_names_a_cli_command():
    found = []
    for folder in ("app/services", "app/ui"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for function, text in _sentences(path):
                if (relative, function) not in CLI_ONLY and CLI_WORDING.search(text):
                    found.append(f"{relative}:{function}: {text!r}")
    assert found == []


def test_the_check_sees_a_cli_flag_in_a_service_sentence(tmp_path):
    sample = tmp_path / "service.py"
    sample.write_text('def f(x):\n    raise CliplabError(f"{x} is a system folder; pass `--confirm-system`.")\n'
                      'def g(t):\n    check(t, advice="shorten it (`cliplab classify --truncate`)")\n')
    texts = [text for _, text in _sentences(sample)]
    assert all(CLI_WORDING.search(text) for text in texts) and len(texts) == 2
