"""Step 6: an augmentation preset (configs/augmentations.yaml)."""

from __future__ import annotations

import yaml
from supervisely.app.widgets import Card, Container, Select, Text

from src.config.params import AUGMENTATIONS, CONFIGS_DIR


class AugmentationsStep:
    def __init__(self) -> None:
        self.select = Select([Select.Item(a, a) for a in AUGMENTATIONS], widget_id="aug_preset")
        self.select.set_value("light")
        self.preview = Text("", widget_id="aug_preview")
        self.card = Card(
            "Augmentations",
            content=Container([self.select, self.preview]),
            widget_id="card_aug",
        )
        self.show("light")

        @self.select.value_changed
        def _changed(value: str) -> None:
            self.show(value)

    def show(self, preset: str) -> None:
        presets = yaml.safe_load((CONFIGS_DIR / "augmentations.yaml").read_text())
        steps = ", ".join(t["type"] for t in presets.get(preset) or []) or "no augmentation"
        self.preview.text = f"after resizing to the input size: {steps}"

    @property
    def preset(self) -> str:
        return self.select.get_value() or "light"

    def get_state(self) -> dict:
        return {"augmentation": self.preset}
