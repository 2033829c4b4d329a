"""Predict a run's validation split with a checkpoint: mmengine's test loop, nothing of our own.

Used by the evaluation when the best epoch's validation predictions were not kept (a checkpoint
named by the user, a run composed before they were kept). The run's own config drives it: the
validation dataloader and ``CocoMetric``, whose ``outfile_prefix`` receives the predictions in
COCO format (``<prefix>.bbox.json``, and ``.segm.json`` with masks), exactly as the validation
during training writes them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from mmengine.config import Config

from src.config.compose import COCO_METRICS


def predict_split(
    cfg: Config, checkpoint: str | Path, outfile_prefix: str, work_dir: str | Path
) -> dict[str, Any]:
    """Run the test loop over the validation split with ``checkpoint``; returns its metrics.
    ``work_dir`` receives the loop's log (a scratch folder)."""
    import src.data.mmdet_dataset
    import src.engine.loops
    import src.engine.sliced_metric  # noqa: F401  (the run's config names our loop and metric)
    from src.engine import patches
    from src.engine.runner import AppRunner, release_mmengine_instances

    patches.apply()
    cfg = copy.deepcopy(cfg)
    evaluator = copy.deepcopy(cfg.val_evaluator)
    if not (isinstance(evaluator, dict) and evaluator.get("type") in COCO_METRICS):
        raise ValueError("the run's val_evaluator is not mmdet's CocoMetric: cannot predict here")
    evaluator["outfile_prefix"] = outfile_prefix
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    # one pass: persistent workers would outlive it and cost 10 s when collected (measured:
    # torch's _shutdown_workers waits out its status-check interval for each worker)
    cfg.test_dataloader["persistent_workers"] = False
    cfg.test_evaluator = evaluator
    cfg.test_cfg = dict(type="TestLoop")
    cfg.work_dir = str(work_dir)
    cfg.load_from, cfg.resume = str(checkpoint), False
    # custom hooks stay: EMAHook swaps in the averaged weights for testing as for validation
    name = f"predict_{id(cfg):x}"
    cfg.experiment_name = name
    if isinstance(cfg.get("visualizer"), dict):
        cfg.visualizer["name"] = name
    runner_cls = type("PredictRunner", (AppRunner,), {"console_log_level": "WARNING"})
    runner = runner_cls.from_cfg(cfg)
    try:
        return runner.test()
    finally:
        release_mmengine_instances(name)
