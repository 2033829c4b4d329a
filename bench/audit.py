"""How well the label-error audit finds errors put into a demo project from a seed (issue 38,
item 3; docs/after-training.md): N errors injected (dropped objects, swapped classes, shifted boxes,
spurious boxes), ``python -m src.cli audit`` run on the copy with ``make train``'s settings, and
the precision and recall of its top 2 x N suspects, per kind and overall. Goal: recall >= 0.7
overall.

    .venv/bin/python bench/audit.py [--images 96] [--errors 32] [--folds 3] [--seed 0]
                                    [--out DIR] [-- extra audit/train options]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.demo import demo_train_command  # noqa: E402  (after the path: bench is not installed)


def audit_command(project: Path, out: Path, root: Path, folds: int, extra: list[str]) -> list[str]:
    """``audit`` with the Makefile's ``train`` settings (its model, epochs, size, lr, seed)."""
    train = demo_train_command()
    settings = train[train.index("train") + 1 :]
    at = settings.index("--project")
    settings = settings[:at] + settings[at + 2 :]  # the audit names the project
    return [
        sys.executable, "-m", "src.cli", "audit", "--project", str(project), "--folds", str(folds),
        "--out", str(out), "--app-data", str(root / "app_data"), "--team-files",
        str(root / "team_files"), "--audit-id", "bench", *settings, *extra,
    ]  # fmt: skip


def _table(result: dict) -> list[str]:
    lines = [f"{'kind':<12} {'errors':>6} {'shown':>6} {'found':>6} {'precision':>9} {'recall':>7}"]
    rows = [*result["per_kind"].items(), ("overall", result["overall"])]
    rows.append(("all suspects", result["all_suspects"]))
    for name, r in rows:
        p = "-" if r["precision"] is None else f"{r['precision']:.2f}"
        rc = "-" if r["recall"] is None else f"{r['recall']:.2f}"
        lines.append(f"{name:<12} {r['errors']:>6} {r['shown']:>6} {r['found']:>6} {p:>9} {rc:>7}")
    return lines


def main() -> None:
    from src.audit.inject import inject_errors, measure
    from src.data.demo import DemoOptions, make_demo_project

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--errors", type=int, default=32)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="the errors' seed")
    parser.add_argument("--out", help="where to keep everything (default: a new temp folder)")
    parser.add_argument("extra", nargs="*", help="more audit or train options (after --)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_audit_")).resolve()
    demo = make_demo_project(
        root / "demo", DemoOptions(images=args.images, seed=0, mixed_sizes=True)
    )
    truth = inject_errors(demo, root / "with_errors", args.errors, args.seed)
    command = audit_command(root / "with_errors", root / "audit", root, args.folds, args.extra)
    print("audit:", " ".join(command[1:]), flush=True)
    started = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=True)
    minutes = (time.monotonic() - started) / 60
    suspects = json.loads((root / "audit" / "suspects.json").read_text())
    result = measure(suspects["suspects"], truth)
    result |= {
        "images": args.images, "errors": args.errors, "folds": args.folds, "seed": args.seed,
        "minutes": round(minutes, 1), "command": command[1:], "folds_detail": suspects["folds"],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }  # fmt: skip
    (root / "measurement.json").write_text(json.dumps(result, indent=1))
    print("\n".join(_table(result)))
    for fold in suspects["folds"]:
        print(f"fold {fold['fold']}: confident from {fold['confident']:.3f}, validation "
              f"{fold['validation']}")  # fmt: skip
    print(f"{args.images} images, {args.errors} errors (seed {args.seed}), K={args.folds}: "
          f"{minutes:.1f} min on {result['machine']}; everything in {root}")  # fmt: skip


if __name__ == "__main__":
    main()
