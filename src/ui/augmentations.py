"""Step 6: augmentations — a preset (configs/augmentations.yaml) or the user's own pipeline,
and a preview of a real project image before and after the training pipeline.

The Editor shows the chosen preset's transforms as YAML (read-only); choosing "custom" makes
that text editable, so a preset is the starting point of a custom pipeline. The preview itself
is computed by the controller (``TrainingController.augmentation_preview``), wired in
``AppUI``.
"""

from __future__ import annotations

import random

from supervisely.app.widgets import (
    Button,
    Card,
    Container,
    Editor,
    Field,
    Flexbox,
    Image,
    Select,
    Text,
)

from src.config.augmentations import preset_text
from src.config.params import AUGMENTATIONS, CUSTOM_AUGMENTATION


class AugmentationsStep:
    def __init__(self) -> None:
        self.select = Select([Select.Item(a, a) for a in AUGMENTATIONS], widget_id="aug_preset")
        self.select.set_value("light")
        self.editor = Editor(
            preset_text("light"),
            height_lines=10,
            language_mode="yaml",
            readonly=True,
            restore_default_button=False,
            widget_id="aug_pipeline",
        )
        self.preview_button = Button("Preview", button_size="small", widget_id="aug_preview_btn")
        self.resample_button = Button(
            "Another sample", button_size="small", plain=True, widget_id="aug_resample"
        )
        self.message = Text("", widget_id="aug_message")
        self.before = Image(widget_id="aug_before")
        self.after = Image(widget_id="aug_after")
        self.caption = Text("", widget_id="aug_caption")
        self.sample = 0
        self.card = Card(
            "Augmentations",
            "applied to training images after they are resized to the input size; choose "
            "custom to edit the transforms (mmdet's, as YAML or JSON)",
            content=Container(
                [
                    Field(self.select, "Preset"),
                    Field(self.editor, "Transforms"),
                    Flexbox([self.preview_button, self.resample_button]),
                    self.message,
                    Flexbox([self.before, self.after]),
                    self.caption,
                ]
            ),
            widget_id="card_aug",
        )

        @self.select.value_changed
        def _changed(value: str) -> None:
            self.show(value)

    def show(self, preset: str) -> None:
        """A preset's transforms, read-only; "custom" keeps the text shown and unlocks it."""
        if preset == CUSTOM_AUGMENTATION:
            self.editor.readonly = False
        else:
            self.editor.set_text(preset_text(preset), language_mode="yaml")
            self.editor.readonly = True

    def set_augmentation(self, preset: str, pipeline: str = "") -> None:
        """An experiment's preset; for ``custom``, its transforms in the editor."""
        self.select.set_value(preset)
        if preset == CUSTOM_AUGMENTATION:
            self.editor.set_text(pipeline, language_mode="yaml")
        self.show(preset)

    def next_sample(self) -> int:
        self.sample = random.randrange(1 << 30)
        return self.sample

    def show_preview(self, before: str, after: str, caption: str) -> None:
        self.before.set(before)
        self.after.set(after)
        self.caption.set(caption, "text")
        self.message.set("", "text")

    def show_problem(self, text: str) -> None:
        self.message.set(text, "error")

    @property
    def preset(self) -> str:
        return self.select.get_value() or "light"

    @property
    def pipeline_text(self) -> str:
        """The custom pipeline (empty for a preset)."""
        return self.editor.get_text() if self.preset == CUSTOM_AUGMENTATION else ""

    def get_state(self) -> dict:
        return {"augmentation": self.preset, "augmentation_pipeline": self.pipeline_text}
