"""The model zoo, the training loop, and the memory budget (torch).

Must not import mlflow, nor registry, execute, inspect or cli: training knows nothing of
where a version is stored.
"""
