"""The house rules the next engineer relies on: every module says what it exports, none grows unexplained.

- Every module of the four packages has ``__all__``, naming every public function and class it
  defines (so ``from x import *`` and the docs tools see the same surface) and nothing it lacks.
- No module is over 400 lines unless its docstring says why (``Longer than 400 lines because …``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(p for pkg in ("vigie", "edge", "hub", "ota") for p in (ROOT / pkg).rglob("*.py"))
MAX_LINES = 400
REASON = "Longer than 400 lines because"


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        for target in targets:
            if isinstance(target, ast.Name) and target.id == "__all__":
                value = node.value
                assert isinstance(value, (ast.List, ast.Tuple)), "__all__ must be a literal list"
                # ``[*base.__all__, …]`` re-exports a submodule's list, checked in that submodule.
                return [ast.literal_eval(e) for e in value.elts if not isinstance(e, ast.Starred)]
    return None


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "__main__.py"], ids=_ids)
def test_all_names_every_public_definition(path: Path) -> None:
    tree = ast.parse(path.read_text())
    declared = _declared_all(tree)
    assert declared is not None, f"{path.relative_to(ROOT)} has no __all__: list what it exports"
    defined = {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }
    public = {name for name in defined if not name.startswith("_")}
    assert not public - set(declared), (
        f"{path.relative_to(ROOT)}: add {sorted(public - set(declared))} to __all__"
    )
    source = path.read_text()
    for name in declared:
        assert name in source, f"{path.relative_to(ROOT)}: __all__ names {name!r}, which it does not define"


@pytest.mark.parametrize("path", MODULES, ids=_ids)
def test_no_module_grows_unexplained(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    if lines <= MAX_LINES:
        return
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert REASON in docstring, (
        f"{path.relative_to(ROOT)} has {lines} lines: split it by job, or say at its top why not "
        f"('{REASON} …')"
    )
