"""Step 1: the project to train on (locally: a project directory)."""

from __future__ import annotations

from supervisely.app.widgets import Card, Text

from src.data.project import LocalProject


class InputProjectStep:
    def __init__(self, project: LocalProject) -> None:
        self.project = project
        self.info = Text(
            f"<b>{project.name}</b>: {project.images} images, classes: "
            f"{', '.join(project.classes) or 'none'}; datasets: {', '.join(project.datasets)}",
            widget_id="project_info",
        )
        self.card = Card("Input project", content=self.info, widget_id="card_project")

    def get_state(self) -> dict:
        return {"project_dir": str(self.project.directory), "name": self.project.name}
