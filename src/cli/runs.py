"""``runs``: the resumable runs, as the app's runs table shows them.

App data first, then the runs only in Team Files (the local stand-in folder unless ``--team-id``):
what ``train --resume RUN_ID`` can continue.
"""

from __future__ import annotations

import argparse
import time

from src.cli.common import APP_DATA_HELP, DEFAULT_TEAM_FILES, app_data, store


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The command's options: where app data and Team Files are."""
    runs_p = sub.add_parser(
        "runs", help="list resumable runs: in app data, then those only in Team Files"
    )
    runs_p.add_argument("--app-data", help=APP_DATA_HELP)
    runs_p.add_argument(
        "--team-files",
        nargs="?",
        const=DEFAULT_TEAM_FILES,
        default=None,
        metavar="DIR",
        help=f"the folder standing in for Team Files (default {DEFAULT_TEAM_FILES})",
    )
    runs_p.add_argument(
        "--team-id", type=int, help="list this team's Team Files (SERVER_ADDRESS, API_TOKEN)"
    )
    runs_p.set_defaults(func=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    """The controller's runs table: app data first, then runs only in Team Files (the local
    stand-in folder unless ``--team-id``)."""
    from src.training.controller import TrainingController

    artifacts, _ = store(args)
    rows = TrainingController(app_data(args), artifacts).catalog.runs()
    if not rows:
        print(f"no resumable runs in {app_data(args)} or {artifacts.describe('/mmdetection-3')}")
        return 0
    print(f"{'run':<24} {'model':<36} {'epoch':>9} {'iter':>7}  {'saved':<19} {'mAP':>6}  folder")
    for row in rows:
        saved = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["saved_at"]))
        epoch = f"{row['epoch']}/{row['max_epochs']}" + ("*" if row["mid_epoch"] else "")
        m_ap = "-" if row["mAP"] is None else f"{row['mAP']:.3f}"
        where = "" if row["where"] == "app data" else f"{row['where']}: "
        print(
            f"{row['run_id']:<24} {row['model']:<36} {epoch:>9} {row['iteration']:>7}  "
            f"{saved:<19} {m_ap:>6}  {where}{row['folder']}"
        )
    print(
        "\n* stopped mid-epoch; resume with: python -m src.cli train --resume [RUN_ID] "
        "[--team-files DIR|--team-id N]"
    )
    return 0
