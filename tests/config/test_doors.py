"""Every TrainParams field is declared once (src.config.doors) and reaches the user through the
doors it declares: the CLI's flag, the app's widget, the API's hyperparameters."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from src.cli.train_options import generated_cli_options
from src.config.doors import _STEP, CHOICES, DOORS
from src.config.params import TrainParams

ROOT = Path(__file__).resolve().parents[2]
FIELDS = [f.name for f in dataclasses.fields(TrainParams)]


def test_every_field_has_one_declaration():
    assert sorted(DOORS) == sorted(FIELDS), "declare each TrainParams field in src/config/doors.py"
    for name, door in DOORS.items():
        assert door.help, name
        assert door.cli or door.ui or door.api, f"{name} reaches no user: give it a door"


def _other_value(name: str):
    """A valid value of ``name`` other than its default, as the CLI takes it."""
    default = getattr(TrainParams(), name)
    if name in CHOICES:
        return next(c for c in CHOICES[name] if c != default)
    if isinstance(default, bool):
        return not default
    if name == "device":
        return "cuda:0"
    if isinstance(default, float):
        return default / 2 if default else 0.25
    if isinstance(default, int):
        return default + 1 if name != "frozen_stages" else 2
    return {"frozen_stages": 2, "max_per_img": 50, "score_thr": 0.3, "grad_clip": 5.0,
            "train_batch_size": 8, "num_workers": 3, "amp": True, "input_size": (512, 384),
            "gpus": (0, 1), "export": ("onnx",), "ignore": ("crowd",)}[name]  # fmt: skip


def test_each_generated_option_reaches_its_field_from_the_command_line():
    from src.cli import build_parser
    from src.cli.train_options import train_params

    options = generated_cli_options()
    assert options
    for option in options:
        value = _other_value(option.dest)
        if isinstance(value, bool):
            argv = [option.flag if value else "--no-" + option.flag[2:]]
        else:
            argv = [option.flag, str(value)]
        params = train_params(build_parser().parse_args(["train", *argv]))
        assert getattr(params, option.dest) == value, (option.flag, value)


def test_each_declared_flag_is_on_the_parser():
    from src.cli import build_parser

    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {flag for action in train._actions for flag in action.option_strings}
    missing = {name: door.cli for name, door in DOORS.items() if door.cli and door.cli not in flags}
    assert not missing


RANGED = [name for name, door in DOORS.items() if door.range is not None]


def _beyond(name: str) -> list:
    """Values just outside ``name``'s declared range, one past each finite bound."""
    allowed = DOORS[name].range
    whole = dataclasses.fields(TrainParams)[FIELDS.index(name)].type.startswith(("int", "tuple"))
    step = 1 if whole else 0.05
    values = []
    if math.isfinite(allowed.low):
        values.append(allowed.low if allowed.low_open else allowed.low - step)
    if math.isfinite(allowed.high):
        values.append(allowed.high if allowed.high_open else allowed.high + step)
    return values


def _problems(name: str, value) -> list[str]:
    """``TrainParams.validate``'s problems with ``name`` set to ``value`` (slicing on for the
    slicing settings; a pair for the input size)."""
    settings = {name: (value, value) if name == "input_size" else value}
    if name.startswith("slice_") and name != "slice_size":
        settings["slice_size"] = 64
    said = "input size" if name == "input_size" else name
    return [p for p in TrainParams(classes=("a",), **settings).validate() if said in p]


@pytest.mark.parametrize("name", RANGED)
def test_a_range_is_checked_from_its_declaration_alone(monkeypatch, name):
    """Widen a setting's declared range: every check lets the values past the old bounds
    through (validate, slicing's, the API's resume, the CLI's help). A bound also written
    anywhere else still refuses them, and this fails."""
    from src.config.doors import Range
    from src.setup.requests import resume_from_json

    beyond = _beyond(name)
    assert beyond and all(_problems(name, v) for v in beyond), "refused as declared"
    allowed = DOORS[name].range
    wide = Range(allowed.low - 1000, allowed.high + 1000, off=allowed.off)
    monkeypatch.setitem(DOORS, name, dataclasses.replace(DOORS[name], range=wide))
    for value in beyond:
        assert _problems(name, value) == [], (name, value)
    if name == "epochs":
        assert resume_from_json({"resume": "r", "hyperparameters": {"epochs": 0}}).epochs == 0
    helps = {o.dest: o.kwargs["help"] for o in generated_cli_options()}
    assert name not in helps or wide.words() in helps[name]


def test_the_api_takes_every_field_it_declares():
    from src.setup.prepare import RequestError
    from src.setup.requests import request_from_json

    body = {
        "project": "p",
        "hyperparameters": {
            name: _json(_other_value(name))
            for name, door in DOORS.items()
            if door.api and name not in ("augmentation_pipeline", "weights_path", "step_epochs")
        },
    }
    body["hyperparameters"] |= {"step_epochs": [3, 6], "weights_path": "w.pth"}
    params = request_from_json(body, "app_data").params
    for name, value in body["hyperparameters"].items():
        got = getattr(params, name)
        assert (list(got) if isinstance(got, tuple) else got) == value, name
    refused = [name for name, door in DOORS.items() if not door.api]
    with pytest.raises(RequestError, match=rf"unknown hyperparameters \['{refused[0]}'\]"):
        request_from_json({"project": "p", "hyperparameters": {refused[0]: "x"}}, "app_data")


def _json(value):
    return list(value) if isinstance(value, tuple) else value


_UI_CHECK = r"""
import json, sys
from src.config.doors import DOORS, _STEP
from src.ui.hyperparameters import HyperparametersStep

step = HyperparametersStep()
args = ("object-detection", ("a",), "light", "pretrained")
before = step.params(*args)
changed = {}
for name, door in DOORS.items():
    if door.ui in (None, _STEP):
        continue
    widget = getattr(step, door.ui)
    if hasattr(widget, "is_checked"):
        widget.uncheck() if widget.is_checked() else widget.check()
    elif hasattr(widget, "get_items"):
        values = [i.value for i in widget.get_items() if i.value != widget.get_value()]
        if not values:  # one choice here (the CPU; no GPUs): nothing to change it to
            changed[name] = "single choice"
            continue
        widget.set_value([values[0]] if name in ("gpus", "export") else values[-1])
    else:
        widget.value = (widget.get_value() or 0) + (32 if name == "input_size" else 1)
    after = step.params(*args)
    changed[name] = getattr(after, name) != getattr(before, name)
    before = after
print(json.dumps(changed))
"""


def test_each_declared_widget_is_read_into_the_params():
    """Built in a process of its own: the page's widgets are process-wide singletons."""
    out = subprocess.run(
        [sys.executable, "-c", _UI_CHECK], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    changed = json.loads(out.stdout.strip().splitlines()[-1])
    not_read = [name for name, ok in changed.items() if ok is False]
    assert not not_read, f"widgets not read into TrainParams: {not_read}"
    assert set(changed) == {n for n, d in DOORS.items() if d.ui not in (None, _STEP)}
    # the fields other steps own are the params() arguments the app passes
    import inspect

    from src.ui.hyperparameters import HyperparametersStep

    passed = set(inspect.signature(HyperparametersStep.params).parameters) - {"self"}
    assert passed == {n for n, d in DOORS.items() if d.ui == _STEP}


_UI_RANGES = r"""
import dataclasses, json, math
from src.config.doors import DOORS, Range

wide = {}
for name, door in list(DOORS.items()):  # every declared range widened by 3 each way
    if door.range is not None:
        r = door.range
        wide[name] = Range(r.low - 3, r.high + 3, off=r.off)
        DOORS[name] = dataclasses.replace(door, range=wide[name])
from src.ui.hyperparameters import MODEL_DEFAULT, HyperparametersStep

step = HyperparametersStep()
shown = {}
for name, door in DOORS.items():
    if name not in wide or door.ui in (None, "<step>"):
        continue
    widget = getattr(step, door.ui)
    if hasattr(widget, "get_items"):  # a choice of whole numbers
        values = [float(i.value) for i in widget.get_items() if i.value != MODEL_DEFAULT]
        low, high = min(values), max(values)
    else:
        low, high = widget._min, widget._max
    declared = wide[name].high if math.isfinite(wide[name].high) else None
    shown[name] = [low, high, wide[name].low, declared]
print(json.dumps(shown))
"""


def test_the_steps_number_widgets_take_their_bounds_from_the_declarations():
    """Widen every declared range: each ranged widget of the Hyperparameters step follows (its
    maximum is the new bound; its minimum the new one, or below it the widget's value for
    auto, the model's own or off). A bound written in the step stays, and this fails."""
    out = subprocess.run(
        [sys.executable, "-c", _UI_RANGES], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    shown = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"epochs", "slice_overlap", "momentum", "frozen_stages", "score_thr"} <= set(shown)
    # (the widget's min, max; the declared low, high): max the declared, min at most the declared
    wrong = {n: v for n, v in shown.items() if v[1] != v[3] or v[0] > v[2]}
    assert not wrong, f"widget bounds not the declared ones (min, max, declared): {wrong}"


_UI_ROUND_TRIP = r"""
import dataclasses, json
from src.config.doors import DOORS, _STEP
from src.config.params import TrainParams
from src.ui.hyperparameters import HyperparametersStep

# every setting of the step away from its default (a loaded experiment's), valid on a CPU
wanted = TrainParams(
    epochs=33, train_batch_size=5, val_batch_size=3, num_workers=1, input_size=(480, 352),
    optimizer="SGD", lr=0.0123, weight_decay=0.002, momentum=0.8, nesterov=True,
    scheduler="step", restart_epochs=4, warmup_iters=50, grad_clip=2.5, checkpoint_interval=2,
    keep_checkpoints=3, save_best=False, save_last=False, val_interval=3, seed=7, amp=False,
    evaluate=False, early_stopping_patience=4, early_stopping_min_delta=0.01, frozen_stages=2,
    max_per_img=50, score_thr=0.05, auto_scale_lr=True, export=("onnx",), class_balance=0.3,
    speed_test=True,
)
step = HyperparametersStep()
step.set_params(wanted)
got = step.params("object-detection", (), "light", "pretrained")
shown = {n: d.ui for n, d in DOORS.items() if d.ui not in (None, _STEP)}
print(json.dumps({n: [repr(getattr(got, n)), repr(getattr(wanted, n))] for n in shown
                  if getattr(got, n) != getattr(wanted, n) and n not in ("device", "gpus")}))
"""


def test_an_experiments_settings_shown_in_the_step_are_read_back_unchanged():
    """``set_params`` (Start from an experiment) is the inverse of ``params``: every setting the
    step shows comes back as loaded (the device: this machine's; no GPUs here)."""
    out = subprocess.run(
        [sys.executable, "-c", _UI_ROUND_TRIP], cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {}
