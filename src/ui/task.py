"""Step 2: object detection or instance segmentation."""

from __future__ import annotations

from supervisely.app.widgets import Card, RadioGroup

from src.core.tasks import DETECTION, SEGMENTATION, TASKS

LABELS = {DETECTION: "Object detection", SEGMENTATION: "Instance segmentation"}


class TaskStep:
    def __init__(self) -> None:
        self.radio = RadioGroup(
            [RadioGroup.Item(t, LABELS[t]) for t in TASKS], widget_id="task_radio"
        )
        self.card = Card("Task", content=self.radio, widget_id="card_task")

    @property
    def task(self) -> str:
        return self.radio.get_value() or TASKS[0]

    def set_task(self, task: str) -> None:
        self.radio.set_value(task)

    def get_state(self) -> dict:
        return {"task": self.task}
