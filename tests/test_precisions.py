"""Non-unit precisions and clamping, checked against quantities computed without the code under test.

Unit precisions hide a whole class of defects (``pi`` where ``sqrt(pi)`` belongs, a precision applied to
the wrong layer, a square dropped), because every power of 1 is 1. Here every closed form is run with
random precisions and compared with ``jax.hessian`` / ``jax.grad`` of the energy with the same precisions,
or with plain Euler inference. The clamping tests write the set of free layers out by hand.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclib
from pclib import theory
from conftest import random_net


def random_precisions(seed, n_layers):
    """Precisions spread over two decades, none equal to one."""
    u = jax.random.uniform(jax.random.key(1000 + seed), (n_layers,), minval=-1.0, maxval=1.0)
    return 10.0 ** u + 0.05


def sample_energy(params, x_i, y_i, hidden, widths, *, act, pi):
    """One sample's energy F_i as a function of its flattened hidden activities (pclib.energy with N = 1)."""
    parts = jnp.split(hidden, np.cumsum(widths)[:-1])
    return pclib.energy(params, [x_i[None]] + [p[None] for p in parts] + [y_i[None]], act=act, precisions=pi)


# --- the Fisher information and the trust-region quantities ------------------------------------------


@pytest.mark.parametrize("seed,act", [(s, a) for s in range(4) for a in ("linear", "tanh")])
def test_fisher_with_precisions_is_the_energy_hessian_at_feedforward_values(seed, act):
    widths = [3, 5, 4, 2]
    params, x, y = random_net(seed, widths, act=act, n=3)
    pi = random_precisions(seed, 3)
    I = theory.fisher_information(params, x, act=act, precisions=pi)
    g = theory.activity_gradient(params, x, y, act=act, precisions=pi)
    ff = pclib.forward(params, x, act=act)
    for i in range(3):
        z = jnp.concatenate([ff[1][i], ff[2][i]])
        f = lambda h: sample_energy(params, x[i], y[i], h, widths[1:-1], act=act, pi=pi)
        np.testing.assert_allclose(I[i], jax.hessian(f)(z), atol=1e-10)
        np.testing.assert_allclose(g[i], jax.grad(f)(z), atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_natural_gradient_step_with_precisions_is_the_linear_equilibrium_move(seed):
    """For linear nets the quadratic model is exact: its minimiser is z* - z_hat, with z* found by Euler
    inference with the same precisions (not by the closed form that shares code with the Fisher)."""
    params, x, y = random_net(seed, [4, 6, 5, 3], act="linear", n=8)
    pi = random_precisions(seed, 3)
    z_star = _euler_equilibrium(params, x, y, pi)
    ff = pclib.forward(params, x, act="linear")
    dz = theory.natural_gradient_step(params, x, y, act="linear", precisions=pi)
    assert float(theory.relative_error(dz, [s - f for s, f in zip(z_star[1:-1], ff[1:-1])])) < 1e-8
    f_star = pclib.energy(params, z_star, act="linear", precisions=pi)
    assert abs(float(theory.trust_region_energy(params, x, y, act="linear", precisions=pi)) - float(f_star)) < 1e-9
    d = theory.trust_region_decomposition(params, x, y, act="linear", precisions=pi)
    pc = pclib.pc_grads(params, z_star, act="linear", precisions=pi)
    assert float(theory.relative_error(d["approx"], pc)) < 1e-7
    bp = jax.tree_util.tree_map(lambda g: pi[-1] * g, pclib.bp_grads(params, x, y, act="linear"))
    assert float(theory.relative_error(d["bp"], bp)) < 1e-12


# --- linear closed forms --------------------------------------------------------------------------------


def _euler_equilibrium(params, x, y, pi):
    """Plain Euler inference run to a 1e-12 contraction, its step from the largest curvature of jax.hessian."""
    widths = [p["W"].shape[0] for p in params[:-1]]
    H = jax.hessian(lambda h: sample_energy(params, x[0], y[0], h, widths, act="linear", pi=pi))(jnp.zeros(sum(widths)))
    lam = np.linalg.eigvalsh(np.asarray(H))
    dt = 1.0 / lam[-1]
    steps = int(np.ceil(np.log(1e-12) / np.log(1.0 - dt * lam[0])))
    return pclib.infer(params, x, y, act="linear", steps=steps, dt=dt, precisions=pi).activities


@pytest.mark.parametrize("seed", range(4))
def test_linear_activity_hessian_with_precisions_is_jax_hessian(seed):
    widths = [4, 6, 5, 7, 3]
    params, x, y = random_net(seed, widths, act="linear")
    pi = random_precisions(seed, 4)
    Hn = jax.hessian(lambda h: sample_energy(params, x[0], y[0], h, widths[1:-1], act="linear", pi=pi))(jnp.zeros(18))
    np.testing.assert_allclose(theory.linear_activity_hessian(params, precisions=pi), Hn, atol=1e-12)


@pytest.mark.parametrize("seed,hidden", [(s, h) for s in range(3) for h in ([5], [6, 4], [5, 4, 6])])
def test_equilibrated_energy_with_precisions_equals_energy_after_inference(seed, hidden):
    """Thm 1 of Innocenti et al. (2024) with precisions: the closed form 1/2 r^T S^-1 r against the
    energy at the end of Euler inference."""
    params, x, y = random_net(seed, [4] + hidden + [3], act="linear", n=8)
    pi = random_precisions(seed, len(hidden) + 1)
    z = _euler_equilibrium(params, x, y, pi)
    expected = float(pclib.energy(params, z, act="linear", precisions=pi))
    assert abs(float(theory.equilibrated_energy(params, x, y, precisions=pi)) - expected) < 1e-9 * max(1.0, expected)
    assert float(theory.relative_error(theory.linear_equilibrium(params, x, y, precisions=pi)[1:-1], z[1:-1])) < 1e-8


def test_a_precision_on_the_wrong_layer_would_be_caught():
    """The check above can fail: reversing the precisions changes F* by far more than its tolerance."""
    params, x, y = random_net(0, [4, 5, 6, 3], act="linear", n=8)
    pi = random_precisions(0, 3)
    a = float(theory.equilibrated_energy(params, x, y, precisions=pi))
    b = float(theory.equilibrated_energy(params, x, y, precisions=pi[::-1]))
    assert abs(a - b) > 1e-3 * abs(a)


# --- clamping --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clamp_input,with_y,free", [
    (True, True, (1, 2)),
    (True, False, (1, 2, 3)),
    (False, True, (0, 1, 2)),
    (False, False, (0, 1, 2, 3)),
])
@pytest.mark.parametrize("init", ["zeros", "normal"])
def test_clamped_layers_stay_exactly_at_x_and_y(clamp_input, with_y, free, init):
    """In a 3-layer net, inference moves exactly the layers listed in ``free`` (written out here) and leaves
    the clamped ones bit-for-bit equal to x and y. (Not from the feedforward pass: with the output free it
    is already an equilibrium, where no layer moves.)"""
    params, x, y = random_net(3, [3, 5, 4, 2], act="tanh", n=6)
    y_shifted = y + 0.5  # far from the feedforward output, so a free output would move
    key = jax.random.key(7)
    target = y_shifted if with_y else None
    start = pclib.inference.initial_activities(params, x, target, act="tanh", init=init, key=key)
    res = pclib.infer(params, x, target, act="tanh", steps=30, dt=0.1, init=init, key=key, clamp_input=clamp_input)
    zs = res.activities
    for l in range(4):
        moved = float(jnp.max(jnp.abs(zs[l] - start[l])))
        if l in free:
            assert moved > 1e-4, f"layer {l} should be free but did not move"
        else:
            assert moved == 0.0, f"layer {l} should be clamped but moved by {moved}"
    if clamp_input:
        assert np.array_equal(np.asarray(zs[0]), np.asarray(x))
    if with_y:
        assert np.array_equal(np.asarray(zs[-1]), np.asarray(y_shifted))
