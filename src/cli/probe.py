"""``probe``: which zoo models train, validate and predict on a project here.

One short real run per model, each in a process of its own (``src.training.zoo_probe``), so that one
model's crash or memory does not end the others; the result is a markdown table.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from src.cli.common import fail
from src.core.errors import FAILED
from src.core.tasks import TASKS


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The command's options: the project, the task, the models and their input size."""
    probe = sub.add_parser(
        "probe",
        help="check which zoo models train, validate and predict on a project here (one short "
        "real run per model; a markdown table)",
    )
    probe.add_argument("--project", required=True)
    probe.add_argument("--task", choices=list(TASKS), help="default: both")
    probe.add_argument("--models", help="comma-separated model names (default: each "
                       "architecture's default model)")  # fmt: skip
    probe.add_argument("--input-size", type=int, default=160)
    probe.add_argument("--json", help="also write the results to this file")
    probe.set_defaults(func=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    """Probe each model; exit 1 when a model fails for a reason other than a missing GPU or
    package (those are this machine's, not the model's)."""
    from src.config import zoo
    from src.training.zoo_probe import probe_in_subprocess

    tasks = [args.task] if args.task else list(TASKS)
    wanted = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    jobs = []
    for task in tasks:
        if wanted:
            offered = {e.model for e in zoo.list_models(task)}
            jobs += [(m, task) for m in wanted if m in offered]
        else:
            jobs += [(e.model, task) for e in zoo.default_models(task)]
    if not jobs:
        return fail(f"no zoo model of {', '.join(tasks)} matches {args.models!r}")
    print("| architecture | model | passes | needs GPU | why not |")
    print("|---|---|---|---|---|")
    results = []
    for model, task in jobs:
        result = probe_in_subprocess(model, task, args.project, args.input_size)
        results.append(result)
        print(result.row(), flush=True)
    passed = sum(r.passes for r in results)
    print(f"\n{passed} of {len(results)} models pass on {args.project}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0 if all(r.passes or r.needs_gpu or r.needs_packages for r in results) else FAILED
