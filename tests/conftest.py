"""Tests run in float64 (closed forms are checked to 1e-6 and tighter); float32 is tested explicitly."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


def random_net(seed, widths, *, act="tanh", n=16, bias=True, scale=None):
    """A random network, input batch and target batch, all from one seed."""
    import pclib

    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    params = pclib.init_mlp(k1, widths, act=act, bias=bias, scale=scale)
    if bias:  # non-zero biases so the closed forms are tested with them
        params = [dict(l, b=0.3 * jax.random.normal(k, l["b"].shape)) for l, k in zip(params, jax.random.split(k4, len(params)))]
    x = jax.random.normal(k2, (n, widths[0]))
    y = jax.random.normal(k3, (n, widths[-1]))
    return params, x, y


@pytest.fixture
def net():
    return random_net
