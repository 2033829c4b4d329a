"""Step 3: a pretrained zoo model, custom weights, or a run to resume."""

from __future__ import annotations

from collections.abc import Callable

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
    TeamFilesSelector,
    Text,
)

from src.config import zoo
from src.runs.checkpoints import SEARCH_DEPTH, find_checkpoints_on_disk

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
    """Args:
    task: the task whose zoo is shown first.
    runs_provider: the resumable runs (``TrainingController.runs``).
    checkpoints_provider: checkpoints with a config beside them in the store
        (``RunCatalog.checkpoint_files``): the custom-weights picker's choices.
    team_id: on the platform, the team whose Team Files the SDK's selector browses (it needs
        the server at construction, so it exists only there).
    local_folder: off the platform, the folder the local file picker searches first for
        checkpoints (any folder of this machine can be given in it: the app answers this
        machine only); None: no local picker.
    """

    def __init__(
        self,
        task: str,
        runs_provider,
        checkpoints_provider,
        team_id: int | None = None,
        local_folder: str | None = None,
    ) -> None:
        self.runs_provider = runs_provider
        self.checkpoints_provider = checkpoints_provider
        self.architecture = Select([], filterable=True, widget_id="model_arch")
        self.table = RadioTable(COLUMNS, [["-"] * len(COLUMNS)], widget_id="model_table")
        self.sort = Select([Select.Item(k, k) for k in SORTS], widget_id="model_sort")
        self.sort.set_value("zoo order")
        self.pretrained = Checkbox("Start from the COCO-pretrained weights", True, "model_pre")
        custom = self._custom_widgets(team_id, local_folder)
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
                Container(custom),
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
        # told the zoo model shown as selected after each change (AppUI proposes its input size)
        self.on_model_changed: Callable[[zoo.ZooEntry | None], None] | None = None
        self.set_task(task)
        self.refresh_runs()
        self.refresh_checkpoints()

        self._wire()

    def _custom_widgets(self, team_id: int | None, local_folder: str | None) -> list:
        """The Custom weights tab: earlier runs' checkpoints, Team Files, this machine, paths."""
        self.weights_path = Input(
            placeholder="checkpoint (.pth): a local path or a Team Files path (/mmdetection-3/...)",
            widget_id="model_w",
        )
        self.config_path = Input(
            placeholder="its config.py (local or Team Files); empty: the config.py beside it",
            widget_id="model_cfg",
        )
        self.picker = Select([], filterable=True, placeholder="a run's checkpoint",
                             widget_id="model_ckpt_pick")  # fmt: skip
        self.picker_refresh = Button("Refresh", button_size="small", widget_id="model_ckpt_refresh")
        self.team_files = (
            TeamFilesSelector(team_id, selection_file_type="file",
                              initial_folder="/mmdetection-3/", widget_id="model_tf")
            if team_id is not None
            else None
        )  # fmt: skip
        self.local_folder = Input(local_folder or "", widget_id="model_local_dir")
        self.local_find = Button("Find checkpoints", button_size="small",
                                 widget_id="model_local_find")  # fmt: skip
        self.local_picker = Select([], filterable=True, placeholder="a .pth file in that folder",
                                   widget_id="model_local_pick")  # fmt: skip
        self.local_message = Text("", widget_id="model_local_message")
        local = [
            Field(self.local_folder, "Or a checkpoint on this machine", "the folder to search"),
            self.local_find,
            self.local_picker,
            self.local_message,
        ]
        custom = [
            Field(self.picker, "Checkpoints of earlier runs", "in Team Files, with their config"),
            self.picker_refresh,
            *([Field(self.team_files, "Or any file in Team Files")] if self.team_files else []),
            *(local if local_folder is not None else []),
            Field(self.weights_path, "Checkpoint path"),
            Field(self.config_path, "Config path"),
        ]
        return custom

    def _wire(self) -> None:
        @self.architecture.value_changed
        def _architecture_changed(value: str) -> None:
            self.show_architecture(value)

        @self.sort.value_changed
        def _sort_changed(value: str) -> None:
            self.show_architecture(self.architecture.get_value())

        @self.table.value_changed
        def _row_changed(_value: object) -> None:
            self._changed()

        @self.refresh.click
        def _refresh() -> None:
            self.refresh_runs()

        @self.picker_refresh.click
        def _refresh_checkpoints() -> None:
            self.refresh_checkpoints()

        @self.picker.value_changed
        def _picked(value: str) -> None:
            self.pick(value)

        @self.local_find.click
        def _find_local() -> None:
            self.find_local_checkpoints()

        @self.local_picker.value_changed
        def _picked_local(value: str) -> None:
            self.pick(value)

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
        self._changed()

    def _changed(self) -> None:
        if self.on_model_changed is not None:
            self.on_model_changed(self.selected_entry())

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

    def refresh_checkpoints(self) -> None:
        paths = self.checkpoints_provider()
        self.picker.set([Select.Item(p, p) for p in paths])

    def find_local_checkpoints(self) -> None:
        """The ``.pth`` files under the local folder into the local picker, each marked with
        whether its config.py is beside it (else the Config path must be given)."""
        folder = self.local_folder.get_value().strip()
        try:
            found, more = find_checkpoints_on_disk(folder)
        except (FileNotFoundError, OSError) as exc:
            self.local_picker.set([])
            self.local_message.set(f"{exc}: give a folder of this machine", "warning")
            return
        items = [
            Select.Item(str(path), str(path) + ("" if has_config else "  (no config.py beside)"))
            for path, has_config in found
        ]
        self.local_picker.set(items)
        if not found:
            depth = f"{SEARCH_DEPTH} folders deep"
            self.local_message.set(f"no .pth file in {folder} ({depth})", "warning")
        else:
            cut = f", the first {len(found)}: give a narrower folder" if more else ""
            self.local_message.set(f"{len(found)} checkpoints found{cut}", "text")

    def select_model(self, name: str, pretrained: bool) -> bool:
        """Show zoo model ``name`` selected in its architecture's table (False: not in this
        task's zoo, the selection is left as it was)."""
        entry = next((e for e in zoo.list_models(self.task) if e.model == name), None)
        if entry is None:
            return False
        self.tabs.set_active_tab(TAB_PRETRAINED)
        self.architecture.set_value(entry.architecture)
        self.show_architecture(entry.architecture)
        index = next(i for i, e in enumerate(self._entries) if e.model == name)
        self.table.select_row(index)
        self.pretrained.check() if pretrained else self.pretrained.uncheck()
        self._changed()
        return True

    def set_custom(self, weights_path: str, config_path: str | None) -> None:
        """The Custom weights tab with this checkpoint (and its config, when not beside it)."""
        self.tabs.set_active_tab(TAB_CUSTOM)
        self.weights_path.set_value(weights_path)
        self.config_path.set_value(config_path or "")

    def pick(self, path: str | None) -> None:
        """A picked checkpoint fills the path fields (its config is the one beside it)."""
        if path:
            self.weights_path.set_value(path)
            self.config_path.set_value("")

    # ------------------------------------------------------------------ values
    def checkpoint(self) -> str:
        """The custom checkpoint: a file chosen in the Team Files selector, else the path."""
        chosen = self.team_files.get_selected_paths() if self.team_files else []
        return chosen[0] if chosen else self.weights_path.get_value().strip()

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
            return [] if self.checkpoint() else ["pick a checkpoint or give its path"]
        return [] if self.selected_run() else ["no resumable run selected"]

    def get_state(self) -> dict:
        entry = self.selected_entry()
        return {
            "mode": self.mode,
            "model": entry.model if entry else None,
            "pretrained": self.pretrained.is_checked(),
            "weights_path": self.checkpoint(),
            "config_path": self.config_path.get_value().strip(),
            "resume_run": self.selected_run(),
        }
