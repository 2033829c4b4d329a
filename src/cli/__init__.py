"""Headless entry point: ``python -m src.cli {demo-project,zoo,train,runs,probe}``.

Like ``src/web/main.py`` for the app, this package is an entry point: it reads the environment
(``SLY_APP_DATA_DIR``, ``XDG_CACHE_HOME``) and turns arguments into ``TrainingController`` calls.
Exit code 0 on success; otherwise non-zero with a one-line reason on stderr.

One module per command, its options beside its code, so that a command changes in one place:
``train`` (with ``train_options`` and ``train_output``), ``evaluate``, ``export``, ``predict``
(with ``prelabel``: ``predict RUN_ID --project``), ``runs``, ``probe``, ``zoo``,
``demo_project``. ``common`` holds what several share (paths, the
error policy, the store), ``arguments`` the option types, ``parser`` the parser and ``main``.
"""

from src.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
