"""The learning curve's pieces (src/audit/learning_curve.py), no training: nested subsets, the
instance counts, the per-class AP a run logged, and the fit read at twice the instances."""

from __future__ import annotations

import json
import math

import pytest

from src.audit.learning_curve import (
    fit_class,
    fit_curves,
    instances_per_class,
    last_class_ap,
    nested_subsets,
)
from src.audit.plan import AuditPlan


def test_subsets_are_nested_seeded_and_round_up():
    items = [f"ds/{i:03d}.jpg" for i in range(10)]
    subsets = nested_subsets(items, seed=3)
    assert [len(subsets[25]), len(subsets[50])] == [3, 5]  # ceil(2.5), 5
    assert set(subsets[25]) < set(subsets[50]) < set(items)
    assert subsets == nested_subsets(list(reversed(items)), seed=3)  # the order given: no matter
    assert subsets != nested_subsets(items, seed=4)


def test_a_plans_curve_split_keeps_the_fold_held_out(tmp_path):
    folds = [[f"ds/{k}{i}.jpg" for i in range(4)] for k in "abc"]
    plan = AuditPlan("a1", str(tmp_path), str(tmp_path / "out"), folds, seed=0, curve=True)
    full, quarter = plan.split(1), plan.split(1, 25)
    assert full.val_items == quarter.val_items == folds[0]
    assert len(full.train_items) == 8 and len(quarter.train_items) == 2
    assert set(quarter.train_items) < set(plan.split(1, 50).train_items) < set(full.train_items)
    assert plan.run_id(1, 25) == "a1_fold1_curve25" and plan.run_id(1) == "a1_fold1"


def test_a_straight_line_in_log_instances_is_read_exactly_at_twice():
    ns = [10, 20, 40]
    aps = [0.1 + 0.05 * math.log(n) for n in ns]
    curve = fit_class("cat", [25, 50, 100], ns, aps)
    assert curve.slope == pytest.approx(0.05)
    assert curve.expected_2x == pytest.approx(0.1 + 0.05 * math.log(80))
    assert curve.stderr == pytest.approx(0.0, abs=1e-12)
    assert curve.expected_at(40) == pytest.approx(aps[-1])


def test_noise_gives_an_error_and_the_estimate_stays_a_probability():
    noisy = fit_class("cat", [25, 50, 100], [10, 20, 40], [0.5, 0.45, 0.9])
    assert noisy.stderr > 0.1  # a zig-zag is not a confident trend
    assert not noisy.monotonic and noisy.as_dict()["monotonic"] is False
    assert noisy.stderr_at(80) == pytest.approx(noisy.stderr)  # 2x the last point's 40
    assert noisy.stderr_at(20) < noisy.stderr  # the error grows away from the points' middle
    steep = fit_class("dog", [25, 50, 100], [10, 20, 40], [0.3, 0.6, 0.9])
    assert steep.expected_2x == 1.0 and steep.monotonic  # clipped
    assert fit_class("one", [25, 50], [10, 20], [0.2, 0.3]).stderr == math.inf  # no residual
    assert fit_class("same", [25, 50], [10, 10], [0.2, 0.3]) is None  # nothing to fit


def test_classes_without_ap_or_objects_in_a_run_lose_that_point():
    points = [
        (25, {"cat": 0, "dog": 5}, {"cat": 0.0, "dog": 0.2}),  # no cat objects: no cat point
        (50, {"cat": 4, "dog": 10}, {"dog": 0.3}),  # cat's AP absent (no validation objects)
        (100, {"cat": 8, "dog": 20}, {"cat": 0.4, "dog": 0.4}),
    ]
    curves = {c.name: c for c in fit_curves(points)}
    assert set(curves) == {"dog"}  # cat has one usable point
    assert curves["dog"].shares == [25, 50, 100] and curves["dog"].instances == [5, 10, 20]


def test_instances_are_counted_per_class_from_the_items(tmp_path):
    from src.data.demo import DemoOptions, make_demo_project
    from src.data.reader import list_items, read_meta

    project = make_demo_project(tmp_path / "p", DemoOptions(images=4, seed=2))
    classes = [c["title"] for c in read_meta(project)["classes"]]
    items = [name for name, _ in list_items(project)]
    total = 0
    for _name, path in list_items(project):
        total += len(json.loads(path.read_text())["objects"])
    counts = instances_per_class(project, items, classes)
    assert sum(counts.values()) == total > 0
    assert instances_per_class(project, items[:1], classes) != counts


def test_the_last_validations_per_class_ap_is_read_from_the_runs_log(tmp_path):
    scalars = tmp_path / "20261206_120000" / "vis_data" / "scalars.json"
    scalars.parent.mkdir(parents=True)
    records = [
        {"loss": 1.0, "step": 1},
        {"coco/bbox_mAP": 0.1, "coco/cat_precision": 0.1, "coco/dog_precision": 0.2, "step": 2},
        {"coco/bbox_mAP": 0.3, "coco/cat_precision": 0.5, "coco/dog_precision": -1.0, "step": 4},
    ]
    scalars.write_text("\n".join(json.dumps(r) for r in records))
    assert last_class_ap(tmp_path) == {"cat": 0.5}  # dog: no ground truth there (-1)
    # a later validation in which the model predicted nothing: mmdet logs no metric, mmengine
    # its times; not the older metrics
    records += [{"lr": 0.1, "loss": 0.5, "time": 0.2, "step": 5}, {"time": 0.1, "step": 6}]
    scalars.write_text("\n".join(json.dumps(r) for r in records))
    assert last_class_ap(tmp_path) == {}
    scalars.write_text(json.dumps(records[0]))
    assert last_class_ap(tmp_path) is None  # never validated
