"""The closed-form gradients of question 6 against TensorFlow's autodiff, and `ferkeras gradcheck`."""

import numpy as np
import pytest
from conftest import run_main

from ferkeras import gradients
from ferkeras.gradients import (
    GRADIENTS,
    TOLERANCE,
    autodiff_batchnorm,
    autodiff_softmax_cross_entropy,
    batchnorm_backward,
    batchnorm_forward,
    relative_error,
    softmax_cross_entropy_gradient,
)

FIELDS = {"dl/dx_hat": "x_hat", "dl/dsigma^2": "var", "dl/dmu": "mean", "dl/dx": "x",
          "dl/dgamma": "gamma", "dl/dbeta": "beta"}


def batchnorm_case(shape, seed, offset=3.0):
    """x with per-channel means and scales, random gamma, beta and upstream gradient."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    x = rng.normal(rng.normal(0, offset, channels), rng.uniform(0.3, 3, channels), shape)
    return x, rng.normal(1, 0.5, channels), rng.normal(0, 1, channels), rng.normal(0, 1, shape)


# Dense and conv batches, the smallest batch (m = 2), 1x1 maps, one channel, a large offset.
@pytest.mark.parametrize("shape, seed, offset", [
    ((2, 1), 0, 3.0), ((7, 5), 1, 3.0), ((3, 1, 1, 4), 2, 3.0), ((4, 3, 5, 2), 3, 3.0),
    ((2, 6, 6, 1), 4, 3.0), ((16, 8), 5, 1000.0),
])
def test_batchnorm_gradients_match_keras_autodiff(shape, seed, offset):
    x, gamma, beta, dl_dy = batchnorm_case(shape, seed, offset)
    y, autodiff = autodiff_batchnorm(x, gamma, beta, dl_dy, gradients.BN_EPSILON)
    assert relative_error(batchnorm_forward(x, gamma, beta), y) < TOLERANCE
    ours = batchnorm_backward(dl_dy, x, gamma)
    for name, field in FIELDS.items():
        value = getattr(ours, field)
        assert value.shape == autodiff[name].shape, name
        assert relative_error(value, autodiff[name]) < TOLERANCE, name
    assert ours.x.shape == shape and ours.gamma.shape == ours.mean.shape == (shape[-1],)


def test_a_wrong_formula_is_caught_and_the_references_slip_is_not_a_value_error():
    x, gamma, beta, dl_dy = batchnorm_case((6, 3, 3, 4), seed=7)
    _, autodiff = autodiff_batchnorm(x, gamma, beta, dl_dy, gradients.BN_EPSILON)
    ours = batchnorm_backward(dl_dy, x, gamma)
    # dl/dx without its dl/dmu / m term: the check must see it.
    assert relative_error(ours.x - ours.mean / x[..., 0].size, autodiff["dl/dx"]) > 1e-3
    # The reference's dl/dmu has +2/m where dsigma^2/dmu has -2/m, on sum(x - mu): that sum is 0
    # at the batch mean, so its value is still right, as the report says.
    axes, m = (0, 1, 2), x.size // x.shape[-1]
    first_term = (dl_dy * gamma).sum(axis=axes) * -1 / np.sqrt(x.var(axis=axes) + gradients.BN_EPSILON)
    reference = first_term + ours.var * 2 * (x - x.mean(axis=axes)).sum(axis=axes) / m
    assert relative_error(reference, autodiff["dl/dmu"]) < TOLERANCE


@pytest.mark.parametrize("seed, smooth, scale", [(0, 0.0, 3.0), (1, 0.1, 3.0), (2, 0.0, 300.0)])
def test_softmax_cross_entropy_gradient_is_y_hat_minus_y(seed, smooth, scale):
    rng = np.random.default_rng(seed)
    logits, labels = gradients.random_softmax_case(rng, smooth)
    logits = logits * scale / 3  # 300: saturated softmax, where a naive exp would overflow
    ours = softmax_cross_entropy_gradient(logits, labels)
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours.sum(axis=1), 0, atol=1e-12)  # rows of y_hat and y both sum to 1
    assert relative_error(ours, autodiff_softmax_cross_entropy(logits, labels)) < TOLERANCE


def test_gradcheck_covers_every_gradient_on_both_kinds_of_batch():
    result = gradients.gradcheck(trials=12, seed=3)
    assert list(result.errors) == list(GRADIENTS) and result.trials == 12
    assert result.passed and max(result.errors.values()) < TOLERANCE
    assert {len(shape) for shape in result.shapes} == {2, 4}
    assert all(shape[0] >= 2 for shape in result.shapes)  # a batch of one has no variance


def test_relative_error_is_on_the_scale_of_the_gradient():
    assert relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0
    assert relative_error(np.array([1.0, 2.1]), np.array([1.0, 2.0])) == pytest.approx(0.05)
    with pytest.raises(ValueError, match=r"shapes differ: \(2,\) against \(3,\)"):
        relative_error(np.zeros(2), np.zeros(3))


def test_gradcheck_command_prints_each_error(monkeypatch, capsys):
    code, out, err = run_main(["gradcheck", "--trials", "4", "--seed", "1"], monkeypatch, capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[-1] == "All gradients agree."
    for name in GRADIENTS:
        (row,) = [line for line in lines if line.strip().startswith(name + " ")]
        error = float(row.split()[-2])
        assert error < TOLERANCE and row.endswith("ok")


def test_gradcheck_rejects_zero_trials(monkeypatch, capsys):
    code, out, err = run_main(["gradcheck", "--trials", "0"], monkeypatch, capsys)
    assert code == 2 and err == "Error: --trials 0: must be at least 1\n"


def test_gradcheck_command_exits_1_when_an_error_is_over_the_bar(monkeypatch, capsys):
    monkeypatch.setattr(gradients, "TOLERANCE", 1e-30)  # float64 round-off is above this
    code, out, err = run_main(["gradcheck", "--trials", "2"], monkeypatch, capsys)
    assert code == 1 and "FAILED" in out and out.strip().endswith("Some gradients disagree.")
