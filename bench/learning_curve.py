"""The audit's learning curve against a real 2x run (issue 38, item 4; docs/after-training.md):
``python -m src.cli audit --learning-curve`` on a demo project with ``make train``'s settings,
then a real run on fold 1's training images plus as many new images of the same kind (the demo
generator with another seed), validated on the same held-out fold. Per class: the AP the curve
expected at the real run's instances (with the fit's standard error) against the AP it got.

    .venv/bin/python bench/learning_curve.py [--images 96] [--folds 2] [--out DIR]
                                             [-- extra audit/train options]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.audit import audit_command  # noqa: E402  (after the path: bench is not installed)
from bench.demo import demo_train_command  # noqa: E402

TRAIN_TAG, VAL_TAG = "twice_train", "twice_val"


def twice_project(demo: Path, extra: Path, into: Path, train: list[str], val: list[str]) -> int:
    """``demo`` copied with ``len(train)`` images of ``extra`` added as the dataset ``added``;
    fold 1's training images and the added ones tagged to train, its held-out ones to validate.
    Returns how many images were added."""
    from src.data.reader import list_items

    shutil.copytree(demo, into)
    added = [(n, p) for n, p in list_items(extra)][: len(train)]
    (into / "added" / "img").mkdir(parents=True)
    (into / "added" / "ann").mkdir(parents=True)
    for _name, ann in added:
        image = ann.parent.parent / "img" / ann.name[: -len(".json")]
        shutil.copy(image, into / "added" / "img" / image.name)
        shutil.copy(ann, into / "added" / "ann" / ann.name)
    wanted = {**dict.fromkeys(train, TRAIN_TAG), **dict.fromkeys(val, VAL_TAG)}
    for name, ann_path in list_items(into):
        tag = TRAIN_TAG if name.startswith("added/") else wanted.get(name)
        if tag:
            ann = json.loads(ann_path.read_text())
            ann["tags"] = [*ann.get("tags", []), {"name": tag, "value": None}]
            ann_path.write_text(json.dumps(ann))
    meta_path = into / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["tags"] = [*meta.get("tags", []), *({"name": t, "value_type": "none",
                    "color": "#888888"} for t in (TRAIN_TAG, VAL_TAG))]  # fmt: skip
    meta_path.write_text(json.dumps(meta))
    return len(added)


def compare(curve: dict, real_counts: dict[str, int], real_ap: dict[str, float]) -> list[dict]:
    """Per class of the curve: expected at the real run's instances (± the fit's error) and got."""
    from src.audit.learning_curve import ClassCurve

    rows = []
    for c in curve["classes"]:
        fields = {k: v for k, v in c.items() if k != "monotonic"}  # a property, not a field
        fit = ClassCurve(**{**fields, "stderr": math.inf if c["stderr"] is None else c["stderr"]})
        if c["name"] not in real_ap:
            continue
        n = real_counts[c["name"]]
        expected, got = fit.expected_at(n), real_ap[c["name"]]
        stderr = fit.stderr_at(n)  # at the real run's objects, where the AP is read
        rows.append({
            "class": c["name"], "instances": c["instances"], "ap": c["ap"], "real_instances": n,
            "expected": round(expected, 4), "stderr": round(stderr, 4), "real_ap": round(got, 4),
            "error": round(got - expected, 4), "within_stderr": abs(got - expected) <= stderr,
            "real_gain": round(got - c["ap"][-1], 4),
            "expected_gain": round(expected - c["ap"][-1], 4),
        })  # fmt: skip
    return rows


def main() -> None:
    from src.audit.learning_curve import instances_per_class, last_class_ap
    from src.data.demo import DemoOptions, make_demo_project
    from src.data.project import open_local_project, tag_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--out", help="where to keep everything (default: a new temp folder)")
    parser.add_argument("extra", nargs="*", help="more audit or train options (after --)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_curve_")).resolve()
    options = dict(images=args.images, mixed_sizes=True)
    demo = make_demo_project(root / "demo", DemoOptions(seed=0, **options))
    more = make_demo_project(root / "more", DemoOptions(seed=1, **options))
    started = time.monotonic()
    command = audit_command(
        demo, root / "audit", root, args.folds, ["--learning-curve", *args.extra]
    )
    print("audit:", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)
    audit_minutes = (time.monotonic() - started) / 60
    curve = json.loads((root / "audit" / "learning_curve.json").read_text())
    plan = json.loads((root / "app_data" / "_audits" / "bench" / "audit.json").read_text())
    held = plan["folds"][0]
    train = sorted(i for fold in plan["folds"][1:] for i in fold)
    added = twice_project(demo, more, root / "twice", train, held)

    settings = demo_train_command()
    settings = settings[settings.index("train") + 1 :]
    at = settings.index("--project")
    settings[at + 1] = str(root / "twice")
    real = [sys.executable, "-m", "src.cli", "train", *settings, "--train-tag", TRAIN_TAG,
            "--val-tag", VAL_TAG, "--no-evaluate", "--run-id", "twice", "--app-data",
            str(root / "app_data"), "--team-files", str(root / "team_files"),
            *args.extra]  # fmt: skip
    started = time.monotonic()
    print("2x run:", " ".join(real[1:]), flush=True)
    subprocess.run(real, cwd=ROOT, check=True)
    real_minutes = (time.monotonic() - started) / 60
    split = tag_split(open_local_project(root / "twice"), TRAIN_TAG, VAL_TAG)
    classes = sorted(curve["runs"][-1]["instances"])
    real_counts = instances_per_class(root / "twice", split.train_items, classes)
    rows = compare(curve, real_counts, last_class_ap(root / "app_data" / "twice"))
    result = {
        "images": args.images, "folds": args.folds, "added_images": added,
        "audit_minutes": round(audit_minutes, 1), "real_run_minutes": round(real_minutes, 1),
        "curve_runs": curve["runs"], "classes": rows,
        "mean_abs_error": round(sum(abs(r["error"]) for r in rows) / max(1, len(rows)), 4),
        "within_stderr": sum(r["within_stderr"] for r in rows),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "command": command[1:], "real_command": real[1:],
    }  # fmt: skip
    (root / "measurement.json").write_text(json.dumps(result, indent=1))
    print(f"{'class':<12} {'objects':>14} {'AP 25/50/100 %':>20} {'2x objects':>10} "
          f"{'expected':>14} {'real':>6}")  # fmt: skip
    for r in rows:
        err = "" if r["stderr"] is None else f"±{r['stderr']:.3f}"
        print(f"{r['class']:<12} {'/'.join(map(str, r['instances'])):>14} "
              f"{'/'.join(f'{a:.3f}' for a in r['ap']):>20} {r['real_instances']:>10} "
              f"{r['expected']:.3f}{err:>7} {r['real_ap']:>6.3f}")  # fmt: skip
    print(f"mean |real - expected| {result['mean_abs_error']:.3f}; within one standard error: "
          f"{result['within_stderr']} of {len(rows)} classes; audit {audit_minutes:.1f} min, "
          f"2x run {real_minutes:.1f} min on {result['machine']}; all in {root}")  # fmt: skip


if __name__ == "__main__":
    main()
