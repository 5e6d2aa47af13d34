"""The package layout: src/cliplab/ links the top-level folders into one `cliplab` package; the wheel
holds every module and asset file, and pyproject's package list names every folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("engine", "trainer", "indexes", "app", "assets")


def _tracked(folder: str) -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to tell shipped files from local ones")
    out = subprocess.run(["git", "ls-files", "-z", folder], cwd=ROOT, capture_output=True, check=True)
    return [name for name in out.stdout.decode().split("\0") if name]


def test_src_cliplab_links_each_folder_relatively():
    for folder in FOLDERS:
        link = ROOT / "src" / "cliplab" / folder
        assert link.is_symlink() and os.readlink(link) == f"../../{folder}"
        assert link.resolve() == ROOT / folder
    assert (ROOT / "src" / "cliplab" / "__init__.py").is_file()


def test_every_folder_with_files_is_a_listed_package():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"": "src"}
    folders = {str(Path(name).parent) for folder in FOLDERS for name in _tracked(folder)}
    expected = {"cliplab"} | {"cliplab." + folder.replace("/", ".") for folder in folders}
    assert set(setuptools["packages"]) == expected


def test_wheel_holds_every_module_and_asset(tmp_path):
    """A non-editable wheel copies the files behind the links: every tracked file of the five folders."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", symlinks=True, ignore=shutil.ignore_patterns("*.egg-info"))
    shipped = set()
    for folder in FOLDERS:
        for name in _tracked(folder):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
            shipped.add("cliplab/" + name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("cliplab-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = {name for name in archive.namelist() if name.startswith("cliplab/")}
    assert files == shipped | {"cliplab/__init__.py"}


def _make_list(name: str) -> list[str]:
    """A `NAME = a b \\` variable of the Makefile, its continuation lines joined."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith(f"{name} ="))
    return line.split("=", 1)[1].split()


def test_make_test_fast_names_existing_files_covering_every_package():
    files = _make_list("FAST_TESTS")
    assert files and all((ROOT / name).is_file() for name in files), [n for n in files if not (ROOT / n).is_file()]
    source = "\n".join((ROOT / name).read_text() for name in files)
    for package in ("cliplab.engine", "cliplab.trainer", "cliplab.indexes", "cliplab.app.services"):
        assert package in source, f"make test-fast runs nothing from {package}"
    assert "run_cli" in source  # the CLI, through tests/cli_support.py
