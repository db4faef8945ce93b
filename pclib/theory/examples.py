r"""Small hand-built networks whose behaviour a reader can follow by hand."""

from __future__ import annotations

import jax.numpy as jnp

from ..model import Array, Params


def leaky_output_network(*, gain: float = 3.0, coupling: float = 2.0) -> tuple[Params, Array, Array]:
    r"""A linear PCN $1 \to 1 \to 2 \to 2$ in which inference from the feedforward pass lowers the loss, then raises it.

    $W_1 = 1$, $W_2 = (c, c)^\top$ (one lower cause feeds both top hidden units), $W_3 = \mathrm{diag}(g, 1)$,
    no biases, input $x = 0$ (so the feedforward pass is $0$) and target $y = (1, 0)$: the output error
    sits in the first unit only. Inference first moves top unit 1 to cancel it (fast, with gain $g$);
    that unit's own error drags the shared cause $z_1$, whose prediction moves *both* top units, so the
    second output, which had no error, acquires one. The loss falls, bottoms out, and rises towards its
    equilibrium value (chapter 1). Returns ``(params, x, y)`` with one sample.
    """
    params = [
        {"W": jnp.array([[1.0]]), "b": jnp.zeros(1)},
        {"W": jnp.array([[coupling], [coupling]]), "b": jnp.zeros(2)},
        {"W": jnp.diag(jnp.array([gain, 1.0])), "b": jnp.zeros(2)},
    ]
    return params, jnp.zeros((1, 1)), jnp.array([[1.0, 0.0]])
