"""Line charts whose points survive a page reload (they live in the app's data, server-side)."""

from __future__ import annotations

import math

from supervisely.app.widgets import LinePlot


class Chart:
    """A LinePlot fed point by point; non-finite values are left out of the plot (JSON has no
    NaN), the status line reports them."""

    def __init__(self, title: str, widget_id: str) -> None:
        self.plot = LinePlot(title, series=[], widget_id=widget_id, decimals_in_float=4)
        self._names: set[str] = set()

    def add(self, name: str, x: float, y: float | None) -> None:
        if y is None or not math.isfinite(y):
            return
        if name not in self._names:
            self._names.add(name)
            self.plot.add_series(name, [x], [y])
        else:
            self.plot.add_to_series(name, [(x, y)])

    def clear(self) -> None:
        self._names.clear()
        self.plot.clean_up()

    def series(self) -> dict[str, list]:
        return {s["name"]: list(s["data"]) for s in self.plot._series}
