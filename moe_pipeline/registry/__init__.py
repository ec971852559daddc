"""Everything MLflow: the store (versions, tags, the `current` alias) and a version's files.

The only layer that imports mlflow, and only inside the functions that need it, so that
importing this package loads no mlflow. Must not import training, execute, inspect or cli:
nothing here trains.
"""
