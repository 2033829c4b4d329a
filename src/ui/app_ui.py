"""The whole page: the steps in their order, and the handlers that connect them to services.

The order of the steps is declared once, in ``AppUI.steps``. Handlers return at once: composing
is fast, and training runs in the controller's session thread.
"""

from __future__ import annotations

import logging
from typing import Any

from supervisely.app.widgets import Button, Card, Container, Text

from src.audit.service import AuditService
from src.config.params import ConfigError, TrainParams
from src.config.zoo import ZooEntry
from src.core.errors import BusyError, RequestError
from src.data.project import LocalProject, tags_of
from src.data.reader import DatasetError
from src.setup.app_state import LoadedState, hyperparameters_json
from src.setup.prepare import (
    TrainRequest,
)
from src.setup.requests import split_from_json
from src.training.controller import TrainingController
from src.ui.after import AuditStep, PrelabelStep
from src.ui.augmentations import AugmentationsStep
from src.ui.classes import ClassesStep
from src.ui.config import ConfigStep
from src.ui.experiment import ExperimentStep
from src.ui.hyperparameters import HyperparametersStep
from src.ui.input_project import InputProjectStep
from src.ui.model import TAB_CUSTOM, TAB_PRETRAINED, TAB_RESUME, ModelStep
from src.ui.split import SplitStep
from src.ui.task import TaskStep
from src.ui.training import TrainingStep

logger = logging.getLogger(__name__)


class AppUI:
    """Builds every step's widgets (explicit ids) and wires them to the training controller."""

    def __init__(
        self,
        project: LocalProject,
        controller: TrainingController,
        team_id: int | None = None,
        local_folder: str | None = None,
        tensorboard_link: str | None = None,
        audits: AuditService | None = None,
        on_platform: bool = False,
    ) -> None:
        self.project = project
        self.controller = controller
        self.input = InputProjectStep(project)
        self.experiment = ExperimentStep(controller.catalog.experiments)
        self.pending_config: tuple[str, str] | None = None  # an experiment's edited config
        self.task = TaskStep()
        self.model = ModelStep(
            self.task.task,
            controller.catalog.runs,
            controller.catalog.checkpoint_files,
            team_id=team_id,
            local_folder=local_folder,
        )
        self.classes = ClassesStep(str(project.directory), project.classes, tags_of(project))
        self.split = SplitStep(project)
        self.augmentations = AugmentationsStep()
        default_sync = controller.sync.every_epochs if controller.sync else 0
        self.hyper = HyperparametersStep(sync_every_epochs=default_sync or 0)
        self.config = ConfigStep()
        self.model.on_model_changed = self.propose_input_size
        self.propose_input_size(self.model.selected_entry())
        self.training = TrainingStep(tensorboard_link)
        controller.sinks.append(self.training)
        self.prelabel = PrelabelStep(project, controller, on_platform)
        self.audit = AuditStep(audits or AuditService(controller), self.audit_body, on_platform)
        self.next_run_id = controller.new_run_id()  # the composed work dir's name
        self.compose_button = Button("Compose config", widget_id="compose")
        self.message = Text("", widget_id="compose_message")
        self.steps = [
            self.input, self.task, self.model, self.classes, self.split,
            self.augmentations, self.hyper, self.config, self.training,
        ]  # fmt: skip
        self.layout = self._layout()
        self.unlocked = 1  # steps 1..unlocked are open; every open step can be changed again
        for n, step in enumerate(self.steps[1:], start=2):
            step.card.lock(f"Finish step {n - 1} first (Next)")
        self.config.card.lock("Compose the config first (button above)")
        self.training.card.lock("Compose the config first")
        self._wire()

    def _layout(self) -> Container:
        """The page: the experiment card, the numbered steps with their Next buttons (Compose
        after Hyperparameters), then the optional cards of after training."""
        # the steps before Hyperparameters end with "Next", Hyperparameters with "Compose
        # config": each unlocks what follows
        with_next = self.steps.index(self.hyper)
        self.next_buttons = [Button("Next", widget_id=f"next_{n}") for n in range(1, with_next + 1)]
        self.next_messages = [Text("", widget_id=f"next_{n}_msg") for n in range(1, with_next + 1)]
        cards = [self.experiment.card]  # before the numbered steps: optional
        for n, step in enumerate(self.steps, start=1):
            _number(step.card, n)
            cards.append(step.card)
            if n <= with_next:
                cards.append(Container([self.next_buttons[n - 1], self.next_messages[n - 1]]))
            elif step is self.hyper:
                cards.append(Container([self.compose_button, self.message]))
        cards += [self.prelabel.card, self.audit.card]  # after the steps: optional
        return Container(cards, widget_id="layout")

    # ------------------------------------------------------------------ state
    def request(self) -> TrainRequest:
        """The settings of every step as a training request (raises RequestError)."""
        problems = self.model.problems() + self.classes.problems()
        try:
            split = self.split.split(seed=int(self.hyper.seed.get_value()))
        except DatasetError as exc:
            problems.append(str(exc))
            split = None
        if problems:
            raise RequestError(problems)
        model = self.model.get_state()
        custom = self.model.mode == TAB_CUSTOM
        weights = "custom" if custom else "pretrained" if model["pretrained"] else "scratch"
        params = self.hyper.params(
            self.task.task,
            tuple(self.classes.selected),
            self.augmentations.preset,
            weights,
            model["weights_path"] if custom else None,
            augmentation_pipeline=self.augmentations.pipeline_text,
            ignore=self.classes.ignored,
        )
        return TrainRequest(
            project_dir=str(self.project.directory),
            project_id=self.project.project_id,
            project_name=self.project.name,
            app_data_dir=str(self.controller.app_data_dir),
            model=None if custom else model["model"],
            base_config_file=(model["config_path"] or None) if custom else None,
            classes=list(self.classes.selected),
            params=params,
            split=split,
            keep_empty_images=not self.classes.get_state()["drop_empty"],
            cache_dir=self.controller.cache_dir,
        )

    # ------------------------------------------------------------------ actions
    def step_problems(self, n: int) -> list[str]:
        """What keeps step ``n`` (1-based) from being done."""
        step = self.steps[n - 1]
        if step is self.model:
            return self.model.problems()
        if step is self.classes:
            return self.classes.problems()
        if step is self.split:
            try:
                self.split.split(seed=int(self.hyper.seed.get_value()))
            except DatasetError as exc:
                return [str(exc)]
        return []

    def next_step(self, n: int) -> bool:
        """Step ``n`` is done: open step n+1 (resuming a run opens Training at once)."""
        message = self.next_messages[n - 1]
        problems = self.step_problems(n)
        if problems:
            message.set("; ".join(problems), "error")
            return False
        message.set("", "text")
        if self.steps[n - 1] is self.model and self.model.mode == TAB_RESUME:
            self.training.card.unlock()
            message.set("resuming uses the run's own config: press Start training", "info")
            return True
        self.unlock_through(n + 1)
        return True

    def unlock_through(self, n: int) -> None:
        for step in self.steps[self.unlocked : n]:
            step.card.unlock()
        self.unlocked = max(self.unlocked, n)

    def compose(self) -> bool:
        """Compose the config from the settings into the Editor (edits are never overwritten)."""
        if self.model.mode == TAB_RESUME:
            self.message.set("resuming uses the run's own config: press Start training", "info")
            self.training.card.unlock()
            return True
        try:
            request = self.request()
            request.run_id = self.next_run_id
            prepared = self.controller.compose(request)
        except RequestError as exc:
            self.message.set("cannot compose: " + "; ".join(exc.problems), "error")
            return False
        self.hyper.iters_per_epoch = max(
            1, len(prepared.split.train_items or []) // max(1, prepared.params.batch)
        )
        self.config.composed(prepared.config_text)
        if self.pending_config is not None:  # after the first compose: the draft exists
            self.config.load_edit(*self.pending_config)
            self.pending_config = None
        note = "".join(f"; {n}" for n in self.controller.setting_notes(prepared))
        self.message.set(f"config composed for {prepared.model_name}{note}", "success")
        self.unlock_through(len(self.steps))  # every setting was just validated
        return True

    def start(self) -> str | None:
        """Start (or resume) training; returns the run id, or None with a message shown."""
        try:
            if self.model.mode == TAB_RESUME:
                if self.controller.busy:
                    raise BusyError("a run is still in progress: stop it first")
                run = self.controller.locate(self.model.selected_run())  # fetched if in Team Files
                self.training.restore_history(run.work_dir)  # before new points arrive
                run_id = self.controller.resume(
                    run.run_id, sync_every_epochs=self.hyper.sync_every_epochs()
                )
            else:
                if not self.compose():  # said in the Training step too (it shows the last run)
                    self.training.status.set("not started: " + self.message.get_value(), "error")
                    return None
                if self.config.draft and self.config.draft.pending:
                    self.message.set(
                        "apply or keep the pending settings changes in the Config step first",
                        "warning",
                    )
                    return None
                request = self.request()
                request.run_id = self.next_run_id
                request.config_text = self.config.edited_text
                self.training.reset_charts()
                run_id = self.controller.start(
                    request, sync_every_epochs=self.hyper.sync_every_epochs()
                )
        except (RequestError, BusyError, ConfigError) as exc:
            problems = getattr(exc, "problems", [str(exc)])
            self.training.status.set("not started: " + "; ".join(problems), "error")
            return None
        self.next_run_id = self.controller.new_run_id()  # names the next run
        self.training.status.set(f"run {run_id} started", "info")
        self.hyper.sized.set("", "text")
        self.training.watch(
            self.controller, on_end=self._run_ended, on_status=self.hyper.show_sized
        )
        return run_id

    def _run_ended(self) -> None:
        """A run ended: it is offered for resume and for pre-labelling."""
        self.model.refresh_runs()
        self.prelabel.refresh()

    def audit_body(self) -> dict[str, Any]:
        """The steps' settings as ``POST /api/audit``'s body: a zoo model (each fold composes
        its own config for its split, so an edited config is not used); a ``RequestError``
        with what the steps lack."""
        if self.model.mode != TAB_PRETRAINED:
            raise RequestError(["the audit trains a zoo model: choose one in the Model step's "
                                f"{TAB_PRETRAINED} tab"])  # fmt: skip
        request = self.request()
        return {
            "project": request.project_dir, "task": request.params.task,
            "model": request.model, "classes": request.classes,
            "keep_empty_images": request.keep_empty_images,
            "hyperparameters": hyperparameters_json(request.params),
        }  # fmt: skip

    def load_experiment(
        self, run_id: str | None = None, mode: str | None = None, folder: str | None = None,
        best: str | None = None,
    ) -> bool:  # fmt: skip
        """Fill every step with an uploaded run's settings: the one chosen in the card, or
        ``run_id``, or the run ``folder`` of the store (the platform's Experiments page: its
        best checkpoint ``best``)."""
        chosen, chosen_mode = self.experiment.chosen
        mode = mode or chosen_mode
        try:
            if folder is not None:
                loaded = self.controller.from_folder(folder, best, self.project, mode)
            elif run_id or chosen:
                loaded = self.controller.from_run(run_id or chosen, self.project, mode)
            else:
                raise RequestError(["choose an experiment first"])
        except RequestError as exc:
            self.experiment.show_problem("; ".join(exc.problems))
            return False
        self.load_state(loaded)
        return True

    def load_state(self, loaded: LoadedState) -> None:
        """Every step from ``loaded`` (what did not hold in this project was dropped, and the
        experiment card says so); the steps through Hyperparameters open, each editable."""
        body = loaded.with_overrides()  # continue: its best checkpoint as custom weights
        hyper = body["hyperparameters"]
        params = TrainParams(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in hyper.items()})  # fmt: skip
        task = body.get("task", self.task.task)
        self.task.set_task(task)
        self.model.set_task(task)
        if params.weights == "custom" and params.weights_path:
            self.model.set_custom(params.weights_path, loaded.weights_config)
        elif body.get("model"):
            self.model.select_model(body["model"], pretrained=params.weights == "pretrained")
        self.classes.set_classes(
            body.get("classes"), not body.get("keep_empty_images", True), params.ignore
        )
        self.split.set_split(split_from_json(body.get("split")), loaded.source)
        self.augmentations.set_augmentation(params.augmentation, params.augmentation_pipeline)
        self.hyper.set_params(params)  # after the model: its own input size is not proposed
        self.pending_config = (body["config"], loaded.source) if body.get("config") else None
        self.experiment.show_loaded(loaded)
        self.unlock_through(self.steps.index(self.hyper) + 1)

    def propose_input_size(self, entry: ZooEntry | None) -> None:
        """A picked zoo model brings its own input size (mmdet's test scale, e.g. 1333x800)
        into the Hyperparameters step, where the user may change it."""
        size = self.controller.model_input_size(entry.model, entry.task) if entry else None
        if size is not None:
            self.hyper.set_input_size(*size)

    def preview_augmentations(self, another_sample: bool = False) -> bool:
        """A project image before and after the training pipeline of the chosen preset or
        custom transforms (with this page's classes, task and input size)."""
        step = self.augmentations
        sample = step.next_sample() if another_sample else step.sample
        params = self.hyper.params(
            self.task.task, tuple(self.classes.selected), step.preset, "scratch",
            augmentation_pipeline=step.pipeline_text,
        )  # fmt: skip
        problems = params.validate()
        try:
            if problems:
                raise ConfigError("; ".join(problems))
            project_dir = str(self.project.directory)
            shown = self.controller.augmentation_preview(project_dir, params, sample)
        except (ConfigError, BusyError, DatasetError) as exc:
            step.show_problem(str(exc))
            return False
        step.show_preview(shown.before, shown.after, shown.caption())
        return True

    def _wire(self) -> None:
        @self.experiment.load_button.click
        def _load_experiment() -> None:
            self.load_experiment()

        @self.augmentations.preview_button.click
        def _preview_augmentations() -> None:
            self.preview_augmentations()

        @self.augmentations.resample_button.click
        def _another_sample() -> None:
            self.preview_augmentations(another_sample=True)

        for n, button in enumerate(self.next_buttons, start=1):
            button.click(lambda n=n: self.next_step(n))

        @self.task.radio.value_changed
        def _task_changed(value: str) -> None:
            self.model.set_task(value)

        @self.compose_button.click
        def _compose() -> None:
            self.compose()

        @self.training.start_button.click
        def _start() -> None:
            self.start()

        @self.training.stop_button.click
        def _stop() -> None:
            if not self.controller.stop():
                self.training.status.set("nothing is running: nothing to stop", "warning")
            else:
                self.training.status.set("stopping after the current batch…", "warning")


def _number(card: Card, n: int) -> None:
    """Prefix a step's title with its place in ``AppUI.steps`` (the steps title themselves
    without numbers, so reordering the list renumbers the page). The SDK's Card has no title
    setter; its title is read from ``_title`` when the widget's data is (re)built."""
    card._title = f"{n}. {card._title}"
    card.update_data()
