"""How much more labelling would help: fold 1's training images in nested subsets (25 %, 50 %,
and fold 1's own run for 100 %), each trained the same way and validated on fold 1's held-out
images; per class, the validation AP against the number of its labelled instances the run
trained on, fitted and read at twice the instances.

The curve is ``AP = a + b * ln(n)``: data-scaling studies find AP growing about linearly in the
logarithm of the training set over a range like this one (a doubling adds about ``b * ln 2``);
it cannot bend, so it says nothing of where a class saturates, and the estimate is clipped to
[0, 1]. Three points fit two numbers, leaving one degree of freedom: the uncertainty given is
the fit's standard error at 2x (one sigma, from the residual), a rough size of the fit's doubt,
not a confidence interval; a class whose AP did not move monotonically can get it large.

Every subset trains the same number of epochs as the full run (fewer iterations: the question is
what the same training recipe gives with more labels).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from src.audit.labels import read_labels
from src.core.layout import logged_scalars
from src.hooks.metrics import split_val_metrics

SHARES = (25, 50)  # percent of fold 1's training images, trained besides its own run (100 %)
CURVE_FOLD = 1  # the fold whose held-out images every subset validates on
CURVE_FILE = "learning_curve.json"


def nested_subsets(items: list[str], seed: int, shares=SHARES) -> dict[int, list[str]]:
    """``items`` shuffled once with ``seed``; each share the first ``ceil(share % * n)`` of them,
    so that the 25 % subset is inside the 50 % one; each sorted."""
    order = sorted(items)
    random.Random(seed).shuffle(order)
    return {s: sorted(order[: max(1, math.ceil(len(order) * s / 100))]) for s in shares}


def instances_per_class(
    project_dir: str | Path, items: list[str], classes: list[str], ignore=()
) -> dict[str, int]:
    """How many labelled objects of each class ``items`` hold (ignore regions not counted)."""
    counts = dict.fromkeys(classes, 0)
    for labels in read_labels(project_dir, items, classes, ignore).values():
        for index in labels.classes:
            counts[classes[index]] += 1
    return counts


def last_class_ap(work_dir: str | Path) -> dict[str, float] | None:
    """Per class, the AP of the run's last validation (mmdet's classwise COCO metric, as the
    run logged it); None when the run never validated. A validation in which the model
    predicted nothing logs no metric (mmdet: "the testing results of the whole dataset is
    empty"): then every class is missing, and the caller knows which had objects to find. A
    class without ground truth in the validation images is left out (NaN or -1)."""
    last: dict[str, float] | None = None
    for record in logged_scalars(work_dir):
        coco = {k: v for k, v in record.items() if k.startswith("coco/")}
        if coco:
            last = split_val_metrics(coco)[1]
        elif "time" in record and not any(k in record for k in ("lr", "loss")):
            last = {}  # mmengine's record of a validation that had no metric (no predictions)
    if last is None:
        return None
    return {name: ap for name, ap in last.items() if ap == ap and ap >= 0}


@dataclass
class ClassCurve:
    """One class's points, its fit and what the fit expects at twice its instances."""

    name: str
    shares: list[int]  # per point: the percentage of fold 1's training images its run had
    instances: list[int]  # per point: labelled objects of the class the run trained on
    ap: list[float]  # per point: the validation AP
    slope: float  # AP per unit of ln(instances): a doubling adds slope * ln 2
    expected_2x: float  # the fit at twice the last point's instances, clipped to [0, 1]
    stderr: float  # the fit's standard error there (one sigma; inf with fewer than 3 points)

    def expected_at(self, instances: int) -> float:
        """The fit's AP at ``instances`` objects, clipped to [0, 1]."""
        last = self.instances[-1]
        value = self.ap_fit_at_last + self.slope * math.log(max(instances, 1) / last)
        return min(1.0, max(0.0, value))

    @property
    def ap_fit_at_last(self) -> float:
        x = [math.log(n) for n in self.instances]
        mean_x, mean_y = sum(x) / len(x), sum(self.ap) / len(self.ap)
        return mean_y + self.slope * (x[-1] - mean_x)

    def stderr_at(self, instances: int) -> float:
        """The fit's standard error at ``instances`` objects (inf with fewer than 3 points)."""
        x = [math.log(n) for n in self.instances]
        m = len(x)
        if m < 3:
            return math.inf
        mean_x = sum(x) / m
        sxx = sum((v - mean_x) ** 2 for v in x)
        fitted = [self.ap_fit_at_last + self.slope * (v - x[-1]) for v in x]
        sigma = math.sqrt(sum((a - f) ** 2 for a, f in zip(self.ap, fitted, strict=True)) / (m - 2))
        return sigma * math.sqrt(1 / m + (math.log(max(instances, 1)) - mean_x) ** 2 / sxx)

    @property
    def monotonic(self) -> bool:
        """Whether the AP never fell as the objects grew: a class whose AP fell (one run that
        went wrong, a noisy validation) has a fit to check before believing."""
        return all(b >= a for a, b in zip(self.ap, self.ap[1:], strict=False))

    def as_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["stderr"] = None if math.isinf(self.stderr) else self.stderr
        body["monotonic"] = self.monotonic
        return body


def fit_class(
    name: str, shares: list[int], instances: list[int], ap: list[float]
) -> ClassCurve | None:
    """Least squares of ``ap`` on ``ln(instances)`` (None where fewer than two distinct counts
    have an AP: nothing to fit)."""
    points = [(s, n, a) for s, n, a in zip(shares, instances, ap, strict=True) if n > 0]
    if len({n for _, n, _ in points}) < 2:
        return None
    ns, aps = [n for _, n, _ in points], [a for _, _, a in points]
    x = [math.log(n) for n in ns]
    mean_x, mean_y = sum(x) / len(x), sum(aps) / len(aps)
    sxx = sum((v - mean_x) ** 2 for v in x)
    slope = sum((v - mean_x) * (a - mean_y) for v, a in zip(x, aps, strict=True)) / sxx
    curve = ClassCurve(name, [s for s, _, _ in points], ns, aps, slope, 0.0, math.inf)
    twice = 2 * ns[-1]  # read where the curve is read: ClassCurve's own two methods
    return replace(curve, expected_2x=curve.expected_at(twice), stderr=curve.stderr_at(twice))


def fit_curves(points: list[tuple[int, dict[str, int], dict[str, float]]]) -> list[ClassCurve]:
    """Per class, the fit over the runs' points (share, instances per class, AP per class),
    smallest run first; classes with nothing to fit are left out."""
    names = sorted({name for _, counts, _ in points for name in counts})
    curves = []
    for name in names:
        usable = [(s, c[name], ap[name]) for s, c, ap in points if name in ap and c.get(name)]
        columns = [list(column) for column in zip(*usable, strict=True)] if usable else []
        curve = fit_class(name, *columns) if columns else None
        if curve is not None:
            curves.append(curve)
    return curves
