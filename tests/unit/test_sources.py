"""Built-in sources read exactly what their libraries would give."""
import numpy as np
import torch

from moe_pipeline.data.sources import _load_digits


def test_digits_are_scikit_learns_digits_without_importing_it():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ours = _load_digits()
    np.testing.assert_array_equal(ours["label"].numpy(), bunch.target)
    expected = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    assert torch.equal(ours["image"], expected) and ours["image"].shape == (1797, 1, 8, 8)
