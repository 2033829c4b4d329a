"""``zoo``: the model zoo as a table, one default model per architecture (``--all``: every one).

What a user reads to pick ``train --model``; the entries are mmdet's own metafiles
(``src.config.zoo``).
"""

from __future__ import annotations

import argparse

from src.core.tasks import DETECTION, TASKS


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The command's options: the task, an architecture, every model or one each."""
    zoo_p = sub.add_parser("zoo", help="list the model zoo")
    zoo_p.add_argument("--task", default=DETECTION, choices=list(TASKS))
    zoo_p.add_argument("--architecture", help="only this architecture (display name)")
    zoo_p.add_argument("--all", action="store_true", help="every model, not one per architecture")
    zoo_p.set_defaults(func=cmd_zoo)


def _fmt(value: object) -> str:
    """A table cell: ``-`` for a value the metafile does not give, floats without trailing 0s."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def cmd_zoo(args: argparse.Namespace) -> int:
    """Print the table, its columns as wide as their widest cell, and how many rows it has."""
    from src.config import zoo

    entries = zoo.list_models(args.task, args.architecture)
    if not args.all:
        entries = [e for e in entries if e.is_default] if args.architecture is None else entries
    columns = [
        "architecture",
        "model",
        "box AP",
        "mask AP",
        "memory (GB)",
        "inference (ms)",
        "paper",
    ]
    if args.task == DETECTION:
        columns.remove("mask AP")
    rows = [[_fmt(e.as_row()[c]) for c in columns] for e in entries]
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)
    ]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    scope = (
        "models"
        if args.all or args.architecture
        else "architectures (default model each; --all for every model)"
    )
    print(f"\n{len(rows)} {scope}")
    return 0
