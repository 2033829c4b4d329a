"""Before the steps: start from an experiment, the settings of a run this app uploaded.

Its choices are the store's runs that carry their settings (``app_state.json``: Team Files on the
platform, the folder standing in for it elsewhere). Loading one fills every step, each still
editable; the message says where the settings came from and what did not hold in this project.
"""

from __future__ import annotations

from supervisely.app.widgets import (
    Button,
    Card,
    Container,
    Field,
    Flexbox,
    RadioGroup,
    Select,
    Text,
)

from src.setup.app_state import MODES, LoadedState

MODE_LABELS = {
    "new": "Its settings (a new run, from the weights it started from)",
    "continue": "Its settings, from its best checkpoint (fine-tune it further)",
}


class ExperimentStep:
    """Args: experiments: the store's runs with settings (``RunCatalog.experiments``)."""

    def __init__(self, experiments) -> None:
        self.experiments = experiments
        self.select = Select([], filterable=True, widget_id="exp_select")
        self.mode = RadioGroup(
            [RadioGroup.Item(m, MODE_LABELS[m]) for m in MODES], widget_id="exp_mode"
        )
        self.load_button = Button("Load its settings", button_size="small", widget_id="exp_load")
        self.refresh_button = Button(
            "Refresh", button_size="small", plain=True, widget_id="exp_refresh"
        )
        self.message = Text("", widget_id="exp_message")
        self.card = Card(
            "Start from an experiment (optional)",
            "fill every step with the settings of a run this app trained; each stays editable",
            content=Container(
                [
                    Field(self.select, "Experiment"),
                    self.mode,
                    Flexbox([self.load_button, self.refresh_button]),
                    self.message,
                ]
            ),
            collapsable=True,
            widget_id="card_experiment",
        )
        self.refresh()

        @self.refresh_button.click
        def _refresh() -> None:
            self.refresh()

    def refresh(self) -> None:
        rows = self.experiments()
        items = [
            Select.Item(r["run_id"], f"{r['run_id']} · {r['model']} · {r['project']} · "
                        f"{r['datetime']}")
            for r in rows
        ]  # fmt: skip
        self.select.set(items or [Select.Item("", "(no run with its settings yet)")])

    @property
    def chosen(self) -> tuple[str | None, str]:
        """(the chosen run id or None, the mode)."""
        return self.select.get_value() or None, self.mode.get_value() or MODES[0]

    def show_loaded(self, loaded: LoadedState) -> None:
        what = "its settings" if loaded.mode == "new" else "its settings and best checkpoint"
        lines = [f"Loaded {what} from {loaded.source}; every step below can still be changed."]
        lines += [f"Not loaded: {note}" for note in loaded.notes]
        self.message.set("<br>".join(lines), "warning" if loaded.notes else "success")

    def show_problem(self, text: str) -> None:
        self.message.set(text, "error")
