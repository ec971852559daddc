"""The typer app (`app`), terminal tables and JSON (`tables`), progress bars (`progress`), signals.

The only layer that reads argv. It must not import torch, mlflow or scikit-learn at module
level: each command imports what it needs inside its body, so `--help` and `validate` start fast.
"""
