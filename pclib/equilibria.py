r"""Inference variants that return an equilibrium: the clamped equilibrium of any network (closed form
for linear networks) and inference on a generalised energy."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .energy import as_precisions
from .inference import infer
from .model import Activation, Array, Params, check_data, check_params, forward
from .theory.linear import linear_equilibrium
from .theory.precisions import generalised_energy


def equilibrium(
    params: Params,
    x: Array,
    y: Array,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    steps: int = 2000,
    dt: float | None = None,
    init: Any = "ffwd",
) -> list[Array]:
    r"""The inference equilibrium with both ends clamped: the closed form for linear networks
    (:func:`linear_equilibrium`), otherwise ``steps`` steps of :func:`pclib.infer`.

    ``dt=None`` takes $\mathrm dt = 0.5 / \max_l (\pi_l + \pi_{l+1}\lVert W_{l+1}\rVert_2^2)$ for the iterative
    case, a bound on the largest curvature of a Gauss-Newton energy (tanh' <= 1).
    """
    if act == "linear" and out_act == "linear":
        return linear_equilibrium(params, x, y, precisions=precisions)

    pi = as_precisions(precisions, len(params), params[0]["W"].dtype)
    if dt is None:
        norms = [float(jnp.linalg.norm(p["W"], 2)) ** 2 for p in params[1:]] + [0.0]
        dt = 0.5 / max(float(pi[l]) + (float(pi[l + 1]) if l + 1 < len(params) else 0.0) * norms[l]
                       for l in range(len(params)))
    return infer(params, x, y, act=act, out_act=out_act, precisions=pi, steps=steps, dt=dt, init=init).activities


def generalised_infer(
    params: Params,
    x: Array,
    y: Array,
    *,
    h: Any,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    steps: int = 1000,
    dt: float = 0.1,
) -> list[Array]:
    r"""Inference on :func:`generalised_energy`: ``steps`` Euler steps of gradient descent on each
    sample's $F_{h,i}$ in the hidden activities, from the feedforward pass, both ends clamped.

    Returns the activities ``[x, z_1, ..., z_{L-1}, y]``; the energy is checked to have fallen.
    """

    check_params(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    zs = forward(params, x, act=act, out_act=out_act)
    n = x.shape[0]

    def total(hidden):
        return n * generalised_energy(params, [x, *hidden, y], h=h, act=act, out_act=out_act, precisions=precisions)

    @jax.jit
    def run(hidden):
        def step(hd, _):
            g = jax.grad(total)(hd)
            return [z - dt * gz for z, gz in zip(hd, g)], None
        return jax.lax.scan(step, hidden, None, length=int(steps))[0]

    hidden = run(zs[1:-1])
    f0, f1 = float(total(zs[1:-1])), float(total(hidden))
    if not f1 <= f0 + 1e-12 * abs(f0) or not jnp.isfinite(f1):
        raise FloatingPointError(
            f"generalised inference diverged: the energy went from {f0:.3g} to {f1:.3g}; use a smaller dt"
        )
    return [x, *hidden, y]
