"""The notation page (book/notation.md): every convention it states, checked against pclib on random
networks, with expected values computed independently in NumPy."""

import numpy as np
import pytest

import pclib
from pclib import theory


def _np_forward_errors(params, zs, act):
    f = {"tanh": np.tanh, "linear": lambda a: a}[act]
    L = len(params)
    eps = []
    for l in range(1, L + 1):
        W, b = np.asarray(params[l - 1]["W"]), np.asarray(params[l - 1]["b"])
        g = f if l < L else (lambda a: a)  # output activation linear by default
        eps.append(np.asarray(zs[l]) - g(np.asarray(zs[l - 1]) @ W.T + b))
    return eps


@pytest.mark.parametrize("seed", range(2))
def test_shapes_and_layer_indexing(net, seed):
    widths = [3, 7, 5, 2]
    params, x, y = net(seed, widths, n=6)
    assert len(params) == len(widths) - 1
    for l in range(1, len(widths)):
        assert params[l - 1]["W"].shape == (widths[l], widths[l - 1])  # W_l in R^{d_l x d_{l-1}}
        assert params[l - 1]["b"].shape == (widths[l],)
    zs = pclib.forward(params, x)
    assert [z.shape for z in zs] == [(6, d) for d in widths]  # [z_0 = x, ..., z_L]
    np.testing.assert_array_equal(np.asarray(zs[0]), np.asarray(x))


@pytest.mark.parametrize("seed", range(6))
def test_energy_normalisation_and_precisions(net, seed):
    """F = (1/N) sum_i sum_l (pi_l / 2) ||eps_{l,i}||^2; Millidge et al.'s sum_i sum_l ||eps||^2 is 2N times it."""
    rng = np.random.default_rng(seed)
    widths = [4, 6, 6, 3]
    params, x, y = net(seed, widths, n=5)
    zs = [x] + [rng.normal(size=(5, d)) for d in widths[1:-1]] + [y]
    pi = rng.uniform(0.2, 3.0, size=len(params))
    eps = _np_forward_errors(params, zs, "tanh")
    expected = np.mean(sum(p / 2 * np.sum(e**2, axis=1) for p, e in zip(pi, eps)))
    got = float(pclib.energy(params, zs, precisions=pi))
    assert got == pytest.approx(expected, rel=1e-12)
    millidge = sum(np.sum(e**2) for e in eps)  # unit precisions, no 1/2, summed over samples
    assert millidge == pytest.approx(2 * len(x) * float(pclib.energy(params, zs)), rel=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_energy_equals_loss_at_the_feedforward_pass(net, seed):
    params, x, y = net(seed, [4, 8, 3], n=7)
    zs = pclib.forward(params, x)
    clamped = zs[:-1] + [y]
    loss = np.mean(0.5 * np.sum((np.asarray(y) - np.asarray(zs[-1])) ** 2, axis=1))
    assert float(pclib.energy(params, clamped)) == pytest.approx(loss, rel=1e-12)
    assert float(pclib.mse_loss(params, x, y)) == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("seed", range(2))
def test_inference_is_per_sample(net, seed):
    """Each sample descends its own F_i: a sample's trajectory does not depend on the rest of the batch."""
    params, x, y = net(seed, [4, 8, 8, 3], n=6)
    batch = pclib.infer(params, x, y, steps=40, dt=0.1).activities
    alone = pclib.infer(params, x[2:3], y[2:3], steps=40, dt=0.1).activities
    for zb, za in zip(batch, alone):
        np.testing.assert_allclose(np.asarray(zb[2:3]), np.asarray(za), atol=1e-12)


@pytest.mark.parametrize("seed,widths", [(s, w) for s in range(3) for w in ([3, 5, 2], [4, 6, 6, 3], [3, 4, 5, 4, 2])])
def test_innocenti2024_equilibrated_energy_uses_our_normalisation(net, seed, widths):
    """Deep linear nets without biases: F* = 1/(2N) sum_i r_i^T S^{-1} r_i, r_i = y_i - W_{L:1} x_i,
    S = I + sum_{l=2}^L W_{L:l} W_{L:l}^T, with the book's F (so no change of constants)."""
    params, x, y = net(seed, widths, act="linear", n=9, bias=False)
    Ws = [np.asarray(p["W"]) for p in params]
    L = len(Ws)

    def prod(k, l):  # W_{k:l} = W_k W_{k-1} ... W_l (1-based, l <= k)
        out = Ws[l - 1]
        for j in range(l + 1, k + 1):
            out = Ws[j - 1] @ out
        return out

    S = np.eye(widths[-1]) + sum(prod(L, l) @ prod(L, l).T for l in range(2, L + 1))
    r = np.asarray(y) - np.asarray(x) @ prod(L, 1).T
    expected = np.mean(np.einsum("ni,ij,nj->n", r, np.linalg.inv(S), r)) / 2
    zstar = theory.linear_equilibrium(params, x, y)
    got = float(pclib.energy(params, zstar, act="linear"))
    assert got == pytest.approx(expected, rel=1e-9)
