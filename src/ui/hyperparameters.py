"""Step 7: hyperparameters, with a preview of the LR schedule."""

from __future__ import annotations

import math
import typing

from supervisely.app.widgets import (
    Button,
    Card,
    Checkbox,
    Container,
    Field,
    InputNumber,
    Select,
    Text,
)

from src.config.doors import _STEP, DOORS
from src.config.params import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_WORKERS,
    OPTIMIZERS,
    SCHEDULERS,
    SLICE_PARTIAL,
    TrainParams,
)
from src.config.schedule import lr_curve
from src.core.export_formats import export_table
from src.core.tasks import DETECTION
from src.engine.devices import list_devices
from src.ui.charts import Chart

MODEL_DEFAULT = "model"  # the frozen-stages choice that keeps the model's own setting
# The widgets' values for "auto" (TrainParams None: the app sizes them on the run's device)
AUTO_BATCH, AUTO_WORKERS, AUTO_AMP = 0, -1, "auto"
AMP_CHOICES = {AUTO_AMP: "auto: on for CUDA", "on": "on", "off": "off"}


def _number(value, widget_id: str, minimum=None, maximum=None, step=1, precision=0):
    return InputNumber(
        value, min=minimum, max=maximum, step=step, precision=precision, widget_id=widget_id
    )


def _ranged(name: str, value, widget_id: str, step=1, precision=0, unset=None) -> InputNumber:
    """A number widget bounded by the setting's declared range (src.config.doors), so that no
    bound is written twice: an open bound moves in by the widget's precision; ``unset`` (the
    widget's value for auto, the model's own or off) and the value that turns the setting off
    stay allowed below it."""
    allowed = DOORS[name].range
    nudge = 10**-precision
    low = allowed.low + nudge if allowed.low_open else allowed.low
    high = allowed.high - nudge if allowed.high_open else allowed.high
    low = min(v for v in (low, unset, allowed.off) if v is not None)
    finite = [v if math.isfinite(v) else None for v in (low, high)]
    return _number(value, widget_id, *finite, step=step, precision=precision)


def _unless(value: int, auto: int) -> int | None:
    """The widget's number, None (auto) for its auto value."""
    return None if value == auto else value


def _select(values, default: str, widget_id: str) -> Select:
    select = Select([Select.Item(v, v) for v in values], widget_id=widget_id)
    select.set_value(default)
    return select


def export_items() -> list[Select.Item]:
    """The export formats to choose from, one item per declared format (src.core.export_formats)."""
    return [Select.Item(fmt.name, fmt.label) for fmt in export_table()]


class HyperparametersStep:
    """Args: sync_every_epochs: the app's default for copying checkpoints to Team Files."""

    def __init__(self, sync_every_epochs: int = 0) -> None:
        d = TrainParams()
        self._add_schedule_widgets(d)
        self._add_checkpoint_widgets(d)
        self._add_model_widgets(d)
        self._add_slicing_widgets(d)
        self._add_after_training_widgets(d)
        gpus = self._add_device_widgets(d, sync_every_epochs)
        self._generated = self._add_generated_widgets(d)
        self.preview_button = Button(
            "Preview LR schedule", button_size="small", widget_id="hp_lr_btn"
        )
        self.chart = Chart("Learning rate", "hp_lr_chart")
        fields = self._fields(multi_gpu=bool(gpus))
        self.card = Card(
            "Hyperparameters",
            content=Container(
                [Field(w, title) for w, title in fields]
                + [self.sized, self.save_best, self.save_last, self.nesterov, self.auto_scale]
                + [self.slice_full_image, self.evaluate, self.speed_test]
                + [w for w in self._generated.values() if isinstance(w, Checkbox)]
                + [self.preview_button, self.chart.plot]
            ),
            widget_id="card_hp",
        )
        self.iters_per_epoch = 1

        @self.preview_button.click
        def _preview() -> None:
            self.preview()

    def _add_schedule_widgets(self, d: TrainParams) -> None:
        """The epochs, batches, loaders, input size, optimizer and LR schedule."""
        self.epochs = _ranged("epochs", d.epochs, "hp_epochs")
        self.train_batch = _ranged("train_batch_size", AUTO_BATCH, "hp_train_bs", unset=AUTO_BATCH)
        self.val_batch = _ranged("val_batch_size", d.val_batch_size, "hp_val_bs")
        self.workers = _ranged("num_workers", AUTO_WORKERS, "hp_workers", unset=AUTO_WORKERS)
        self.input_size = _ranged("input_size", d.input_size[0], "hp_size", step=32)
        self.input_short = _ranged("input_size", 0, "hp_size_short", step=32, unset=0)
        self.optimizer = _select(OPTIMIZERS, d.optimizer, "hp_optimizer")
        self.lr = _ranged("lr", d.lr, "hp_lr", step=1e-5, precision=6)
        self.weight_decay = _ranged("weight_decay", d.weight_decay, "hp_wd", 1e-5, 6)
        self.scheduler = _select(SCHEDULERS, d.scheduler, "hp_scheduler")
        self.warmup = _ranged("warmup_iters", d.warmup_iters, "hp_warmup")
        self.grad_clip = _ranged("grad_clip", 0, "hp_clip", step=0.5, precision=2, unset=0)
        self.nesterov = Checkbox("Nesterov momentum (SGD)", d.nesterov, "hp_nesterov")
        self.momentum = _ranged("momentum", d.momentum, "hp_momentum", 0.01, 3)
        self.restart_epochs = _ranged("restart_epochs", d.restart_epochs, "hp_restart")
        self.auto_scale = Checkbox(
            "Auto-scale the LR by batch size / the model's base batch size", False, "hp_autoscale"
        )
        self.amp = Select([Select.Item(k, v) for k, v in AMP_CHOICES.items()], widget_id="hp_amp")
        self.amp.set_value(AUTO_AMP)
        self.sized = Text("", widget_id="hp_sized")  # what the run chose at start (auto)

    def _add_checkpoint_widgets(self, d: TrainParams) -> None:
        """Checkpoints, validation and early stopping."""
        self.ckpt_interval = _ranged("checkpoint_interval", d.checkpoint_interval,
                                     "hp_ckpt_interval")  # fmt: skip
        self.keep = _ranged("keep_checkpoints", d.keep_checkpoints, "hp_keep")
        self.save_best = Checkbox("Save the best checkpoint", True, "hp_best")
        self.save_last = Checkbox("Save the last checkpoint", True, "hp_last")
        self.val_interval = _ranged("val_interval", d.val_interval, "hp_val_interval")
        self.patience = _ranged("early_stopping_patience", d.early_stopping_patience,
                                "hp_patience")  # fmt: skip
        self.min_delta = _ranged("early_stopping_min_delta", d.early_stopping_min_delta,
                                 "hp_min_delta", 0.001, 4)  # fmt: skip
        self.max_dets = _ranged("max_per_img", 0, "hp_max_dets", unset=0)
        self.score_thr = _ranged("score_thr", 0, "hp_score_thr", 0.01, 3, unset=0)

    def _add_model_widgets(self, d: TrainParams) -> None:
        """The frozen backbone stages and the class balance."""
        stages = DOORS["frozen_stages"].range
        self.frozen = Select(
            [Select.Item(MODEL_DEFAULT, "the model's own setting")]
            + [Select.Item(str(n), "none" if n < 0 else str(n))
               for n in range(int(stages.low), int(stages.high) + 1)],
            widget_id="hp_frozen",
        )  # fmt: skip
        self.frozen.set_value(MODEL_DEFAULT)
        self.class_balance = _ranged("class_balance", d.class_balance, "hp_class_balance", 0.01, 3)

    def _add_slicing_widgets(self, d: TrainParams) -> None:
        """Sliced training and evaluation (src.data.tiles)."""
        self.slice_size = _ranged("slice_size", d.slice_size, "hp_slice_size", 32)
        self.slice_overlap = _ranged("slice_overlap", d.slice_overlap, "hp_slice_overlap", 0.05, 2)
        self.slice_empty = _ranged("slice_empty", d.slice_empty, "hp_slice_empty", 0.05, 2)
        self.slice_min_visible = _ranged(
            "slice_min_visible", d.slice_min_visible, "hp_slice_min_visible", 0.05, 2
        )
        self.slice_partial = _select(SLICE_PARTIAL, d.slice_partial, "hp_slice_partial")
        self.slice_full_image = Checkbox(
            "With slicing, train and validate on each whole image too (downscaled)",
            d.slice_full_image, "hp_slice_full_image",
        )  # fmt: skip

    def _add_after_training_widgets(self, d: TrainParams) -> None:
        """The evaluation, its speed test and the exports after a finished run."""
        self.evaluate = Checkbox(
            "Evaluate the best checkpoint after training (Model Benchmark metrics and report)",
            d.evaluate,
            "hp_evaluate",
        )
        self.speed_test = Checkbox(
            "With the evaluation, time the best checkpoint at batch 1, 8 and 16 (the platform's "
            "report shows it)", d.speed_test, "hp_speed_test",
        )  # fmt: skip
        # after training, the best checkpoint exported (src.export.formats; TensorRT implies ONNX)
        self.export = Select(export_items(), multiple=True, widget_id="hp_export")
        self.export.set_value([])  # a multiple Select starts with its first item chosen

    def _add_device_widgets(self, d: TrainParams, sync_every_epochs: int) -> list:
        """The device or GPUs, the seed and the checkpoint sync; the GPUs listed."""
        devices = list_devices()  # the freest GPU first (preselected); the CPU where none
        self.device = Select([Select.Item(d.name, d.label) for d in devices], widget_id="hp_device")
        self.device.set_value(devices[0].name)
        # several GPUs: one DDP process each (src.training.distributed); empty: the device above
        gpus = [d for d in devices if d.name.startswith("cuda:")]
        self.gpus = Select([Select.Item(d.name, d.label) for d in gpus], multiple=True,
                           widget_id="hp_gpus")  # fmt: skip
        self.seed = _ranged("seed", d.seed, "hp_seed")
        self.sync_epochs = _number(sync_every_epochs, "hp_sync", 0)
        return gpus

    def _fields(self, multi_gpu: bool) -> list[tuple]:
        """The step's settings with their titles, in the order the page shows them."""
        generated = [
            (w, DOORS[name].help[:1].upper() + DOORS[name].help[1:])
            for name, w in self._generated.items()
            if not isinstance(w, Checkbox)
        ]
        return self._training_fields() + self._data_fields(multi_gpu) + generated

    def _add_generated_widgets(self, d: TrainParams) -> dict:
        """A widget for each declared setting (src.config.doors) the step has none of by hand,
        made from its declaration: a switch, its choices, or a number in its range; by name."""
        kinds = typing.get_type_hints(TrainParams)
        made = {}
        for name, door in DOORS.items():
            if door.ui in (None, _STEP) or hasattr(self, door.ui):
                continue
            default, widget_id = getattr(d, name), f"hp_{door.ui}"
            if kinds[name] is bool:
                words = door.help[:1].upper() + door.help[1:]
                made[name] = Checkbox(words, default, widget_id)
            elif door.choices:
                made[name] = _select(door.choices, default, widget_id)
            elif kinds[name] is float:
                made[name] = _ranged(name, default, widget_id, step=0.01, precision=3)
            else:
                made[name] = _ranged(name, default, widget_id)
            setattr(self, door.ui, made[name])
        return made

    def _generated_values(self) -> dict:
        """The generated widgets (:meth:`_add_generated_widgets`), read as TrainParams fields."""
        kinds = typing.get_type_hints(TrainParams)
        values = {}
        for name, widget in self._generated.items():
            if isinstance(widget, Checkbox):
                values[name] = widget.is_checked()
            elif isinstance(widget, Select):
                values[name] = widget.get_value()
            else:
                values[name] = kinds[name](widget.get_value() or 0)
        return values

    def _training_fields(self) -> list[tuple]:
        """The schedule's, checkpoints' and validation's fields with their titles."""
        return [
            (self.epochs, "Epochs"),
            (
                self.train_batch,
                f"Train batch size per device (0: auto, sized on the GPU from "
                f"its free memory at start; {DEFAULT_BATCH_SIZE} on the CPU)",
            ),
            (self.val_batch, "Val batch size"),
            (
                self.workers,
                f"Data loader workers (-1: auto, from the cores per GPU; "
                f"{DEFAULT_WORKERS} on the CPU)",
            ),
            (self.amp, "Mixed precision (AMP)"),
            (self.input_size, "Input size: longer edge (px)"),
            (self.input_short, "Input size: shorter edge (px; 0: a square), aspect ratio kept"),
            (self.optimizer, "Optimizer"),
            (
                self.lr,
                "Learning rate (for the model's base batch: with an auto batch on the GPU, "
                "scaled linearly to the chosen batch x GPUs / the base batch, as "
                "chosen for this run says)",
            ),
            (self.weight_decay, "Weight decay"),
            (self.scheduler, "LR scheduler"),
            (self.restart_epochs, "Cosine with restarts: epochs per cycle (0: a third of the run)"),
            (self.momentum, "Momentum (SGD)"),
            (self.warmup, "Warmup iterations"),
            (self.grad_clip, "Gradient clipping, max norm (0: off)"),
            (self.ckpt_interval, "Checkpoint every N epochs"),
            (self.keep, "Keep N checkpoints"),
            (self.val_interval, "Validate every N epochs"),
            (self.patience, "Early stopping: validations without improvement (0: off)"),
            (self.min_delta, "Early stopping: smallest mAP gain that counts"),
            (self.frozen, "Frozen backbone stages"),
            (self.max_dets, "Validation: max detections per image (0: the model's)"),
            (self.score_thr, "Validation: min score (0: the model's)"),
        ]

    def _data_fields(self, multi_gpu: bool) -> list[tuple]:
        """The data's, device's and exports' fields with their titles."""
        return [
            (
                self.class_balance,
                "Class balance: repeat the images of classes in fewer than "
                "this fraction of the images (mmdet's ClassBalancedDataset; 0: off)",
            ),
            (
                self.slice_size,
                "Sliced training and evaluation: tile size (px; 0: off), for large images with "
                "small objects (docs/options.md)",
            ),
            (self.slice_overlap, "Slicing: overlap of neighbouring tiles (a fraction)"),
            (self.slice_empty, "Slicing: fraction of tiles without objects kept for training"),
            (
                self.slice_min_visible,
                "Slicing: an object less visible than this fraction in a tile is not an object "
                "there",
            ),
            (self.slice_partial, "Slicing: such a cut object becomes"),
            (self.device, "Device"),
            *([(self.gpus, "Or train on several GPUs (batch size per GPU)")] if multi_gpu else []),
            (self.seed, "Seed"),
            (self.sync_epochs, "Copy the newest checkpoint to Team Files every N epochs (0: off)"),
            (self.export, "After training, export the best checkpoint to (docs/export.md)"),
        ]

    def params(
        self,
        task: str,
        classes: tuple[str, ...],
        augmentation: str,
        weights: str,
        weights_path: str | None = None,
        augmentation_pipeline: str = "",
        ignore: tuple[str, ...] = (),
    ) -> TrainParams:
        """The settings shown, with what the other steps chose (the task, classes, augmentation,
        weights, ignored classes), as ``TrainParams``."""
        return TrainParams(
            task=task,
            classes=classes,
            augmentation=augmentation,
            augmentation_pipeline=augmentation_pipeline,
            weights=weights,
            weights_path=weights_path,
            ignore=tuple(ignore),
            **self._schedule_values(),
            **self._other_values(),
            **self._generated_values(),
        )

    def _schedule_values(self) -> dict:
        """The schedule's, checkpoints' and validation's widgets, read as TrainParams fields."""
        clip = float(self.grad_clip.get_value() or 0)
        size = int(self.input_size.get_value())
        short = int(self.input_short.get_value() or 0) or size
        return dict(
            epochs=int(self.epochs.get_value()),
            train_batch_size=_unless(int(self.train_batch.get_value() or 0), AUTO_BATCH),
            val_batch_size=int(self.val_batch.get_value()),
            num_workers=_unless(int(self.workers.get_value()), AUTO_WORKERS),
            input_size=(max(size, short), min(size, short)),
            optimizer=self.optimizer.get_value(),
            lr=float(self.lr.get_value()),
            weight_decay=float(self.weight_decay.get_value()),
            scheduler=self.scheduler.get_value(),
            warmup_iters=int(self.warmup.get_value()),
            grad_clip=clip if clip > 0 else None,
            checkpoint_interval=int(self.ckpt_interval.get_value()),
            keep_checkpoints=int(self.keep.get_value()),
            save_best=self.save_best.is_checked(),
            save_last=self.save_last.is_checked(),
            val_interval=int(self.val_interval.get_value()),
            amp=None if self.amp.get_value() == AUTO_AMP else self.amp.get_value() == "on",
            momentum=float(self.momentum.get_value()),
            nesterov=self.nesterov.is_checked(),
            restart_epochs=int(self.restart_epochs.get_value() or 0),
            early_stopping_patience=int(self.patience.get_value() or 0),
            early_stopping_min_delta=float(self.min_delta.get_value() or 0),
            max_per_img=int(self.max_dets.get_value() or 0) or None,
            score_thr=float(self.score_thr.get_value() or 0) or None,
            auto_scale_lr=self.auto_scale.is_checked(),
        )

    def _other_values(self) -> dict:
        """The model's, data's, device's and after-training widgets, read as TrainParams fields."""
        frozen = self.frozen.get_value()
        return dict(
            seed=int(self.seed.get_value()),
            device=self.device.get_value(),
            gpus=self.selected_gpus(),
            evaluate=self.evaluate.is_checked(),
            speed_test=self.speed_test.is_checked(),
            frozen_stages=None if frozen == MODEL_DEFAULT else int(frozen),
            class_balance=float(self.class_balance.get_value() or 0),
            slice_size=int(self.slice_size.get_value() or 0),
            slice_overlap=float(self.slice_overlap.get_value() or 0),
            slice_full_image=self.slice_full_image.is_checked(),
            slice_empty=float(self.slice_empty.get_value() or 0),
            slice_min_visible=float(self.slice_min_visible.get_value() or 0),
            slice_partial=self.slice_partial.get_value(),
            export=tuple(self.export.get_value() or ()),
        )

    def set_params(self, p: TrainParams) -> None:
        """Show ``p`` (an experiment's settings): the inverse of :meth:`params`, so that
        ``params()`` then reads ``p`` back (tests/config/test_doors.py sets every field away
        from its default). A device this machine does not have keeps the one shown."""
        for widget, value in (
            (self.epochs, p.epochs), (self.val_batch, p.val_batch_size),
            (self.train_batch, AUTO_BATCH if p.train_batch_size is None else p.train_batch_size),
            (self.workers, AUTO_WORKERS if p.num_workers is None else p.num_workers),
            (self.lr, p.lr), (self.weight_decay, p.weight_decay), (self.warmup, p.warmup_iters),
            (self.grad_clip, p.grad_clip or 0), (self.ckpt_interval, p.checkpoint_interval),
            (self.keep, p.keep_checkpoints), (self.val_interval, p.val_interval),
            (self.seed, p.seed), (self.momentum, p.momentum),
            (self.restart_epochs, p.restart_epochs), (self.patience, p.early_stopping_patience),
            (self.min_delta, p.early_stopping_min_delta), (self.max_dets, p.max_per_img or 0),
            (self.score_thr, p.score_thr or 0), (self.class_balance, p.class_balance),
            (self.slice_size, p.slice_size), (self.slice_overlap, p.slice_overlap),
            (self.slice_empty, p.slice_empty), (self.slice_min_visible, p.slice_min_visible),
        ):  # fmt: skip
            widget.value = value
        self.set_input_size(*p.input_size)
        for select, value in (
            (self.optimizer, p.optimizer), (self.scheduler, p.scheduler),
            (self.slice_partial, p.slice_partial),
        ):  # fmt: skip
            select.set_value(value)
        self.amp.set_value(AUTO_AMP if p.amp is None else "on" if p.amp else "off")
        self.frozen.set_value(MODEL_DEFAULT if p.frozen_stages is None else str(p.frozen_stages))
        self.export.set_value(list(p.export))
        for box, on in ((self.save_best, p.save_best), (self.save_last, p.save_last),
                        (self.nesterov, p.nesterov), (self.auto_scale, p.auto_scale_lr),
                        (self.evaluate, p.evaluate), (self.speed_test, p.speed_test),
                        (self.slice_full_image, p.slice_full_image)):  # fmt: skip
            box.check() if on else box.uncheck()
        devices = {item.value for item in self.device.get_items()}
        if p.device in devices:
            self.device.set_value(p.device)
        gpus = {item.value for item in self.gpus.get_items()}
        self.gpus.set_value([f"cuda:{g}" for g in p.gpus if f"cuda:{g}" in gpus])
        for name, widget in self._generated.items():
            value = getattr(p, name)
            if isinstance(widget, Checkbox):
                widget.check() if value else widget.uncheck()
            elif isinstance(widget, Select):
                widget.set_value(value)
            else:
                widget.value = value

    def set_input_size(self, longer: int, shorter: int) -> None:
        """Show a size (a zoo model's own) in the two fields: 0 for the shorter edge of a
        square, as the fields mean it."""
        self.input_size.value = longer
        self.input_short.value = 0 if shorter == longer else shorter

    def selected_gpus(self) -> tuple[int, ...]:
        """Two or more GPUs chosen: their indices (one GPU is the device field's job)."""
        chosen = self.gpus.get_value() or []
        indices = tuple(sorted(int(name[5:]) for name in chosen))
        return indices if len(indices) > 1 else ()

    def sync_every_epochs(self) -> int:
        return int(self.sync_epochs.get_value() or 0)

    def show_sized(self, status) -> None:
        """What the run chose for the settings left to auto (the controller's status notes)."""
        chosen = list(status.chosen)
        if chosen and self.sized.text != "; ".join(chosen):
            self.sized.set("chosen for this run: " + "; ".join(chosen), "info")

    def preview(self) -> list[tuple[int, float]]:
        params = self.params(DETECTION, ("x",), "none", "scratch")
        problems = params.validate(classes=False)  # (the curve needs no classes)
        if problems:
            raise ValueError("; ".join(problems))
        points = lr_curve(params, self.iters_per_epoch)
        self.chart.clear()
        step = max(1, len(points) // 300)  # a readable number of points
        for it, lr in points[::step]:
            self.chart.add("lr", it, lr)
        return points
