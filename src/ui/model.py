"""Step 3: a pretrained zoo model, custom weights, or a run to resume."""

from __future__ import annotations

from supervisely.app.widgets import (
    Button,
    Card,
    Checkbox,
    Container,
    Field,
    Input,
    RadioTable,
    RadioTabs,
    Select,
    Text,
)

from src.config import zoo

COLUMNS = ["model", "box AP", "mask AP", "memory (GB)", "inference (ms)", "note"]
LEADERBOARD = "All architectures (leaderboard)"  # every model of the task in one table
# how the table can be ordered: (label, ZooEntry field, best first is the largest)
SORTS = {
    "zoo order": (None, False),
    "box AP": ("box_ap", True),
    "mask AP": ("mask_ap", True),
    "training memory": ("train_memory_gb", False),
    "inference time": ("inference_ms", False),
}
RUN_COLUMNS = ["run", "where", "model", "epoch", "iteration", "saved", "last mAP"]
TAB_PRETRAINED, TAB_CUSTOM, TAB_RESUME = "Pretrained", "Custom weights", "Resume"


def _cell(value: object) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


class ModelStep:
    def __init__(self, task: str, runs_provider) -> None:
        self.runs_provider = runs_provider
        self.architecture = Select([], filterable=True, widget_id="model_arch")
        self.table = RadioTable(COLUMNS, [["-"] * len(COLUMNS)], widget_id="model_table")
        self.sort = Select([Select.Item(k, k) for k in SORTS], widget_id="model_sort")
        self.sort.set_value("zoo order")
        self.pretrained = Checkbox("Start from the COCO-pretrained weights", True, "model_pre")
        self.weights_path = Input(
            placeholder="checkpoint (.pth): a local path or a Team Files path (/mmdetection-3/...)",
            widget_id="model_w",
        )
        self.config_path = Input(
            placeholder="its config.py (local or Team Files)", widget_id="model_cfg"
        )
        self.runs = RadioTable(RUN_COLUMNS, [["-"] * len(RUN_COLUMNS)], widget_id="model_runs")
        self.refresh = Button("Refresh", button_size="small", widget_id="model_runs_refresh")
        self.message = Text("", widget_id="model_message")
        self.tabs = RadioTabs(
            titles=[TAB_PRETRAINED, TAB_CUSTOM, TAB_RESUME],
            contents=[
                Container(
                    [
                        Field(self.architecture, "Architecture"),
                        Field(self.sort, "Order by"),
                        self.table,
                        self.pretrained,
                    ]
                ),
                Container(
                    [Field(self.weights_path, "Checkpoint"), Field(self.config_path, "Config")]
                ),
                Container([self.runs, self.refresh]),
            ],
            descriptions=[
                "a model of mmdet's zoo",
                "an earlier run's checkpoint and config.py",
                "continue a stopped or crashed run from app data",
            ],
            widget_id="model_tabs",
        )
        self.card = Card(
            "Model", content=Container([self.tabs, self.message]), widget_id="card_model"
        )
        self._entries: list[zoo.ZooEntry] = []
        self._runs: list[dict] = []
        self.set_task(task)
        self.refresh_runs()

        @self.architecture.value_changed
        def _architecture_changed(value: str) -> None:
            self.show_architecture(value)

        @self.sort.value_changed
        def _sort_changed(value: str) -> None:
            self.show_architecture(self.architecture.get_value())

        @self.refresh.click
        def _refresh() -> None:
            self.refresh_runs()

    # ------------------------------------------------------------------ updates
    def set_task(self, task: str) -> None:
        self.task = task
        names = zoo.architectures(task)
        self.architecture.set([Select.Item(n, n) for n in [*names, LEADERBOARD]])
        self.architecture.set_value(names[0])
        self.show_architecture(names[0])

    def show_architecture(self, architecture: str) -> None:
        """One architecture's models, or every model of the task (the leaderboard, with an
        architecture column), in the chosen order (missing values last)."""
        everything = architecture == LEADERBOARD
        entries = zoo.list_models(self.task, None if everything else architecture)
        field, largest_first = SORTS.get(self.sort.get_value(), (None, False))
        if field is not None:
            known = [e for e in entries if getattr(e, field) is not None]
            known.sort(key=lambda e: getattr(e, field), reverse=largest_first)
            entries = known + [e for e in entries if getattr(e, field) is None]
        self._entries = entries
        columns = ["architecture", *COLUMNS] if everything else COLUMNS
        rows = []
        for e in entries:
            note = (
                e.unsupported
                or e.gpu_only
                or (f"needs {', '.join(e.missing_packages())}" if e.missing_packages() else "")
            )
            cells = [e.model, _cell(e.box_ap), _cell(e.mask_ap), _cell(e.train_memory_gb),
                     _cell(e.inference_ms), note or "-"]  # fmt: skip
            rows.append([e.architecture, *cells] if everything else cells)
        self.table.set_data(columns, rows, [None] * len(columns))
        default = next((i for i, e in enumerate(entries) if e.is_default), 0)
        self.table.select_row(default)

    def refresh_runs(self) -> None:
        import time

        self._runs = self.runs_provider()
        rows = [
            [
                r["run_id"],
                r["where"],
                r["model"],
                f"{r['epoch']}/{r['max_epochs']}",
                str(r["iteration"]),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r["saved_at"])),
                _cell(r["mAP"]),
            ]
            for r in self._runs
        ]
        self.runs.set_data(
            RUN_COLUMNS, rows or [["-"] * len(RUN_COLUMNS)], [None] * len(RUN_COLUMNS)
        )

    # ------------------------------------------------------------------ values
    @property
    def mode(self) -> str:
        return self.tabs.get_active_tab()

    def selected_entry(self) -> zoo.ZooEntry | None:
        index = self.table.get_selected_row_index()
        if index is None or not (0 <= index < len(self._entries)):
            return None
        return self._entries[index]

    def selected_run(self) -> str | None:
        index = self.runs.get_selected_row_index()
        if index is None or not (0 <= index < len(self._runs)):
            return None
        return self._runs[index]["run_id"]

    def problems(self) -> list[str]:
        if self.mode == TAB_PRETRAINED:
            entry = self.selected_entry()
            if entry is None:
                return ["select a model in the table"]
            return [f"{entry.model}: {entry.unsupported}"] if entry.unsupported else []
        if self.mode == TAB_CUSTOM:
            missing = [
                n
                for n, w in (("checkpoint", self.weights_path), ("config", self.config_path))
                if not w.get_value().strip()
            ]
            return [f"give the {', '.join(missing)} path"] if missing else []
        return [] if self.selected_run() else ["no resumable run selected"]

    def get_state(self) -> dict:
        entry = self.selected_entry()
        return {
            "mode": self.mode,
            "model": entry.model if entry else None,
            "pretrained": self.pretrained.is_checked(),
            "weights_path": self.weights_path.get_value(),
            "config_path": self.config_path.get_value(),
            "resume_run": self.selected_run(),
        }
