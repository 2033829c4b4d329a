"""One table of export formats (issue 37): each format declared once in
``src.core.export_formats`` and built by its row of ``src.export.formats.EXPORTERS``; a new row
reaches every door (docs/architecture.md, "Add an export format")."""

from __future__ import annotations

import argparse

import pytest

import src.core.export_formats as table
from src.cli.parser import build_parser
from src.config.params import TrainParams
from src.core.export_formats import ExportFormat, build_order, export_names
from src.export.formats import EXPORTERS

NEW = ExportFormat(
    "openvino", "OpenVINO", "OpenVINO (Intel CPUs; built from the ONNX file)",
    "Intel's runtime", "OpenVINO", ".xml", built_from="onnx",
)  # fmt: skip


def test_every_declared_format_has_a_builder_and_every_builder_a_declaration():
    assert sorted(EXPORTERS) == sorted(export_names())


def test_a_format_is_built_after_the_one_it_is_built_from():
    assert build_order(["tensorrt"]) == ("onnx", "tensorrt")
    assert TrainParams(export=("tensorrt",)).export_formats == ("onnx", "tensorrt")


@pytest.fixture
def with_new_row(monkeypatch):
    monkeypatch.setattr(table, "EXPORT_FORMATS", (*table.EXPORT_FORMATS, NEW))


def _choices_of(parser: argparse.ArgumentParser, command: str, flag: str) -> argparse.Action:
    sub = parser._subparsers._group_actions[0].choices[command]
    return next(a for a in sub._actions if flag in a.option_strings)


def test_a_new_row_reaches_the_cli(with_new_row):
    parser = build_parser()
    assert "openvino" in _choices_of(parser, "train", "--export").metavar
    assert "openvino" in _choices_of(parser, "export", "--format").metavar
    args = parser.parse_args(["export", "run1", "--format", "onnx,openvino"])
    assert args.format == ("onnx", "openvino")


def test_a_new_row_reaches_the_ui_items(with_new_row):
    from src.ui.hyperparameters import export_items

    assert [(i.value, i.label) for i in export_items()][-1] == ("openvino", NEW.label)


def test_a_new_row_reaches_the_validation(with_new_row):
    params = TrainParams(classes=("a",), export=("openvino",))
    assert not [p for p in params.validate() if "export" in p]
    assert params.export_formats == ("onnx", "openvino")


def test_without_the_row_the_doors_refuse_it():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "run1", "--format", "openvino"])
    assert [p for p in TrainParams(export=("openvino",)).validate() if "export format" in p]
