"""Put on ``PYTHONPATH`` by ``tests/conftest.py`` for tests not marked ``train``: a Python process
they start (the CLI, the app server, a rank) that reaches ``Runner.train`` exits with a message
naming the reason, so a test that trains in a subprocess cannot hide in the fast tier."""

import importlib.abc
import importlib.util
import sys

_TARGET = "mmengine.runner.runner"
MESSAGE = (
    "this test trains (Runner.train in a subprocess) but is not marked 'train': "
    "tests/conftest.py's TRAINING_SIGNS did not see it; mark it @pytest.mark.train"
)


def _forbidden(*_args, **_kwargs):
    sys.stderr.write(MESSAGE + "\n")
    sys.stderr.flush()
    raise SystemExit(97)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def patched(module):
            exec_module(module)
            module.Runner.train = _forbidden

        loader.exec_module = patched
        return spec


sys.meta_path.insert(0, _Finder())
