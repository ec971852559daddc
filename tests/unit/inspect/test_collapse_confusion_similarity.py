import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion

from moe_pipeline.inspect.collapse import collapse_metrics, deep_nc1, nc1
from moe_pipeline.inspect.confusion import confusion_matrix, per_class, row_normalised
from moe_pipeline.inspect.similarity import churn, linear_cka, subspace_overlap
from moe_pipeline.training.models import MLP


def simplex_etf(c: int, p: int) -> torch.Tensor:
    """C unit vectors in R^p with pairwise cosine -1/(C-1): the collapsed geometry."""
    q, _ = torch.linalg.qr(torch.randn(p, c, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    m = (torch.eye(c, dtype=torch.float64) - 1.0 / c) * (c / (c - 1)) ** 0.5
    return (q @ m).T  # (C, p)


def test_perfectly_collapsed_features():
    c, p, per = 5, 12, 30
    means = simplex_etf(c, p)
    labels = torch.arange(c).repeat_interleave(per)
    features = means[labels] * 3.0
    metrics = collapse_metrics(features, labels, means, torch.zeros(c), c)
    assert metrics["nc1"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["nc2_etf_distance_means"] == pytest.approx(0.0, abs=1e-10)
    assert metrics["nc2_mean_norm_cv"] == pytest.approx(0.0, abs=1e-10)
    assert metrics["nc2_equiangularity"] == pytest.approx(0.0, abs=1e-10)
    assert metrics["nc3_self_duality"] == pytest.approx(0.0, abs=1e-10)
    assert metrics["nc4_ncc_mismatch"] == 0.0


def test_random_features_are_far_from_collapse():
    gen = torch.Generator().manual_seed(0)
    c = 5
    labels = torch.arange(c).repeat_interleave(40)
    features = torch.randn(200, 12, generator=gen)
    metrics = collapse_metrics(features, labels, torch.randn(c, 12, generator=gen), torch.zeros(c), c)
    assert metrics["nc1"] > 1.0
    assert metrics["nc2_etf_distance_means"] > 0.3
    assert metrics["nc4_ncc_mismatch"] > 0.3


def test_nc1_against_a_brute_force_loop():
    gen = torch.Generator().manual_seed(3)
    labels = torch.tensor([0] * 10 + [1] * 15 + [2] * 5)
    feats = torch.randn(30, 4, generator=gen, dtype=torch.float64) + labels[:, None] * 0.5
    means = [feats[labels == k].mean(0) for k in range(3)]
    mu_g = feats.mean(0)  # Papyan et al.: the global mean of all features (imbalanced classes here)
    sw = sum(torch.outer(feats[i] - means[labels[i]], feats[i] - means[labels[i]]) for i in range(30)) / 30
    sb = sum(torch.outer(m - mu_g, m - mu_g) for m in means) / 3
    expected = float(torch.trace(sw @ torch.linalg.pinv(sb)) / 3)
    assert nc1(feats, labels) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("width", [2, 7, 300])  # fewer, more features than classes; wider than rows
def test_nc1_in_the_span_of_the_class_means_equals_the_p_by_p_definition(width: int):
    gen = torch.Generator().manual_seed(width)
    labels = torch.tensor([0] * 12 + [1] * 9 + [2] * 6 + [3] * 3)
    feats = torch.randn(30, width, generator=gen, dtype=torch.float64) + labels[:, None] * 0.3
    means = torch.stack([feats[labels == k].mean(0) for k in range(4)])
    within = feats - means[labels]
    sw = within.T @ within / 30  # (p, p): what the definition forms
    centred = means - feats.mean(0)
    sb = centred.T @ centred / 4
    expected = float(torch.trace(sw @ torch.linalg.pinv(sb, hermitian=True)) / 4)
    assert nc1(feats, labels) == pytest.approx(expected, rel=1e-7)


def test_centring_is_at_the_global_mean_not_the_mean_of_class_means():
    labels = torch.tensor([0] * 40 + [1] * 10 + [2] * 10)
    feats = torch.randn(60, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + labels[:, None]
    means = torch.stack([feats[labels == k].mean(0) for k in range(3)])
    weight = torch.randn(3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got = collapse_metrics(feats, labels, weight, None, 3)["nc2_mean_norm_cv"]
    norms = (means - feats.mean(0)).norm(dim=1)
    assert got == pytest.approx(float(norms.std(unbiased=False) / norms.mean()), rel=1e-12)
    other = (means - means.mean(0)).norm(dim=1)
    assert abs(got - float(other.std(unbiased=False) / other.mean())) > 1e-3  # the two centrings differ here


def test_nc2_is_not_reported_for_two_classes():
    labels = torch.arange(2).repeat(20)
    feats = torch.randn(40, 5, generator=torch.Generator().manual_seed(0)) + labels[:, None] * 2.0
    metrics = collapse_metrics(feats, labels, torch.randn(2, 5), torch.zeros(2), 2)
    assert [k for k, v in metrics.items() if v is None] == [k for k in metrics if k.startswith("nc2_")]
    assert metrics["nc1"] > 0 and metrics["nc4_ncc_mismatch"] is not None


def test_deep_nc1_has_one_value_per_hidden_layer_named_by_module_path():
    model = MLP((6,), 3, hidden=(8, 5))
    values = deep_nc1(model, torch.randn(30, 6), torch.arange(3).repeat(10), 3)
    assert len(values) == 2 and all(v >= 0 for v in values.values())
    first, second = values
    assert first.startswith("body.") and "after Linear(6→8)" in first and "after Linear(8→5)" in second


def test_confusion_matrix_equals_scikit_learn():
    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 7, 500), rng.integers(0, 7, 500)
    ours = confusion_matrix(torch.from_numpy(true), torch.from_numpy(pred), 7)
    np.testing.assert_array_equal(ours.numpy(), sk_confusion(true, pred, labels=range(7)))
    np.testing.assert_allclose(row_normalised(ours).numpy(), sk_confusion(true, pred, labels=range(7), normalize="true"))


def test_per_class_precision_recall_equal_scikit_learn():
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(1)
    true, pred = rng.integers(0, 5, 300), rng.integers(0, 4, 300)  # class 4 is never predicted
    ours = per_class(confusion_matrix(torch.from_numpy(true), torch.from_numpy(pred), 5))
    p, r, f, n = precision_recall_fscore_support(true, pred, labels=range(5), zero_division=0)
    np.testing.assert_allclose([c["precision"] for c in ours], p)
    np.testing.assert_allclose([c["recall"] for c in ours], r)
    np.testing.assert_allclose([c["f1"] for c in ours], f)
    assert [c["support"] for c in ours] == n.tolist()


def test_linear_cka_through_the_gram_matrices_equals_the_feature_space_definition():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(20, 300, generator=gen, dtype=torch.float64)  # wider than its rows: the Gram path
    y = x[:, :50] @ torch.randn(50, 40, generator=gen, dtype=torch.float64) + 0.1 * torch.randn(20, 40, generator=gen,
                                                                                           dtype=torch.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = float(torch.linalg.norm(yc.T @ xc) ** 2 / (torch.linalg.norm(xc.T @ xc) * torch.linalg.norm(yc.T @ yc)))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-9)
    assert linear_cka(x[:, :5], y[:, :4]) == pytest.approx(  # the narrow path, on the same definition
        float(torch.linalg.norm((y[:, :4] - y[:, :4].mean(0)).T @ (x[:, :5] - x[:, :5].mean(0))) ** 2
              / (torch.linalg.norm((x[:, :5] - x[:, :5].mean(0)).T @ (x[:, :5] - x[:, :5].mean(0)))
                 * torch.linalg.norm((y[:, :4] - y[:, :4].mean(0)).T @ (y[:, :4] - y[:, :4].mean(0))))), rel=1e-9)


def test_linear_cka_properties():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(100, 8, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, x @ q) == pytest.approx(1.0)  # orthogonal transform
    assert linear_cka(x, 3.7 * x) == pytest.approx(1.0)  # isotropic scaling
    assert linear_cka(x, torch.randn(100, 8, generator=gen, dtype=torch.float64)) < 0.3


def test_churn_and_subspace_overlap():
    assert churn(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 3])) == 0.25
    u = torch.eye(6)[:, :2]
    assert subspace_overlap(u, u) == pytest.approx(1.0)
    assert subspace_overlap(u, torch.eye(6)[:, 2:4]) == pytest.approx(0.0)


def test_streamed_deep_nc1_equals_nc1_on_each_whole_layer():
    """Two chunked passes (chunks of 7 rows, so the last is partial) give what `nc1` gives on every
    layer's whole feature matrix, to float64 precision; a class absent from the rows is skipped alike."""
    from moe_pipeline.inspect.collapse import layer_features
    from moe_pipeline.training.models import CNN

    torch.manual_seed(3)
    model = CNN((1, 6, 6), 4, channels=(3, 5), hidden=8).double().eval()
    x = torch.randn(50, 1, 6, 6, dtype=torch.float64)
    labels = torch.randint(0, 3, (50,))  # class 3 never occurs
    streamed = deep_nc1(model, x, labels, 4, chunk=7)
    whole = {name: nc1(h, labels, 4) for name, h in layer_features(model, x).items()}
    assert len(streamed) == len(whole) == 3
    for (_, got), want in zip(streamed.items(), whole.values()):
        assert abs(got - want) <= 1e-9 * max(1.0, abs(want)), (got, want)


def test_a_sections_rows_say_the_budget_when_it_cut_the_split():
    from moe_pipeline.inspect.sections import rows_used

    assert rows_used(2000, 7000, "training", 2000) == "the first 2,000 of 7,000 training rows (this section's budget: 2,000)"
    assert rows_used(1078, 1078, "training", 2000) == "all 1,078 training rows (this section's budget: 2,000)"
    assert rows_used(1078, 1078, "training", None) == "all 1,078 training rows"
