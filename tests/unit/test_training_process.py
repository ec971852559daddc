"""How `run` raises again an error its training process met: the same class (ours, or the
model's own by name), inside the same located phase; our own failures there as one TrainingError."""
import contextlib

import pytest

from moe_pipeline.errors import DataError, RegistryError, TrainingError
from moe_pipeline.execute.training_process import raise_as_there


def _located(seen: list):
    @contextlib.contextmanager
    def located(phase: str):
        seen.append(phase)
        try:
            yield
        except DataError as exc:
            raise DataError(f"FILE:3:5: expert 'e': {exc}") from None
        except Exception as exc:
            raise TrainingError(f"FILE:4:5: expert 'e': training raised {type(exc).__name__}: {exc}") from None
    return located


def test_an_error_of_ours_is_raised_as_its_class_inside_its_phase():
    seen = []
    with pytest.raises(DataError, match=r"^FILE:3:5: expert 'e': 2 columns, not 3$"):
        raise_as_there({"type": "DataError", "ours": True, "message": "2 columns, not 3", "phase": "target"},
                       _located(seen))
    assert seen == ["target"]


def test_the_models_own_exception_keeps_its_name():
    seen = []
    with pytest.raises(TrainingError, match=r"training raised KeyError: 'forgot a buffer'$"):
        raise_as_there({"type": "KeyError", "ours": False, "message": "'forgot a buffer'", "phase": "model"},
                       _located(seen))
    assert seen == ["model"]


def test_outside_any_phase_ours_is_raised_as_it_is_and_anything_else_is_one_training_error():
    seen = []
    with pytest.raises(RegistryError, match=r"^store gone$"):
        raise_as_there({"type": "RegistryError", "ours": True, "message": "store gone", "phase": None}, _located(seen))
    with pytest.raises(TrainingError, match=r"^the training process failed: OSError: disk full$"):
        raise_as_there({"type": "OSError", "ours": False, "message": "disk full", "phase": None}, _located(seen))
    with pytest.raises(TrainingError, match=r"failed: Exit: no such class"):  # a name that is not one of ours
        raise_as_there({"type": "Exit", "ours": True, "message": "no such class", "phase": None}, _located(seen))
    assert seen == []
