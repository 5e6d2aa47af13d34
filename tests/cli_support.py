"""cliplab's CLI run in-process with only some command modules registered, so other areas'
commands cannot break a test."""

from __future__ import annotations

from cliplab.app import cli


def invoke(modules: list[str], *argv) -> int:
    saved, cli.COMMAND_MODULES = cli.COMMAND_MODULES, list(modules)
    try:
        return cli.main([str(a) for a in argv])
    finally:
        cli.COMMAND_MODULES = saved


def run_cli(capsys, *argv, modules: list[str]) -> tuple[int, str, str]:
    """invoke(), then what it printed: (exit code, stdout, stderr)."""
    code = invoke(modules, *argv)
    out = capsys.readouterr()
    return code, out.out, out.err
