"""The raw-config editor's model: edits are never lost to a settings change.

The Editor shows the config composed from the widgets (the *base*). Once the user edits the text,
a later settings change must not silently overwrite the edits. :class:`ConfigDraft` keeps the base
the user started from and the user's text; when the settings produce a new base it computes what
would change, key by key (``optim_wrapper.optimizer.lr: 0.001 -> 0.01``), and which of those keys
the user edited too (conflicts). The user then chooses: apply the settings' changes on top of the
edited text (their other edits kept; conflicting keys take the settings' value), or keep the text
as it is. Pure: no widgets, no training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmengine.config import Config

from src.config.params import ConfigError
from src.config.text import config_to_text, parse_config_text

_MISSING = object()


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [..]}`` → ``{"a.b": 1, "c": [..]}`` (lists are leaves)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Flattened keys whose value differs: key -> (old value or _MISSING, new or _MISSING)."""
    a, b = flatten(old), flatten(new)
    return {
        key: (a.get(key, _MISSING), b.get(key, _MISSING))
        for key in sorted(set(a) | set(b))
        if a.get(key, _MISSING) != b.get(key, _MISSING)
    }


def _set_path(root: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = root
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    if value is _MISSING:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


# Keys the app re-applies at start whatever the text says: not worth a question to the user.
# (``load_from`` is not one: an edited text trains from the weights it names, so a change of the
# weights setting is a change to apply or keep, like any other; a resume sets it itself.)
_OWNED_SUFFIXES = ("work_dir", "coco_gt_file", "ann_file", "project_dir", "resume")


def _app_owned(key: str) -> bool:
    return key.split(".")[-1] in _OWNED_SUFFIXES


def _show(value: Any) -> str:
    return "(absent)" if value is _MISSING else repr(value)


@dataclass
class PendingChange:
    """What a settings change would do to an edited config."""

    changes: dict[str, tuple[Any, Any]]  # key -> (old base value, new base value)
    conflicts: list[str]  # keys the user edited that the settings change too
    new_base_text: str

    def describe(self) -> list[str]:
        """One line per key, for the UI: ``key: old -> new`` (+ "you edited this")."""
        lines = []
        for key, (old, new) in self.changes.items():
            mark = "  (you edited this)" if key in self.conflicts else ""
            lines.append(f"{key}: {_show(old)} -> {_show(new)}{mark}")
        return lines


@dataclass
class ConfigDraft:
    """The Editor's text, the base it came from, and pending settings changes."""

    base_text: str
    text: str = ""
    pending: PendingChange | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.text:
            self.text = self.base_text

    @property
    def edited(self) -> bool:
        return self.text != self.base_text

    def edit(self, text: str) -> None:
        """The user changed the text (validated later, on Validate or Start)."""
        self.text = text

    def user_edits(self) -> dict[str, tuple[Any, Any]]:
        """Keys the user changed relative to the base (raises ConfigError on invalid text)."""
        return changed_keys(
            parse_config_text(self.base_text).to_dict(), parse_config_text(self.text).to_dict()
        )

    def settings_changed(self, new_base_text: str) -> PendingChange | None:
        """New settings composed ``new_base_text``.

        Unedited text follows the settings at once (returns None). Edited text stays as it is and
        the change is held as ``pending`` (returned) until the user chooses.
        """
        if not self.edited:
            self.base_text = self.text = new_base_text
            self.pending = None
            return None
        old = parse_config_text(self.base_text).to_dict()
        new = parse_config_text(new_base_text).to_dict()
        changes = {k: v for k, v in changed_keys(old, new).items() if not _app_owned(k)}
        if not changes:
            self.base_text = new_base_text
            self.pending = None
            return None
        try:
            edited_keys = set(self.user_edits())
        except ConfigError:
            edited_keys = set(changes)  # unparsable edits: every change is a conflict
        self.pending = PendingChange(
            changes=changes,
            conflicts=sorted(k for k in changes if k in edited_keys),
            new_base_text=new_base_text,
        )
        return self.pending

    def apply_pending(self) -> str:
        """Put the settings' changes into the edited text; the user's other edits stay."""
        if self.pending is None:
            return self.text
        try:
            current = parse_config_text(self.text)
        except ConfigError as exc:
            raise ConfigError(
                f"the edited config does not parse, so the settings cannot be merged into it: "
                f"{exc}. Fix it, or discard your edits"
            ) from None
        data = current.to_dict()
        for key, (_, new) in self.pending.changes.items():
            _set_path(data, key, new)
        self.text = config_to_text(Config(data))
        self.base_text = self.pending.new_base_text
        self.pending = None
        return self.text

    def keep_edits(self) -> None:
        """Keep the text as it is; the settings' change is dropped (the new base is adopted)."""
        if self.pending is not None:
            self.base_text = self.pending.new_base_text
            self.pending = None

    def discard_edits(self) -> str:
        """Back to the composed config (a pending settings change included)."""
        if self.pending is not None:
            self.base_text = self.pending.new_base_text
        self.text = self.base_text
        self.pending = None
        return self.text
