"""Turning a plan into work: the read-only `View` (status, plan, impact), the write path
`Workspace` (train, check, record), and the runner.

Must not import mlflow directly (it goes through `registry`), nor inspect or cli; never
reads argv or prints. Importing it loads no mlflow.
"""
