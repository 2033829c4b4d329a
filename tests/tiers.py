"""The suite's tiers: which tests train, found by reading them, and a guard that proves it.

``make test-fast`` runs the tests that are neither ``slow`` nor ``train``; ``make test`` runs all.
A test *trains* when its own code, a fixture it uses (however deep) or a function of ``tests/``
that either calls shows one of ``TRAINING_SIGNS``: a training session, a controller or UI start, the
CLI's ``train`` without ``--dry-run``, ``POST /api/train`` (or the page's start) followed by a wait
for the run. Reading can miss a way in, so
``forbid_training`` makes ``Runner.train`` fail in every fast-tier test (neither ``train`` nor
``slow``), in its own
process and (through ``tests/_no_training/sitecustomize.py`` on ``PYTHONPATH``) in the Python
processes it starts: a missed test fails with the reason instead of slowing the fast tier.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import inspect
import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

GUARD_DIR = Path(__file__).resolve().parent / "_no_training"
# per-test time limits (pytest-timeout, seconds); a module fixture's training counts toward the
# first test that uses it; the default for the rest is pyproject's ``timeout``
TIMEOUT_TRAIN = 1200
TIMEOUT_SLOW = 2400

# a call of one of these names trains (helpers and the classes behind them)
TRAINING_CALLS = {"TrainingSession", "RankSession"}
# string constants that name a training route of the HTTP API or the widgets page
TRAINING_ROUTES = ("/api/train", "/train_start/", "/api/audit", "/audit_start/")
# a test that then waits for the run (or polls it) trains; a refusal answers at once
WAITS = ("wait", "sleep", "poll")
# callees that take a command line: with a "train" argument and no "--dry-run", they train
COMMAND_CALLS = {"main", "run_cli", "run_cli_process", "run", "Popen", "check_call",
                 "check_output", "_cli"}  # fmt: skip
UNMARKED = (
    "this test trains (Runner.train) but is not marked 'train': tests/tiers.py's signs did not "
    "see it; mark it @pytest.mark.train"
)


def apply_tiers(items: list[pytest.Item]) -> None:
    for item in items:
        if not item.get_closest_marker("train") and _trains(item):
            item.add_marker(pytest.mark.train)
        if item.get_closest_marker("timeout"):
            continue
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.timeout(TIMEOUT_SLOW))
        elif item.get_closest_marker("train"):
            item.add_marker(pytest.mark.timeout(TIMEOUT_TRAIN))


def _trains(item: pytest.Item) -> bool:
    function = getattr(item, "function", None)
    if function is None:
        return False
    roots = [function]
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        for fixturedef in info.name2fixturedefs.get(name, ()) if info else ():
            roots.append(fixturedef.func)
    seen: set[int] = set()
    return any(_callable_trains(root, seen) for root in roots)


def _callable_trains(func: Callable, seen: set[int]) -> bool:
    func = inspect.unwrap(func)
    if id(func) in seen or not _is_ours(func):
        return False
    seen.add(id(func))
    tree = _tree(func)
    if tree is None:
        return False
    if _shows_a_sign(tree):
        return True
    namespace = {**getattr(func, "__globals__", {}), **_local_imports(tree)}
    for name in _called_names(tree):
        target = namespace.get(name)
        if target is not None and callable(target) and _callable_trains(target, seen):
            return True
    return False


def _local_imports(tree: ast.AST) -> dict[str, object]:
    """What ``from tests.x import y`` inside a function binds (a test importing a helper
    locally): only our own modules, which are imported already."""
    found: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    found[alias.asname or alias.name] = getattr(module, alias.name)
    return found


def _is_ours(func: object) -> bool:
    module = getattr(func, "__module__", "") or ""
    return module.startswith("tests") or module.startswith("test_")


@functools.cache
def _tree_of(func: Callable) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return None


def _tree(func: Callable) -> ast.AST | None:
    try:
        return _tree_of(func)
    except TypeError:  # unhashable
        return None


def _shows_a_sign(tree: ast.AST) -> bool:
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    waits = any(word in _callee(call).lower() for call in calls for word in WAITS)
    for node in ast.walk(tree):
        # a training route trains when the test then waits for the run; refusals answer at once
        if (
            waits
            and isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and any(route in node.value for route in TRAINING_ROUTES)
        ):
            return True
        if not isinstance(node, ast.Call):
            continue
        name = _callee(node)
        if name in TRAINING_CALLS:
            return True
        if name == "start" and (node.args or node.keywords):  # controller.start(request)
            return True
        if name in COMMAND_CALLS:
            words = _string_arguments(node)
            if "train" in words and "--dry-run" not in words:
                return True
    return False


def _callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _string_arguments(call: ast.Call) -> set[str]:
    words = set()
    for arg in [*call.args, *(k.value for k in call.keywords)]:
        for node in ast.walk(arg):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                words.add(node.value)
    return words


def _called_names(tree: ast.AST) -> set[str]:
    """Names called, or passed to a call (a helper handed to a thread); not every name read: a
    local variable may share a module fixture's name."""
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name):
            names.add(node.func.id)
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if isinstance(arg, ast.Name):
                names.add(arg.id)
    return names


@contextlib.contextmanager
def forbid_training(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """While the block runs, ``Runner.train`` records the test as training and raises; the
    Python processes started meanwhile get the same guard. Yields the list of what was caught."""
    from mmengine.runner import Runner

    caught: list[str] = []

    def forbidden(*_args, **_kwargs):
        caught.append(UNMARKED)
        raise RuntimeError(UNMARKED)

    monkeypatch.setattr(Runner, "train", forbidden)
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(GUARD_DIR), path])))
    yield caught
