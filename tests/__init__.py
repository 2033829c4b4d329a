"""The test suite (a package, so that `tests.helpers` is ours even where a dependency installs
a top-level `tests` package: model-index in the production image does)."""
