"""mmengine hooks of the app. Each takes its collaborators (sinks, predicates) in ``__init__``."""

from src.hooks.metrics import MetricsHook, MetricsSink, TrainProgress, ValResult

__all__ = ["MetricsHook", "MetricsSink", "TrainProgress", "ValResult"]
