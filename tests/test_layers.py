"""The source tree's layers (docs/architecture.md): imports only point down the list
entry points -> app -> hooks -> engine -> data -> runs -> config -> core (errors, task names, the
run folder's names: imports nothing of ours), with no special case; and the project model and
the reader of the project format do not import mmdet (the UI builds on them)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = [
    "entry", "audit", "training", "publish", "setup", "prelabel", "evaluation", "export", "hooks",
    "engine", "data", "runs", "config", "core",
]  # fmt: skip


def _layer(module: str) -> str:
    part = module.split(".")[1]
    return "entry" if part in ("web", "cli", "ui") else part


def test_imports_only_point_down_the_layers():
    upward = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module in ("src.__init__",):
            continue
        mine = _layer(module)
        for imported in re.findall(r"^\s*(?:from|import) (src(?:\.\w+)+)", path.read_text(), re.M):
            other = _layer(imported)
            if other != mine and ORDER.index(other) < ORDER.index(mine):
                upward.append(f"{module} ({mine}) imports {imported} ({other})")
    assert not upward, "\n".join(upward)


def test_the_project_model_does_not_import_mmdet():
    code = (
        "import sys; import src.data.project, src.data.reader, src.config.params, "
        "src.config.editor, src.runs.info; print('mmdet' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
