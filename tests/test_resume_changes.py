"""What a resume may change is one tuple (src.config.params.RESUME_CHANGES): the API's
hyperparameters and the CLI's options agree on it, device included."""

from __future__ import annotations

import pytest
from mmengine.config import Config

import src.cli
from src.config.metadata import RunMetadata
from src.config.params import RESUME_CHANGES
from src.core.errors import RequestError
from src.setup.requests import resume_from_json
from src.setup.resume import _resume_on_devices

VALUES = {"epochs": 5, "gpus": [0], "nproc": 2, "device": "cuda:1"}


def test_the_tuple_names_epochs_gpus_nproc_and_device():
    assert set(RESUME_CHANGES) == {"epochs", "gpus", "nproc", "device"}


@pytest.mark.parametrize("name", RESUME_CHANGES)
def test_the_api_takes_each_change_on_a_resume(name):
    request = resume_from_json({"resume": "run", "hyperparameters": {name: VALUES[name]}})
    value = getattr(request, name)
    assert (list(value) if isinstance(value, tuple) else value) == VALUES[name]


def test_the_api_refuses_another_setting_on_a_resume():
    with pytest.raises(RequestError, match=r"hyperparameters\.lr"):
        resume_from_json({"resume": "run", "hyperparameters": {"lr": 0.1}})


@pytest.mark.parametrize("name", RESUME_CHANGES)
def test_the_cli_takes_each_change_on_a_resume(name):
    flag = f"--{name}"
    value = ",".join(map(str, VALUES[name])) if name == "gpus" else str(VALUES[name])
    args = src.cli.build_parser().parse_args(["train", "--resume", "run", flag, value])
    assert src.cli.train_options.contradiction(args) is None


def test_the_cli_refuses_another_setting_on_a_resume():
    args = src.cli.build_parser().parse_args(["train", "--resume", "run", "--lr", "0.1"])
    assert "--resume and --lr contradict" in src.cli.train_options.contradiction(args)


def _run_config(**train_params) -> Config:
    cfg = Config({})
    RunMetadata(train_params=train_params).write(cfg)
    return cfg


def test_a_resume_on_another_device_records_it_and_keeps_the_gpus():
    cfg = _run_config(device="cuda:0", gpus=[], nproc=2)
    _resume_on_devices(cfg, None, None, "cuda:1")
    recorded = RunMetadata.of(cfg).train_params
    assert (recorded["device"], recorded["gpus"], recorded["nproc"]) == ("cuda:1", [], 2)


def test_a_resume_on_an_unknown_device_is_refused():
    with pytest.raises(RequestError, match="device 'tpu' is unknown"):
        _resume_on_devices(_run_config(device="cpu"), None, None, "tpu")


def test_a_resume_in_more_cpu_processes_than_cores_is_refused():
    from src.engine.cpus import usable_cpus

    cores = usable_cpus()
    if cores >= 64:
        pytest.skip("nproc's range ends at 64: no count above the cores is in it here")
    with pytest.raises(RequestError, match=f"use nproc {cores} or fewer"):
        _resume_on_devices(_run_config(device="cpu", nproc=1), None, cores + 1)
