"""Use trained versions: the system as one model (export, predict, MLflow pyfunc, serving),
and explanations of one prediction through the expert graph.

Must not train, must not import mlflow or the inspection report (it uses
inspection's pure integrated gradients only) (the registry layer writes MLmodel files and registers
the system), and must not unpickle anything: loading reads safetensors and JSON whose sha256
is checked. Writes only what a command asks for (an export folder, a prediction file).
"""
