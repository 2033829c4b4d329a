"""The label-error audit (``python -m src.cli audit``, docs/after-training.md): K models trained
on K folds of a project, each image predicted by the model that did not train on it, and every
label and confident prediction scored as a suspect (missing, spurious, wrong class, loose box).

The audit suggests; a person decides. Nothing here changes the user's project: the suspects go
into a report, a JSON file and a tagged copy of the project.
"""
