"""What needs doing and why: fingerprints, records, the planner, cutoff verdicts.

Pure: records and a graph in, statuses and a plan out. Must not import torch, mlflow or
scikit-learn, nor data, training, registry, execute, inspect or cli; it is tested on a
DiGraph of integers.
"""
