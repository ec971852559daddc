"""Sources as named tensors split deterministically, and one expert's inputs and target.

Must not import mlflow, nor training, registry, execute, inspect or cli: data never trains
and never touches the registry.
"""
