"""Sizes a reader can hold (issue 37, item 4): no function in src over 60 lines, no module over
500 lines. A function counts from its ``def`` to its last line (decorators excluded), read with
``ast``; a module counts every line of its file."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500


def oversized(src: Path = SRC) -> list[str]:
    """Each function over MAX_FUNCTION_LINES and module over MAX_MODULE_LINES under ``src``."""
    found = []
    for path in sorted(src.rglob("*.py")):
        name = path.relative_to(src).as_posix()
        text = path.read_text(encoding="utf-8")
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{name}: {lines} lines (module, at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(
                        f"{name}:{node.lineno} {node.name}: {length} lines "
                        f"(function, at most {MAX_FUNCTION_LINES})"
                    )
    return found


def test_the_check_sees_a_long_function_and_a_long_module(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def f():\n{body}\n" + "\n" * MAX_MODULE_LINES)
    (tmp_path / "short.py").write_text("def g():\n    return 1\n")
    found = oversized(tmp_path)
    assert len(found) == 2
    assert found[0].startswith("long.py: ") and found[1].startswith("long.py:1 f: 61 lines")


def test_no_long_function_or_module_in_src():
    found = oversized()
    assert not found, "split these (issue 37, item 4):\n" + "\n".join(found)
