"""Pre-labelling (docs/after-training.md): a run's model writes its predictions into a copy of a
project. Below the use cases (the controller's ``prelabel`` calls it), above the exports and the
engine it predicts with (``src.export.onnx_export.load_model``, ``src.engine.tile_merge``)."""
