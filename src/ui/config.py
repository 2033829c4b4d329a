"""Step 8: the composed config as text; editable in advanced mode; edits never lost silently."""

from __future__ import annotations

from supervisely.app.widgets import Button, Card, Container, Editor, Flexbox, Switch, Text

from src.config.editor import ConfigDraft
from src.config.input_shapes import padding_problems
from src.config.params import ConfigError
from src.config.text import parse_config_text

OWNED_NOTE = (
    "The text below is exactly what trains. The app re-applies only what it must own: dataset "
    "paths and split, the class count, the work dir (app data), resume, the loop/sampler that "
    "make stop-and-resume exact, and what the platform's serving app reads (dataset_type, "
    "selected_classes, sly_metadata). A config is Python: Validate and Start run it with the "
    "app's rights (it can read and write files, start programs), so paste only configs you trust."
)


class ConfigStep:
    def __init__(self) -> None:
        self._build_widgets()
        self.draft: ConfigDraft | None = None
        self._wire()

    def _build_widgets(self) -> None:
        """The step's widgets, in its card: the note, the Editor, Validate, pending changes."""
        self.note = Text(OWNED_NOTE, status="info", widget_id="cfg_note")
        self.advanced = Switch(False, widget_id="cfg_advanced")
        self.editor = Editor(
            "",
            height_lines=30,
            language_mode="python",
            readonly=True,
            restore_default_button=False,
            widget_id="cfg_editor",
        )
        self.validate_button = Button("Validate", button_size="small", widget_id="cfg_validate")
        self.result = Text("", widget_id="cfg_result")
        self.pending_text = Text("", status="warning", widget_id="cfg_pending")
        self.apply_button = Button(
            "Apply these changes to my text", button_size="small", widget_id="cfg_apply"
        )
        self.keep_button = Button("Keep my text", button_size="small", widget_id="cfg_keep")
        self.discard_button = Button(
            "Discard my edits", button_size="small", widget_id="cfg_discard"
        )
        self.pending_box = Container(
            [self.pending_text, Flexbox([self.apply_button, self.keep_button])],
            widget_id="cfg_pending_box",
        )
        self.pending_box.hide()
        self.card = Card(
            "Config",
            content=Container(
                [
                    self.note,
                    self.advanced,
                    self.editor,
                    Flexbox([self.validate_button, self.discard_button]),
                    self.result,
                    self.pending_box,
                ]
            ),
            widget_id="card_config",
        )

    def _wire(self) -> None:
        """The widgets' handlers: advanced mode, Validate, and the pending changes' buttons."""

        @self.advanced.value_changed
        def _advanced(on: bool) -> None:
            self.editor.readonly = not on

        @self.validate_button.click
        def _validate() -> None:
            self.validate()

        @self.apply_button.click
        def _apply() -> None:
            self.sync_from_editor()
            try:
                self.editor.set_text(self.draft.apply_pending())
            except ConfigError as exc:
                self.result.set(str(exc), "error")
                return
            self._show_pending()

        @self.keep_button.click
        def _keep() -> None:
            self.draft.keep_edits()
            self._show_pending()

        @self.discard_button.click
        def _discard() -> None:
            if self.draft is not None:
                self.editor.set_text(self.draft.discard_edits())
                self._show_pending()

    def sync_from_editor(self) -> None:
        """The Editor's current text into the draft (the page sends it with every request)."""
        if self.draft is not None:
            self.draft.edit(self.editor.get_text())

    def composed(self, text: str) -> None:
        """The settings produced a new composed config."""
        if self.draft is None:
            self.draft = ConfigDraft(text)
            self.editor.set_text(text)
            return
        self.sync_from_editor()
        if self.draft.settings_changed(text) is None:
            self.editor.set_text(self.draft.text)
        self._show_pending()

    def load_edit(self, text: str, source: str) -> None:
        """An experiment's edited config over the composed one: the user's text, trained as
        written (kept, like any edit, when the settings change)."""
        self.sync_from_editor()
        self.draft.edit(text)
        self.editor.set_text(text)
        self.result.set(f"the edited config of {source}: it trains as written", "info")

    def _show_pending(self) -> None:
        pending = self.draft.pending if self.draft else None
        if pending is None:
            self.pending_box.hide()
            return
        lines = "<br>".join(pending.describe()[:40])
        self.pending_text.text = (
            "Your settings changed the composed config, but you have edited the text. "
            f"These changes are not applied yet:<br>{lines}"
        )
        self.pending_box.show()

    def validate(self) -> bool:
        self.sync_from_editor()
        if self.draft is None:
            self.result.set("nothing composed yet", "warning")
            return False
        try:
            parsed = parse_config_text(self.draft.text)
        except ConfigError as exc:
            self.result.set(f"invalid config: {exc}", "error")
            return False
        warnings = padding_problems(parsed)
        if warnings:
            # it may still train on images that happen to fit: warn, do not refuse
            self.result.set("the config is valid, but:<br>" + "<br>".join(warnings), "warning")
        else:
            self.result.set("the config is valid", "success")
        return True

    @property
    def edited_text(self) -> str | None:
        """The user's text when it differs from the composed one (it then trains as written)."""
        self.sync_from_editor()
        return self.draft.text if self.draft and self.draft.edited else None

    def get_state(self) -> dict:
        return {
            "advanced": self.advanced.is_switched(),
            "edited": bool(self.draft and self.draft.edited),
            "pending": bool(self.draft and self.draft.pending),
        }
