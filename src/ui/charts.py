"""Line charts whose points survive a page reload (they live in the app's data, server-side)."""

from __future__ import annotations

import math

from supervisely.app import DataJson
from supervisely.app.widgets import LinePlot

from src.training.downsample import MAX_POINTS

WINDOW = 100  # points thinned at a time in a full series (see Chart._thin)


class Chart:
    """A LinePlot fed point by point; non-finite values are left out of the plot (JSON has no
    NaN), the status line reports them. Each series keeps at most ``MAX_POINTS`` points, the
    older ones thinned a window at a time (:meth:`_thin`)."""

    def __init__(self, title: str, widget_id: str) -> None:
        self.plot = LinePlot(title, series=[], widget_id=widget_id, decimals_in_float=4)
        self._names: set[str] = set()

    def add(self, name: str, x: float, y: float | None, send: bool = True) -> None:
        """Add a point; with ``send=False`` it waits for the next :meth:`send` (each send makes
        the SDK deep-copy and diff the whole page data, which is what a point per iteration
        must not cost)."""
        if y is None or not math.isfinite(y):
            return
        if name not in self._names:
            self._names.add(name)
            self.plot.add_series(name, [x], [y])  # (sends)
            return
        series_id, _ = self.plot.get_series_by_name(name)
        data = self.plot._series[series_id]["data"]  # the same list the page data holds
        if len(data) >= MAX_POINTS:
            self._thin(data)
        data.append((x, y))
        if send:
            self.send()

    def _thin(self, data: list) -> None:
        """Halve the densest window of ``WINDOW`` points in the older half of a full series.

        Not :func:`thin_older` on the whole list: the SDK diffs the page data on every send,
        and its list diff is quadratic in the changed region (a whole-list thinning of 2000
        points cost 0.25 s under the GIL). So the pending points are sent first (a diff that is
        a common prefix plus an append), then one window changes and is sent (a common prefix
        and suffix around a 100-point region). Older windows, already thinned, span more
        iterations and are picked less: the curve's old part gets evenly sparser."""
        self.send()
        starts = range(0, max(1, len(data) // 2 - WINDOW + 1), WINDOW)
        start = min(starts, key=lambda i: data[i + WINDOW - 1][0] - data[i][0])
        data[start : start + WINDOW] = data[start : start + WINDOW : 2]
        self.send()

    def send(self) -> None:
        """Push the points added since the last send to the page."""
        send_all([self])

    def clear(self) -> None:
        self._names.clear()
        self.plot.clean_up()

    def series(self) -> dict[str, list]:
        return {s["name"]: list(s["data"]) for s in self.plot._series}


def send_all(charts: list[Chart]) -> None:
    """Push the pending points of several charts in one page update (each update deep-copies
    and diffs the whole page data, however little changed)."""
    for chart in charts:
        DataJson()[chart.plot.widget_id]["series"] = chart.plot._series
    DataJson().send_changes()
