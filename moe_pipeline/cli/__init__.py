"""The typer app (`app`), terminal tables and JSON (`tables`), progress bars (`progress`).

The only layer that reads argv. It must not import torch, mlflow or scikit-learn at module
level: commands import what they need inside their bodies, so
that importing `cli.app` loads none of torch, mlflow or scikit-learn.
"""
