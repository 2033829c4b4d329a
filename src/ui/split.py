"""Step 5: train/val split: a random percentage, by datasets, by tags, or an experiment's."""

from __future__ import annotations

from supervisely.app.widgets import Card, Container, Field, InputNumber, RadioTabs, Select, Text

from src.data.project import (
    LocalProject,
    Split,
    dataset_split,
    random_split,
    split_items,
    tag_split,
    tags_of,
)
from src.data.reader import DatasetError

TAB_RANDOM, TAB_DATASETS, TAB_TAGS = "Random", "By datasets", "By tags"
TAB_EXPERIMENT = "As in an experiment"


class SplitStep:
    def __init__(self, project: LocalProject) -> None:
        self.project = project
        datasets = [Select.Item(d, d) for d in project.datasets]
        tags = [Select.Item(t, t) for t in tags_of(project)] or [Select.Item("", "(no tags)")]
        self.percent = InputNumber(80, min=1, max=99, widget_id="split_percent")
        self.train_datasets = Select(datasets, multiple=True, widget_id="split_train_ds")
        self.val_datasets = Select(datasets, multiple=True, widget_id="split_val_ds")
        top = {d.split("/")[0] for d in project.datasets}
        if {"train", "val"} <= top:
            self.train_datasets.set_value([d for d in project.datasets if d.startswith("train")])
            self.val_datasets.set_value([d for d in project.datasets if d.startswith("val")])
        self.train_tag = Select(tags, widget_id="split_train_tag")
        self.val_tag = Select(tags, widget_id="split_val_tag")
        # an experiment's own images (Start from an experiment): its split exactly
        self.fixed: Split | None = None
        self.fixed_text = Text("Load an experiment first (Start from an experiment, above)",
                               widget_id="split_fixed")  # fmt: skip
        self.tabs = RadioTabs(
            titles=[TAB_RANDOM, TAB_DATASETS, TAB_TAGS, TAB_EXPERIMENT],
            contents=[
                Field(self.percent, "Train %"),
                Container([Field(self.train_datasets, "Train"), Field(self.val_datasets, "Val")]),
                Container([Field(self.train_tag, "Train tag"), Field(self.val_tag, "Val tag")]),
                self.fixed_text,
            ],
            widget_id="split_tabs",
        )
        self.card = Card("Train/val split", content=self.tabs, widget_id="card_split")

    def split(self, seed: int = 0) -> Split:
        """The chosen split; raises DatasetError with what is wrong (empty side, overlap)."""
        mode = self.tabs.get_active_tab()
        if mode == TAB_RANDOM:
            return random_split(self.project, 1 - float(self.percent.get_value()) / 100, seed)
        if mode == TAB_DATASETS:
            return dataset_split(
                self.project,
                _as_list(self.train_datasets.get_value()),
                _as_list(self.val_datasets.get_value()),
            )
        if mode == TAB_TAGS:
            return tag_split(self.project, self.train_tag.get_value(), self.val_tag.get_value())
        if self.fixed is None:
            raise DatasetError("no experiment loaded: load one above, or choose another split")
        return self.fixed

    def set_split(self, split: Split | None, source: str) -> None:
        """An experiment's split (None: it has none left here; the tab says so): by datasets
        in that tab, by images in the experiment's own tab."""
        if split is not None and split.train_items is None and split.val_items is None:
            self.train_datasets.set_value(list(split.train_datasets or []))
            self.val_datasets.set_value(list(split.val_datasets or []))
            self.tabs.set_active_tab(TAB_DATASETS)
            return
        self.fixed = split
        if split is None:
            self.fixed_text.set(f"{source}: its split has nothing left in this project", "warning")
            return
        sides = split_items(self.project, split)
        self.fixed_text.set(
            f"{source}: {split.description}, {len(sides['train'])} train and "
            f"{len(sides['val'])} val images, as it trained",
            "info",
        )
        self.tabs.set_active_tab(TAB_EXPERIMENT)

    def get_state(self) -> dict:
        return {
            "mode": self.tabs.get_active_tab(),
            "train_percent": self.percent.get_value(),
            "train_datasets": _as_list(self.train_datasets.get_value()),
            "val_datasets": _as_list(self.val_datasets.get_value()),
            "train_tag": self.train_tag.get_value(),
            "val_tag": self.val_tag.get_value(),
        }


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]
