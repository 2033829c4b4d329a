"""The recipe "add a setting" (docs/architecture.md): a ``TrainParams`` field and its ``Door``
are all it takes for the CLI's option, the API's field, the checks of its range and a widget on
the Hyperparameters step that ``params()`` reads and ``set_params()`` shows. Tried in a process of
its own with a setting added at run time (the page's widgets are process-wide singletons)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_NEW_SETTING = r"""
import dataclasses, json
import src.config.params as params
import src.config.doors as doors
from src.config.doors import Door, Range

# the recipe: a field (src/config/params.py) and its Door (src/config/doors.py)
NewParams = dataclasses.make_dataclass(
    "TrainParams", [("warm_cycles", int, dataclasses.field(default=3)),
                    ("warm_start", bool, dataclasses.field(default=False))],
    bases=(params.TrainParams,),
)
params.TrainParams = NewParams
doors.DOORS["warm_cycles"] = Door("warm restarts of the schedule", "--warm-cycles",
                                  "warm_cycles", range=Range(0, 10))
doors.DOORS["warm_start"] = Door("start warm", "--warm-start", "warm_start")
# (what imported the old class by name sees the new one, as it would the edited class)
import src.setup.requests as requests, src.ui.hyperparameters as hp
requests.TrainParams = hp.TrainParams = NewParams

from src.cli.parser import build_parser
from src.cli.train_options import train_params
from src.setup.requests import request_from_json

got = {}
args = build_parser().parse_args(["train", "--project", "p", "--model", "m", "--warm-cycles", "5",
                                  "--warm-start"])
cli = train_params(args)
got["cli"] = [cli.warm_cycles, cli.warm_start]
api = request_from_json({"project": "p", "hyperparameters": {"warm_cycles": 6}}, "d").params
got["api"] = api.warm_cycles
got["refused"] = [p for p in NewParams(classes=("a",), warm_cycles=11).validate() if "warm" in p]
step = hp.HyperparametersStep()
ui_args = ("object-detection", ("a",), "light", "pretrained")
step.warm_cycles.value = 7
step.warm_start.check()
read = step.params(*ui_args)
got["ui"] = [read.warm_cycles, read.warm_start, step.warm_cycles.widget_id]
step.set_params(NewParams(warm_cycles=2, warm_start=False))
shown = step.params(*ui_args)
got["shown"] = [shown.warm_cycles, shown.warm_start]
print(json.dumps(got))
"""


def test_a_field_and_its_door_reach_the_cli_the_api_the_checks_and_the_step():
    out = subprocess.run(
        [sys.executable, "-c", _NEW_SETTING], cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["cli"] == [5, True]
    assert got["api"] == 6
    assert got["refused"] and "from 0 to 10" in got["refused"][0]
    assert got["ui"] == [7, True, "hp_warm_cycles"]
    assert got["shown"] == [2, False]
