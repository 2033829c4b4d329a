"""mmengine hooks of the app. Each takes its collaborators (sinks, predicates) in ``__init__``."""
