"""One declaration per name (issue 37): run-file names live in src/core/layout.py and the task
names in src/core/tasks.py; no other module spells them in a string (docstrings aside)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
HOMES = {SRC / "core" / "layout.py", SRC / "core" / "tasks.py"}
# what a string holding a run file's or a task's name looks like
SPELLED = re.compile(
    r"coco_gt_(?!file$)|^_upload$|^_sync$|^config\.py$|^logs/$|^tensorboard\.log$|(^|_)(epoch|iter)_$"
    r"|(epoch|iter|best)_\*?\.pth|^\*\.pth$|^object[- ]detection$|^instance[- ]segmentation$"
)


def _strings(tree: ast.AST) -> list[ast.Constant]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    ]  # fmt: skip


def test_run_file_and_task_names_are_spelled_only_in_their_homes():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path in HOMES:
            continue
        for node in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            if SPELLED.search(node.value):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)
