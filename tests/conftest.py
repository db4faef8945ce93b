"""Tests run in float64 (closed forms are checked to 1e-6 and tighter); float32 is tested explicitly."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


def random_net(seed, widths, *, act="tanh", n=16, bias=True, scale=None):
    """A random network (biases of std 0.3, so the closed forms are tested with them), inputs and targets."""
    import pclib

    return pclib.random_problem(seed, widths, act=act, n=n, bias=bias, bias_scale=0.3, scale=scale)


@pytest.fixture
def net():
    return random_net
