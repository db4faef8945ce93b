"""Bad input raises errors that name the problem and the fix."""

import jax
import jax.numpy as jnp
import pytest

import pclib
from pclib import theory
from conftest import random_net


def test_wrong_weight_shape_names_layer_and_shapes():
    params, x, y = random_net(0, [4, 6, 5, 3])
    params[1]["W"] = jnp.zeros((5, 7))
    with pytest.raises(ValueError, match=r"layer 2: W has shape \(5, 7\).*layer 1 has 6 units.*\(5, 6\)"):
        pclib.forward(params, x)


def test_wrong_bias_shape():
    params, x, _ = random_net(0, [4, 6, 3])
    params[0]["b"] = jnp.zeros(5)
    with pytest.raises(ValueError, match=r"layer 1: b has shape \(5,\).*\(6,\)"):
        pclib.infer(params, x)


@pytest.mark.parametrize("bad, pattern", [(jnp.zeros((8, 5)), r"x has 5 features.*input layer has 4"),
                                          (jnp.zeros(4), r"x must be 2-D.*x\[None, :\]")])
def test_wrong_data_shape(bad, pattern):
    params, _, _ = random_net(0, [4, 6, 3])
    with pytest.raises(ValueError, match=pattern):
        pclib.infer(params, bad)


def test_wrong_target_shape_and_batch_mismatch():
    params, x, y = random_net(0, [4, 6, 3], n=8)
    with pytest.raises(ValueError, match=r"y has 2 features.*output layer has 3"):
        pclib.infer(params, x, y[:, :2])
    with pytest.raises(ValueError, match="same number of samples"):
        pclib.mse_loss(params, x, y[:5])


def test_unknown_activation_lists_valid_ones():
    params, x, _ = random_net(0, [4, 6, 3])
    for call in (lambda: pclib.forward(params, x, act="sigmoid"),
                 lambda: pclib.init_mlp(jax.random.key(0), [2, 3], act="gelu")):
        with pytest.raises(ValueError, match=r"unknown activation.*'linear', 'tanh', 'relu'"):
            call()


def test_callable_activation_is_accepted():
    params, x, _ = random_net(0, [4, 6, 3])
    out = pclib.forward(params, x, act=jax.nn.sigmoid)[1]
    assert float(out.min()) > 0 and float(out.max()) < 1


def test_too_large_dt_raises_with_advice():
    params, x, y = random_net(0, [6, 16, 16, 4], act="linear")
    lam_max = float(jnp.linalg.eigvalsh(theory.linear_activity_hessian(params)).max())
    with pytest.raises(pclib.InferenceDivergedError, match=r"too large.*smaller dt"):
        pclib.infer(params, x, y, act="linear", steps=50, dt=2.5 / lam_max)  # Euler unstable beyond 2/lambda
    pclib.infer(params, x, y, act="linear", steps=50, dt=1.0 / lam_max)  # stable: no error


def test_nan_raises():
    params, x, y = random_net(0, [4, 6, 3])
    params[0]["W"] = params[0]["W"].at[0, 0].set(jnp.nan)
    with pytest.raises(pclib.InferenceDivergedError, match="nan.*smaller dt"):
        pclib.infer(params, x, y, steps=3, dt=0.1)


def test_training_with_diverging_inference_raises():
    params, x, y = random_net(0, [6, 16, 16, 4], act="linear", n=32)
    with pytest.raises(pclib.InferenceDivergedError):
        pclib.train(params, x, y, act="linear", steps=30, dt=5.0, batch_size=16, progress=False)


@pytest.mark.parametrize("kw, pattern", [({"steps": -1}, "steps"), ({"dt": 0.0}, "dt must be positive"),
                                         ({"init": "random"}, "unknown init.*'ffwd'"),
                                         ({"init": "normal"}, "pass key"),
                                         ({"precisions": [1.0, 2.0, 3.0]}, r"one scalar per layer, shape \(2,\)")])
def test_bad_inference_options(kw, pattern):
    params, x, y = random_net(0, [4, 6, 3])
    with pytest.raises(ValueError, match=pattern):
        pclib.infer(params, x, y, **kw)


def test_bad_params_container():
    with pytest.raises(ValueError, match="init_mlp"):
        pclib.forward({"W": jnp.zeros((2, 2))}, jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="unknown method"):
        pclib.make_step(None, method="tp")
