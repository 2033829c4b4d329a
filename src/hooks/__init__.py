"""mmengine hooks of the app. Each takes its collaborators (sinks, predicates) in ``__init__``."""

from src.hooks.early_stopping import EarlyStoppingReplayHook
from src.hooks.metrics import MetricsHook, MetricsSink, TrainProgress, ValResult
from src.hooks.nonfinite import NonFiniteLossError, NonFiniteLossHook
from src.hooks.predictions import BestPredictionsHook
from src.hooks.rng import RngStateHook
from src.hooks.stop import StopHook, TrainingStopped
from src.hooks.workdir import WorkDirError, WorkDirGuardHook

__all__ = [
    "BestPredictionsHook",
    "EarlyStoppingReplayHook",
    "MetricsHook",
    "MetricsSink",
    "NonFiniteLossError",
    "NonFiniteLossHook",
    "RngStateHook",
    "StopHook",
    "TrainProgress",
    "TrainingStopped",
    "ValResult",
    "WorkDirError",
    "WorkDirGuardHook",
]
