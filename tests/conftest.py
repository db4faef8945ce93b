"""Tests run in float64 (closed forms are checked to 1e-6 and tighter); float32 is tested explicitly."""

import contextlib

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


@contextlib.contextmanager
def count_compilations():
    """Count XLA backend compilations inside the block (``jax.monitoring``'s compile event)."""
    counter = {"n": 0}

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            counter["n"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
