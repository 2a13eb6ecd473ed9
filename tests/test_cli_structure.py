"""The CLI's shape: small functions, one home for shared options, and a parser that loads no hub or edge."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

CLI = ROOT / "vigie" / "cli"


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    return [
        (f"{path.name}:{node.name}", node.end_lineno - node.lineno + 1)  # type: ignore[operator]
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_function_over_80_lines() -> None:
    functions = [f for path in sorted(CLI.glob("*.py")) for f in _functions(path)]
    assert len(functions) > 50  # the walk really saw the package
    too_long = [(name, n) for name, n in functions if n > 80]
    assert not too_long, too_long


def test_no_module_over_400_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in CLI.glob("*.py")}
    assert {"main.py", "options.py", "edge.py", "hub.py", "ota.py"} <= set(sizes)
    assert max(sizes.values()) <= 400, sizes


def test_the_hub_database_default_is_not_written_in_the_cli() -> None:
    # It lives in the hub's settings; `--db` defaults to None, resolved by options.hub_settings.
    hits = [p.name for p in CLI.glob("*.py") if "vigie-hub.sqlite" in p.read_text()]
    assert hits == []
    # ... and HubSettings.from_env is called from one place only, so its rename is a one-line merge.
    calls = [p.name for p in CLI.glob("*.py") if "from_env(" in p.read_text()]
    assert calls == ["options.py"]


def test_building_the_parser_imports_neither_hub_nor_edge() -> None:
    code = (
        "import sys\n"
        "from vigie.cli.main import build_parser\n"
        "build_parser().parse_args(['edge', 'run', '--site', 's', '--device', 'd', '--source', 'x'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'hub', 'edge', 'fastapi', 'cv2'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_every_leaf_command_has_a_handler() -> None:
    import argparse

    from vigie.cli.main import build_parser

    def leaves(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.ArgumentParser]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [(path, parser)]
        return [leaf for name, p in subs[0].choices.items() for leaf in leaves(p, f"{path} {name}")]

    found = leaves(build_parser(), "vigie")
    assert len(found) > 40
    missing = [path for path, p in found if not callable(p.get_default("handler"))]
    assert missing == []
