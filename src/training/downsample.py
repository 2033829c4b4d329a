"""Bounded point lists: a long run keeps its whole curve in constant memory.

A 100k-iteration run logs 10k training records (every 10 iterations); kept as they come, the
session history, each chart's points (whose JSON the page fetches and the SDK diffs on every
change) and ``metrics.json`` grow without end. ``thin_older`` halves the older part of a list
whenever it passes its limit: the newest points stay dense, older ones get sparser (each halving
keeps every second one), the first point always stays, and the cost is amortised O(1) per point.
The session history uses it; the charts keep the same ``MAX_POINTS`` but thin a window at a time
(``src.ui.charts``), because the SDK's diff of a whole rewritten list is quadratic.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

MAX_POINTS = 2000  # per series: well beyond what a chart a few hundred pixels wide can show


def thin_older(points: list[T], limit: int = MAX_POINTS) -> list[T]:
    """``points`` itself while it has at most ``limit`` items; else a list of about
    ``3/4 * limit``: every second item of the older half, then the newer half as it is."""
    if len(points) <= limit:
        return points
    keep = limit // 2
    return points[:-keep:2] + points[-keep:]
