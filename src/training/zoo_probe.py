"""Does a zoo model train and predict on this project, here? One short real run per model.

For each model: compose its config exactly as the app does (from scratch), run the dry-run checks
(datasets, model, the project's extreme images through both pipelines), train one iteration on
two of the project's most extreme images, validate on every image, then load the exported
checkpoint with mmdet's own ``init_detector`` and predict on the extreme images. A model passes
when all of that works. Each model runs in its own process, so a crash or a memory peak of one
model does not take the others with it.

``python -m src.cli probe --project DIR [--task T] [--models a,b]`` prints the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from src.core.tasks import SEGMENTATION
from src.training import children

if TYPE_CHECKING:
    from src.config.zoo import ZooEntry
    from src.setup.prepare import Prepared, TrainRequest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ProbeResult:
    model: str
    architecture: str
    task: str
    passes: bool
    needs_gpu: bool = False
    why_not: str = ""
    needs_packages: bool = False  # (packages the Docker image has; not a failure of the model)
    seconds: float = 0.0
    input_size: int = 0

    def row(self) -> str:
        verdict = "yes" if self.passes else ("GPU only" if self.needs_gpu else "no")
        return (
            f"| {self.architecture} | `{self.model}` | {verdict} | "
            f"{'yes' if self.needs_gpu else 'no'} | {self.why_not or ''} |"
        )


def _extremes(project_dir: Path, task: str) -> list[dict]:
    """The two images most likely to break a model's train step (``item_name``, ``img_path``),
    among those with objects the task can train on (instance segmentation: polygons, bitmaps)."""
    from src.data.reader import image_path, list_items
    from src.engine.shape_check import extreme_images

    usable = {"polygon", "bitmap"} if task == SEGMENTATION else None
    infos = []
    for name, ann_path in list_items(project_dir):
        ann = json.loads(ann_path.read_text(encoding="utf-8"))
        kinds = {obj.get("geometryType") for obj in ann.get("objects") or []}
        if not kinds or (usable and not kinds & usable):
            continue
        size = ann["size"]
        infos.append(
            {"item_name": name, "img_path": str(image_path(ann_path)),
             "width": size["width"], "height": size["height"]}
        )  # fmt: skip
    return extreme_images(infos)[1:3]  # the largest and the widest


def probe_model(
    model: str, task: str, project_dir: str | Path, work_root: str | Path, input_size: int = 160
) -> ProbeResult:
    """One model, in this process (see :func:`probe_in_subprocess`)."""
    from src.config import zoo
    from src.setup.data_check import dry_run
    from src.setup.prepare import prepare

    entry = zoo.get_model(model, task)
    size = max(input_size, entry.min_input_size)
    result = ProbeResult(model, entry.architecture, task, passes=False, input_size=size)
    if _cannot_run_here(entry, result):
        return result
    project_dir = Path(project_dir)
    extremes = _extremes(project_dir, task)
    prepared = prepare(_probe_request(model, task, project_dir, work_root, size, extremes))
    dry_run(prepared)
    _train_and_predict(prepared, Path(work_root), [e["img_path"] for e in extremes])
    result.passes = True
    return result


def _cannot_run_here(entry: ZooEntry, result: ProbeResult) -> bool:
    """Whether the zoo ``entry`` cannot even start here (unsupported, GPU only on a machine
    without one, packages missing): then ``result`` says why."""
    import torch

    if entry.unsupported:
        result.why_not = entry.unsupported
        return True
    if entry.gpu_only and not torch.cuda.is_available():
        result.needs_gpu, result.why_not = True, entry.gpu_only
        return True
    if entry.missing_packages():
        result.why_not = f"needs {', '.join(entry.missing_packages())} (in the Docker image)"
        result.needs_packages = True
        return True
    return False


def _probe_request(
    model: str, task: str, project_dir: Path, work_root: str | Path, size: int, extremes: list[dict]
) -> TrainRequest:
    """The probe's run: one epoch from scratch on the two ``extremes``, validated on every
    image of the project."""
    from src.config.params import TrainParams
    from src.data.project import Split
    from src.data.reader import list_items
    from src.setup.prepare import TrainRequest

    params = TrainParams(
        task=task,
        epochs=1,
        train_batch_size=2,
        val_batch_size=2,
        num_workers=0,
        input_size=(size, size),
        augmentation="medium",
        weights="scratch",
        log_interval=1,
        lr=1e-4,
        # 20 detections an image: the probe checks shapes, not accuracy, and a mask head pastes
        # each kept mask at the image's own size (a 2048x1536 photo: 100 of them took most of
        # Mask R-CNN's probe)
        max_per_img=20,
    )
    return TrainRequest(
        project_dir=str(project_dir),
        app_data_dir=str(work_root),
        model=model,
        params=params,
        split=Split(
            train_items=[e["item_name"] for e in extremes],
            val_items=[name for name, _ in list_items(project_dir)],
            description="probe: 2 extreme images / all",
        ),
        run_id="probe",
    )


def _train_and_predict(prepared: Prepared, work_root: Path, images: list[str]) -> None:
    """Train the prepared run, then load its exported checkpoint with mmdet's ``init_detector``
    and predict on ``images``; raises what fails."""
    from mmdet.apis import inference_detector, init_detector

    from src.runs.checkpoint_io import export_for_inference
    from src.runs.checkpoints import best_checkpoint, last_checkpoint
    from src.training.session import SessionState, TrainingSession

    session = TrainingSession(prepared.cfg, prepared.run_id, console_log_level="ERROR")
    session.start()
    status = session.wait()
    if status.state != SessionState.FINISHED:  # validation runs before a run can finish
        raise RuntimeError(f"training ended {status.state.value}: {status.error}")
    checkpoint = best_checkpoint(prepared.work_dir) or last_checkpoint(prepared.work_dir)
    exported = export_for_inference(checkpoint, work_root / "probe_export.pth")
    config_file = work_root / "probe_config.py"
    config_file.write_text(prepared.config_text, encoding="utf-8")
    detector = init_detector(str(config_file), str(exported), device="cpu", palette=[])
    for prediction in inference_detector(detector, images):
        labels = prediction.pred_instances.labels
        if len(labels) and int(labels.max()) >= len(prepared.params.classes):
            raise RuntimeError(f"a predicted label {int(labels.max())} indexes no class")


def probe_in_subprocess(
    model: str, task: str, project_dir: str | Path, input_size: int = 160, timeout: float = 900
) -> ProbeResult:
    """:func:`probe_model` in a fresh process with a temporary app-data folder."""
    from src.config import zoo

    entry = zoo.get_model(model, task)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="probe_") as work:
        env = dict(os.environ, SLY_APP_DATA_DIR=work)
        try:  # a child that ends with this process, however it ends (src.training.children)
            done = children.run(
                children.tied_command(
                    "src.training.zoo_probe", [model, task, str(project_dir), work, str(input_size)]
                ),
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return ProbeResult(
                model,
                entry.architecture,
                task,
                False,
                why_not=f"over {timeout:.0f} s",
                seconds=time.monotonic() - start,
            )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        result = ProbeResult(**json.loads(lines[-1]))
    else:
        tail = (done.stderr or done.stdout).strip().splitlines()
        result = ProbeResult(
            model,
            entry.architecture,
            task,
            False,
            why_not=(tail[-1] if tail else f"exit {done.returncode}")[:300],
        )
    result.seconds = round(time.monotonic() - start, 1)
    return result


def _main(argv: list[str]) -> int:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    model, task, project_dir, work, input_size = argv
    try:
        result = probe_model(model, task, project_dir, work, int(input_size))
    except Exception as exc:  # the model's own failure is the probe's answer
        from src.config import zoo

        entry = zoo.get_model(model, task)
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        result = ProbeResult(model, entry.architecture, task, False, why_not=message[:300])
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
