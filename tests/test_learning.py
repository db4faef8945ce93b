"""The learning rule and the training loops."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pclib
from pclib import data, theory
from conftest import random_net


@pytest.mark.parametrize("seed", range(4))
def test_pc_grads_are_the_local_hebbian_rule(seed):
    """dF/dW_l = -(1/N) pi_l (eps_l * f'(a_l))^T z_{l-1}: only the error of layer l and the activity below."""
    act = ["tanh", "relu", "linear", "tanh"][seed]
    params, x, y = random_net(seed, [5, 7, 6, 3], act=act)
    pi = jnp.array([0.5, 1.0, 2.0])
    zs = pclib.infer(params, x, y, act=act, steps=10, dt=0.1, precisions=pi).activities
    eps = pclib.errors(params, zs, act=act)
    g = pclib.pc_grads(params, zs, act=act, precisions=pi)
    fprime = {"tanh": lambda a: 1 - jnp.tanh(a) ** 2, "relu": lambda a: (a > 0) * 1.0, "linear": jnp.ones_like}
    for l, p in enumerate(params):
        a = zs[l] @ p["W"].T + p["b"]
        d = fprime[act](a) if l < len(params) - 1 else jnp.ones_like(a)
        delta = pi[l] * eps[l] * d
        np.testing.assert_allclose(g[l]["W"], -delta.T @ zs[l] / x.shape[0], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(g[l]["b"], -delta.mean(0), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("seed", range(3))
def test_pc_grads_at_feedforward_pass_equal_bp_for_last_layer(seed):
    """Before inference (zero steps) only the output error is non-zero: PC's last-layer gradient is BP's
    and the other layers get none."""
    params, x, y = random_net(seed, [5, 7, 6, 3])
    zs = pclib.infer(params, x, y, steps=0).activities
    g, gb = pclib.pc_grads(params, zs), pclib.bp_grads(params, x, y)
    np.testing.assert_allclose(g[-1]["W"], gb[-1]["W"], rtol=1e-12)
    assert all(float(jnp.abs(gl["W"]).max()) == 0.0 for gl in g[:-1])


def test_bp_grads_match_the_backprop_recursion():
    params, x, y = random_net(2, [5, 7, 6, 3])
    ff = pclib.forward(params, x)
    delta = theory.backprop_errors(params, ff, y - ff[-1])
    gb = pclib.bp_grads(params, x, y)
    a = ff[1] @ params[1]["W"].T + params[1]["b"]
    np.testing.assert_allclose(gb[1]["W"], -(delta[1] * (1 - jnp.tanh(a) ** 2)).T @ ff[1] / x.shape[0], rtol=1e-10)


@pytest.mark.parametrize("method", ["pc", "bp"])
def test_training_lowers_the_loss(method):
    d = data.gaussian(n=256, d_in=8, d_out=3, seed=0)
    params = pclib.init_mlp(jax.random.key(0), [8, 16, 3])
    before = float(pclib.mse_loss(params, d.x_train, d.y_train))
    params, hist = pclib.train(params, d.x_train, d.y_train, method=method, optimizer=optax.sgd(0.05),
                               epochs=5, batch_size=32, steps=20, dt=0.1, progress=False)
    after = float(pclib.mse_loss(params, d.x_train, d.y_train))
    assert len(hist["loss"]) == 5 * (256 // 32)
    assert after < 0.5 * before


def test_step_compiles_once_for_new_data():
    """Only new data (same shapes): the compiled step is reused, not retraced."""
    params = pclib.init_mlp(jax.random.key(0), [4, 8, 2])
    opt = optax.sgd(0.1)
    step = pclib.make_step(opt, method="pc", steps=5, dt=0.1)
    state = opt.init(params)
    for i in range(4):
        x = jax.random.normal(jax.random.key(i), (8, 4))
        params, state, _ = step(params, state, x, jnp.ones((8, 2)))
    assert step._cache_size() == 1
