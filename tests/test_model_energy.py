"""The network, the energy and the loss against direct, hand-written formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pclib
from conftest import random_net


@pytest.mark.parametrize("act", ["linear", "tanh", "relu"])
def test_forward_matches_manual(act):
    params, x, _ = random_net(0, [5, 7, 6, 3], act=act)
    f = {"linear": lambda a: a, "tanh": np.tanh, "relu": lambda a: np.maximum(a, 0)}[act]
    z = np.asarray(x)
    manual = [z]
    for l, layer in enumerate(params):
        a = z @ np.asarray(layer["W"]).T + np.asarray(layer["b"])
        z = f(a) if l < len(params) - 1 else a  # out_act defaults to linear
        manual.append(z)
    for got, want in zip(pclib.forward(params, x, act=act), manual):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_init_shapes_scale_and_bias():
    params = pclib.init_mlp(jax.random.key(0), [300, 200, 10], scale=5e-3, bias=False)
    assert [p["W"].shape for p in params] == [(200, 300), (10, 200)]
    assert all("b" not in p for p in params)
    assert abs(float(jnp.std(params[0]["W"])) - 5e-3) < 2e-4
    default = pclib.init_mlp(jax.random.key(0), [400, 400, 10])
    assert abs(float(jnp.std(default[0]["W"])) - 1 / 20) < 2e-3  # 1/sqrt(fan_in)
    relu = pclib.init_mlp(jax.random.key(0), [400, 400, 10], act="relu")
    assert abs(float(jnp.std(relu[0]["W"])) - np.sqrt(2) / 20) < 3e-3


@pytest.mark.parametrize("seed", range(5))
def test_energy_matches_formula_and_decomposes(seed):
    act = ["tanh", "relu", "linear"][seed % 3]
    params, x, y = random_net(seed, [4, 6, 5, 3], act=act)
    key = jax.random.key(100 + seed)
    zs = [x] + [jax.random.normal(k, (x.shape[0], p["W"].shape[0])) for k, p in zip(jax.random.split(key, 3), params)]
    pi = jnp.array([0.5, 2.0, 3.0])
    fs = pclib.model.layer_activations(3, act=act, out_act="linear")
    manual = 0.0
    for l, (p, f) in enumerate(zip(params, fs)):
        eps = zs[l + 1] - f(zs[l] @ p["W"].T + p["b"])
        manual += 0.5 * pi[l] * jnp.sum(eps**2) / x.shape[0]
    F = pclib.energy(params, zs, act=act, precisions=pi)
    np.testing.assert_allclose(F, manual, rtol=1e-12)
    out, resid = pclib.energy_decomposition(params, zs, act=act, precisions=pi)
    np.testing.assert_allclose(out + resid, F, rtol=1e-12)
    np.testing.assert_allclose(pclib.sample_energies(params, zs, act=act, precisions=pi).mean(), F, rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_energy_at_feedforward_pass_is_the_loss(seed):
    """With the output clamped to y and every hidden layer at its feedforward value, F = L and Ẽ = 0."""
    params, x, y = random_net(seed, [6, 8, 8, 4])
    zs = pclib.forward(params, x)
    zs[-1] = y
    out, resid = pclib.energy_decomposition(params, zs)
    np.testing.assert_allclose(out, pclib.mse_loss(params, x, y), rtol=1e-12)
    assert float(resid) == 0.0


def test_float32_stays_float32():
    params = pclib.init_mlp(jax.random.key(0), [4, 8, 3], dtype=jnp.float32)
    x = jnp.ones((5, 4), jnp.float32)
    y = jnp.zeros((5, 3), jnp.float32)
    res = pclib.infer(params, x, y, steps=5, dt=0.1)
    assert all(z.dtype == jnp.float32 for z in res.activities)
    assert res.energies.dtype == jnp.float32
