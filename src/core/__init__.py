"""The bottom layer: facts every other layer names (errors, task names, run-file names);
imports nothing of ours."""
