"""Step 5: train/val split: a random percentage, by datasets, or by tags."""

from __future__ import annotations

from supervisely.app.widgets import Card, Container, Field, InputNumber, RadioTabs, Select

from src.data.project import LocalProject, Split, dataset_split, random_split, tag_split, tags_of

TAB_RANDOM, TAB_DATASETS, TAB_TAGS = "Random", "By datasets", "By tags"


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
        self.tabs = RadioTabs(
            titles=[TAB_RANDOM, TAB_DATASETS, TAB_TAGS],
            contents=[
                Field(self.percent, "Train %"),
                Container([Field(self.train_datasets, "Train"), Field(self.val_datasets, "Val")]),
                Container([Field(self.train_tag, "Train tag"), Field(self.val_tag, "Val tag")]),
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
        return tag_split(self.project, self.train_tag.get_value(), self.val_tag.get_value())

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
