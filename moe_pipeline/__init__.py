"""moe-pipeline: pipelines of small single-task experts with an MLflow registry.

One subpackage per layer; imports point one way (each `__init__` says what it must not
import, and tests/unit/test_layers.py checks it):
errors -> pipeline -> state -> data -> training -> registry -> execute -> inspect -> cli.
`imports` (large libraries imported without the collector rescanning them) is, like
`errors`, a leaf every layer may use.
"""
