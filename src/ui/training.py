"""Step 9: Start / Stop, progress, charts, status line, log tail, artifacts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from supervisely.app.widgets import Button, Card, Container, Flexbox, Image, Text

from src.config.primary_metric import HEADLINE_SUFFIXES, headline
from src.core.layout import log_files, logged_scalars
from src.engine.chatter import is_chatter
from src.evaluation.evaluate import key_metrics_line
from src.hooks.metrics import TrainProgress, ValResult
from src.training.controller import ControllerStatus
from src.training.end_of_run import RunOutcome, export_notes
from src.ui.charts import Chart, send_all

MAX_CLASS_CHARTS = 20
PUSH_INTERVAL_S = 0.5  # the page's charts and progress line are updated at most this often
VAL_IMAGES = 4  # validation images drawn after each validation (each a JPEG of about 20 KB)


class TrainingStep:
    """Widgets of the run, fed by the session's metrics sink (this object) and a status poller."""

    def __init__(self, tensorboard_link: str | None = None) -> None:
        self.start_button = Button("Start training", widget_id="train_start")
        self.stop_button = Button("Stop", button_type="danger", widget_id="train_stop")
        self.stop_button.disable()
        # the current run's TensorBoard, served inside the app (src.web.tensorboard)
        self.tensorboard_button = Button(
            "Open TensorBoard", button_type="info", plain=True, icon="zmdi zmdi-chart",
            link=tensorboard_link, widget_id="train_tensorboard",
        )  # fmt: skip
        if not tensorboard_link:
            self.tensorboard_button.hide()
        self.progress = Text("", widget_id="train_progress")
        self.status = Text("not started", widget_id="train_status")
        self.losses = Chart("Losses", "train_losses")
        self.lr = Chart("Learning rate", "train_lr")
        self.map = Chart("Validation mAP", "train_map")
        self.class_ap = Chart("Per-class AP", "train_class_ap")
        self.log_tail = Text("", widget_id="train_log")
        self.artifacts = Text("", widget_id="train_artifacts")
        self.evaluation = Text("", widget_id="train_evaluation")
        # a few fixed validation images after each validation: ground truth | predictions
        self.val_images = [Image(widget_id=f"train_val_img_{i}") for i in range(VAL_IMAGES)]
        self.val_caption = Text("", widget_id="train_val_caption")
        self.card = Card(
            "Training",
            content=Container(
                [
                    Flexbox([self.start_button, self.stop_button, self.tensorboard_button]),
                    self.progress,
                    self.status,
                    self.losses.plot,
                    self.lr.plot,
                    self.map.plot,
                    self.class_ap.plot,
                    self.val_caption,
                    Flexbox(self.val_images),
                    self.log_tail,
                    self.artifacts,
                    self.evaluation,
                ]
            ),
            widget_id="card_training",
        )
        self._poller: threading.Thread | None = None
        self._pushed_at = 0.0

    # ------------------------------------------------------------------ metrics sink
    def on_train_iter(self, p: TrainProgress) -> None:
        """Points go into the charts at once; the page is updated at most every
        ``PUSH_INTERVAL_S`` (and at the run's last iteration): each update costs a deep copy
        and diff of all the page's data in the SDK, under the GIL the training thread needs."""
        for name, value in p.losses.items():
            self.losses.add(name, p.iteration, value, send=False)
        self.lr.add("lr", p.iteration, p.lr, send=False)
        now = time.monotonic()
        if now - self._pushed_at < PUSH_INTERVAL_S and p.iteration < p.max_iterations:
            return
        self._pushed_at = now
        loss = p.losses.get("loss")
        self.progress.text = (
            f"epoch {p.epoch}/{p.max_epochs}, iteration {p.iteration}/{p.max_iterations}"
            f" — loss {loss:.4f}"
            if loss is not None
            else ""
        )
        self.flush()

    def flush(self) -> None:
        """Send every chart's pending points to the page, in one update."""
        send_all([self.losses, self.lr, self.map, self.class_ap])

    def on_val(self, r: ValResult) -> None:
        for key, value in headline(r.metrics).items():
            self.map.add(key, r.epoch, value, send=False)
        for name, value in list(r.per_class_ap.items())[:MAX_CLASS_CHARTS]:
            self.class_ap.add(name, r.epoch, value, send=False)
        self.flush()

    # ------------------------------------------------------------------ run lifecycle
    def reset_charts(self) -> None:
        for chart in (self.losses, self.lr, self.map, self.class_ap):
            chart.clear()

    def restore_history(self, work_dir: str | Path) -> None:
        """Charts continue where a resumed run left off: refilled from its logged scalars."""
        self.reset_charts()
        for record in logged_scalars(work_dir):
            step = record.get("step")
            if any(k.startswith("coco/") for k in record):
                for key, value in record.items():
                    name = key.split("/", 1)[-1]
                    if name.endswith("_precision"):
                        ap_name = name[: -len("_precision")]
                        self.class_ap.add(ap_name, step, value, send=False)
                    elif name.endswith(HEADLINE_SUFFIXES):
                        self.map.add(name, step, value, send=False)
            else:
                for key, value in record.items():
                    if "loss" in key:
                        self.losses.add(key, step, value, send=False)
                if "lr" in record:
                    self.lr.add("lr", step, record["lr"], send=False)
        self.flush()

    def watch(self, controller, on_end=None, on_status=None) -> None:
        """Poll the controller until the run and its upload end (status line, log tail), passing
        each status to ``on_status`` too; then call ``on_end`` (the Resume tab refreshes its
        list)."""
        self.start_button.disable()
        self.stop_button.enable()

        def poll() -> None:
            while True:
                status = controller.status()
                self.show_status(status)
                if on_status is not None:
                    on_status(status)
                if status.ended:
                    break
                time.sleep(1.0)
            self.flush()  # the points of the last half second
            if on_end is not None:
                on_end()
            self.start_button.enable()
            self.stop_button.disable()

        self._poller = threading.Thread(target=poll, name="ui-poll", daemon=True)
        self._poller.start()

    def show_status(self, status: ControllerStatus) -> None:
        state = status.run_state  # while "uploading": how the run ended
        text = f"{state}"
        if status.error:
            text += f": {status.error}"
        if state == "stopped" and status.stopped_checkpoint:
            text += f" — resumable from {Path(status.stopped_checkpoint).name} (Resume tab)"
        if status.state == "uploading":
            text += " — uploading artifacts"
        if status.ended_early:
            text += f" — {status.ended_early}"
        if status.gpu:
            text += " — " + gpu_text(status.gpu)
        if status.state == "evaluating":
            text += " — evaluating the best checkpoint (Model Benchmark)"
        if status.state == "exporting":
            text += " — exporting the best checkpoint"
        sync = status.sync
        if sync is not None and sync.synced_iteration is not None:
            text += f" — Team Files holds the checkpoint of iteration {sync.synced_iteration}"
        if sync is not None and sync.last_error:
            text += f" — checkpoint sync failed (retried next epoch): {sync.last_error}"
        self.status.set(text, "error" if state == "failed" else "text")
        if status.work_dir:
            logs = log_files(status.work_dir)
            if logs:
                tail = [line for line in _tail_lines(logs[-1], 40) if not is_chatter(line)][-8:]
                self.log_tail.text = "<br>".join(line[:300] for line in tail)
        outcome = status.outcome
        if outcome is None:
            return
        self._show_evaluation(outcome)
        if outcome.artifacts:
            notes = [n for n in (outcome.output_error, outcome.warning) if n]
            notes += export_notes(outcome)
            note = "".join(f"; {n}" for n in notes)
            self.artifacts.set(f"artifacts: {outcome.artifacts}{note}", "success")
        elif outcome.upload_error:
            self.artifacts.set(
                f"upload failed: {outcome.upload_error}; the files stay in {outcome.local_dir}",
                "error",
            )

    def on_val_images(self, images: list[tuple[str, str]]) -> None:
        """The validation preview (src.hooks.val_preview): names and small JPEG data URLs."""
        for widget, (_, url) in zip(self.val_images, images, strict=False):
            widget.set(url)
        names = ", ".join(name for name, _ in images[: len(self.val_images)])
        self.val_caption.text = f"last validation, ground truth | predictions: {names}"

    def _show_evaluation(self, outcome: RunOutcome) -> None:
        """The key metrics of the evaluation after training and where its report is."""
        if outcome.evaluation_error:
            self.evaluation.set(
                f"evaluation failed (the run is uploaded all the same): {outcome.evaluation_error}",
                "warning",
            )
            return
        evaluation = outcome.evaluation
        if not evaluation:
            return
        shown = key_metrics_line(evaluation["metrics"])
        where = (
            f"{outcome.artifacts}/evaluation/report.html" if outcome.artifacts
            else evaluation["report"]
        )  # fmt: skip
        platform = f"; the platform's report: {outcome.platform_report}"
        self.evaluation.set(f"evaluation of {evaluation['checkpoint']}: {shown}; report: {where}"
                            + (platform if outcome.platform_report else ""), "success")  # fmt: skip

    def wait(self, timeout: float | None = None) -> None:
        if self._poller is not None:
            self._poller.join(timeout)


def gpu_text(gpu: dict) -> str:
    """``GpuStats.snapshot`` as the status line shows it."""
    text = f"GPU memory peak {gpu['peak_gib']:.1f} GiB"
    if "util" in gpu:
        text += f", {gpu['util']:.0f}% busy (mean {gpu['mean_util']:.0f}%)"
    return text


def _tail_lines(path: Path, count: int, max_bytes: int = 16384) -> list[str]:
    """The last ``count`` lines of a log that may be hundreds of MB: only its end is read
    (this runs every second while training)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        text = f.read().decode("utf-8", errors="replace")
    lines = text.splitlines()
    return lines[-count:] if size <= max_bytes else lines[1:][-count:]
