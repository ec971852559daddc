"""Inspection of one expert version: AGOP, neural collapse, confusion, attributions, similarity, opacity, report.

The numerics (`agop`, `collapse`, `confusion`, `attribution`, `similarity`) are pure
functions of tensors with no I/O. The report reads versions through `execute`/`registry`
and must not import mlflow itself, nor cli.
"""
