"""Turning a plan into work: the read-only `View` (status, plan, impact); the write path, a
`Run` composed of steps with one job each (recovery, new_version, cutoff_check, publish); and
the runners that drive the steps (sequential `runner`, `ray_runner`).

Must not import mlflow directly (it goes through `registry`), nor inspect or cli; never
reads argv or prints. Importing it loads no mlflow.
"""
