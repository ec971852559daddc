"""The pipeline file: schema (`spec`), the YAML loader (the only YAML reader), the expert graph, its drawing.

YAML in, a validated `Pipeline` and its graph out. Must not import torch, mlflow,
scikit-learn or numpy, nor any other layer of this package: `validate` and `--help` run on it.
"""
