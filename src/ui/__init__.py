"""The widgets UI: one module per step; widgets only, no training logic (that is the
controller's, ``src.training.controller``)."""
