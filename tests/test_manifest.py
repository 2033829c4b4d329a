"""The app manifest (``config.json``) has what the platform needs to list and start the app."""

from __future__ import annotations

import json
from pathlib import Path


def test_manifest_has_the_platform_fields():
    manifest = json.loads((Path(__file__).parent.parent / "config.json").read_text())
    for key in ("type", "name", "description", "categories", "entrypoint", "port",
                "docker_image", "context_menu", "task_location", "instance_version"):  # fmt: skip
        assert manifest.get(key), f"config.json lacks {key}"
    assert manifest["type"] == "app"
    assert {"train", "object detection", "instance segmentation", "images"} <= set(
        manifest["categories"]
    )
    assert manifest["entrypoint"] == "python -m uvicorn src.web.main:app --host 0.0.0.0 --port 8000"
    assert manifest["port"] == 8000
    assert "images_project" in manifest["context_menu"]["target"]
    assert manifest.get("gpu") == "preferred"


def test_the_experiments_page_finds_this_app_for_its_runs_experiments():
    """The platform looks up a run's training app by ``["train", "framework:<its experiment's
    framework_name>"]`` (the SDK's ``ExperimentGenerator._get_app_train_serve_app_info``): that
    is how the Experiments page's "train again" opens this app with the run's task."""
    from src.runs.artifacts import FRAMEWORK_NAME

    manifest = json.loads((Path(__file__).parent.parent / "config.json").read_text())
    assert {"train", f"framework:{FRAMEWORK_NAME}"} <= set(manifest["categories"])
