r"""The two-weight toy chain of Innocenti, Singh & Buckley (2023), and its loss and energy over the weight plane.

 The toy network
$f(x) = w_2 w_1 x$ is a chain input $\to$ one linear hidden unit $\to$ output. Its loss has a
saddle at the origin and two valleys of solutions $w_1 w_2 x = y$. With input and target
clamped, one sample's energy is

$$F(z) = \tfrac12 (z - w_1 x)^2 + \tfrac12 (y - w_2 z)^2 ,$$

a quadratic in the hidden activity $z$ with minimiser $z^* = (w_1 x + w_2 y)/(1 + w_2^2)$, so the
*equilibrated energy* is

$$F^*(w_1, w_2) = \frac{(y - w_2 w_1 x)^2}{2\,(1 + w_2^2)} = \frac{\mathcal L(w_1, w_2)}{1 + w_2^2}$$

per sample (averaged over samples for a batch), the one-hidden-unit case of
:func:`pclib.theory.equilibrated_energy`.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..energy import energy
from ..inference import infer
from ..model import Array, Params


def _toy_data(x: Array, y: Array) -> tuple[Array, Array]:
    x, y = jnp.asarray(x, dtype=jnp.result_type(float)), jnp.asarray(y, dtype=jnp.result_type(float))
    x, y = jnp.reshape(x, (-1,)), jnp.reshape(y, (-1,))
    if x.shape != y.shape or x.size == 0:
        raise ValueError(
            f"the toy network f(x) = w2*w1*x needs scalar samples: x and y must hold the same number (>= 1) "
            f"of numbers; got x with {x.size} and y with {y.size}. Pass e.g. x=[1.0], y=[1.0]."
        )
    return x, y


def toy_params(w1: Array, w2: Array) -> Params:
    r"""The toy network $f(x) = w_2 w_1 x$ as ``pclib`` params: widths 1-1-1, no biases."""
    w1, w2 = jnp.asarray(w1, dtype=jnp.result_type(float)), jnp.asarray(w2, dtype=jnp.result_type(float))
    return [{"W": jnp.reshape(w1, (1, 1))}, {"W": jnp.reshape(w2, (1, 1))}]


def toy_loss(w: Array, x: Array, y: Array) -> Array:
    r"""$\mathcal L(w) = \frac1N\sum_i \frac12 (y_i - w_2 w_1 x_i)^2$ for ``w = (w1, w2)``."""
    x, y = _toy_data(x, y)
    return 0.5 * jnp.mean((y - w[1] * w[0] * x) ** 2)


def toy_equilibrated_energy(w: Array, x: Array, y: Array) -> Array:
    r"""The closed-form equilibrated energy $F^*(w) = \mathcal L(w) / (1 + w_2^2)$ of the toy chain.

    Derived in the module docstring; equal to :func:`pclib.energy` at the inference equilibrium.
    """
    return toy_loss(w, x, y) / (1.0 + w[1] ** 2)


def toy_energy_after(w: Array, x: Array, y: Array, *, steps: int, dt: float) -> Array:
    r"""The toy network's energy after ``steps`` Euler steps of inference from the feedforward pass.

    ``steps=0`` gives the loss (the feedforward pass has zero hidden error); many steps give $F^*$.
    Uses :func:`pclib.infer` (works under ``jax.vmap``).
    """
    x, y = _toy_data(x, y)
    params = toy_params(w[0], w[1])
    res = infer(params, x[:, None], y[:, None], act="linear", out_act="linear", steps=steps, dt=dt, check=False)
    return energy(params, res.activities, act="linear", out_act="linear")


def grid_2d(fn: Callable[[Array], Array], w1s: Array, w2s: Array) -> Array:
    r"""Evaluate ``fn(w)`` for ``w = (w1, w2)`` on the grid ``w1s`` $\times$ ``w2s`` (vectorised).

    Returns an array of shape ``(len(w2s), len(w1s)) + fn's output shape``, indexed ``[j, i]`` for
    ``(w1s[i], w2s[j])``, the layout ``matplotlib``'s ``contour(w1s, w2s, Z)`` expects.
    """
    w1s, w2s = jnp.asarray(w1s), jnp.asarray(w2s)
    if w1s.ndim != 1 or w2s.ndim != 1 or w1s.size == 0 or w2s.size == 0:
        raise ValueError(
            f"w1s and w2s must be non-empty 1-D arrays of grid values (e.g. np.linspace(-2, 2, 41)); "
            f"got shapes {tuple(w1s.shape)} and {tuple(w2s.shape)}"
        )
    W1, W2 = jnp.meshgrid(w1s, w2s)
    ws = jnp.stack([W1.ravel(), W2.ravel()], axis=1)
    out = jax.vmap(fn)(ws)
    return jnp.reshape(out, W1.shape + out.shape[1:])


def loss_grid(x: Array, y: Array, w1s: Array, w2s: Array) -> Array:
    r"""The toy loss $\mathcal L(w_1, w_2)$ on a grid (layout of :func:`grid_2d`)."""
    return grid_2d(lambda w: toy_loss(w, x, y), w1s, w2s)


def energy_grid(
    x: Array, y: Array, w1s: Array, w2s: Array, *, steps: int | None = None, dt: float = 0.1
) -> Array:
    r"""The toy energy on a grid: after ``steps`` inference steps, or at equilibrium ($F^*$) if ``steps=None``."""
    if steps is None:
        return grid_2d(lambda w: toy_equilibrated_energy(w, x, y), w1s, w2s)
    return grid_2d(lambda w: toy_energy_after(w, x, y, steps=steps, dt=dt), w1s, w2s)


def gradient_grid(fn: Callable[[Array], Array], w1s: Array, w2s: Array) -> Array:
    r"""$\nabla_w$ ``fn`` on a grid, shape ``(len(w2s), len(w1s), 2)``, for quiver/stream plots."""
    return grid_2d(jax.grad(fn), w1s, w2s)


def gd_path(fn: Callable[[Array], Array], w0: Array, *, lr: float, steps: int) -> Array:
    r"""Gradient descent $w \leftarrow w - \eta \nabla$ ``fn`` from ``w0``: shape ``(steps + 1, len(w0))``."""
    if not float(lr) > 0 or int(steps) < 0:
        raise ValueError(f"gd_path needs lr > 0 and steps >= 0; got lr={lr!r}, steps={steps!r}")
    g = jax.grad(fn)

    def step(w, _):
        w = w - lr * g(w)
        return w, w

    w0 = jnp.asarray(w0, dtype=jnp.result_type(float))
    _, ws = jax.lax.scan(step, w0, None, length=int(steps))
    return jnp.concatenate([w0[None], ws])


def escape_steps(
    fn: Callable[[Array], Array], inits: Array, *, lr: float, radius: float, max_steps: int
) -> np.ndarray:
    r"""For each start in ``inits`` (shape ``(M, 2)``), the first GD step at which $\lVert w\rVert \ge$ ``radius``.

    Starts that never leave the ball within ``max_steps`` get ``max_steps + 1``.
    """
    inits = jnp.asarray(inits, dtype=jnp.result_type(float))
    if inits.ndim != 2:
        raise ValueError(f"inits must have shape (M, n_weights); got {tuple(inits.shape)}")
    paths = jax.vmap(lambda w0: gd_path(fn, w0, lr=lr, steps=max_steps))(inits)
    outside = np.asarray(jnp.linalg.norm(paths, axis=-1) >= radius)
    return np.where(outside.any(axis=1), outside.argmax(axis=1), max_steps + 1)
