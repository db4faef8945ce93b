r"""Inference: gradient descent of the energy on the free activities.

Each sample $i$ descends its own energy $F_i$ (the energy without the $1/N$),

$$z_{l,i} \leftarrow z_{l,i} - \mathrm{d}t\, \frac{\partial F_i}{\partial z_{l,i}}
= z_{l,i} - \mathrm{d}t\,\Big(\pi_l \varepsilon_{l,i}
 - \pi_{l+1} J_{l+1,i}^\top \varepsilon_{l+1,i}\Big),$$

with $J_{l+1} = \partial \mu_{l+1} / \partial z_l$ the Jacobian of the prediction of the
layer above. This is the forward-Euler discretisation of Millidge et al. (2022), Eq. 1.
Because each sample follows its own energy, the dynamics do not depend on the batch size. The whole loop is one compiled ``lax.scan``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from .energy import as_precisions, sample_energies
from .model import Activation, Array, Params, check_data, check_params, forward, layer_activations, preactivation

INITS = ("ffwd", "zeros", "normal")


class InferenceDivergedError(FloatingPointError):
    """Inference produced NaN/inf or an energy that grew: the step size ``dt`` is too large."""


class Inference(NamedTuple):
    r"""Result of :func:`infer`.

    Attributes
    ----------
    activities : ``[z_0, ..., z_L]`` after the last step, like :func:`pclib.forward`'s output.
    energies : shape ``(steps + 1,)``; ``energies[k]`` is $\mathcal F$ after ``k`` steps.
    trajectory : with ``record=True``, one array of shape ``(steps + 1, N, d_l)`` per layer.
    """

    activities: list
    energies: Array
    trajectory: Union[list, None] = None


def initial_activities(
    params: Params,
    x: Array,
    y: Array | None = None,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    init: Union[str, Sequence[Array]] = "ffwd",
    key: Array | None = None,
) -> list[Array]:
    """Activities at the start of inference; the clamped ends are set to ``x`` and ``y``.

    ``init`` is ``"ffwd"`` (the feedforward pass), ``"zeros"``, ``"normal"`` (standard normal,
    needs ``key``) or an explicit list of activities.
    """
    if isinstance(init, str):
        if init == "ffwd":
            zs = forward(params, x, act=act, out_act=out_act)
        elif init == "zeros":
            zs = [x] + [jnp.zeros((x.shape[0], layer["W"].shape[0]), x.dtype) for layer in params]
        elif init == "normal":
            if key is None:
                raise ValueError("init='normal' draws random activities: pass key=jax.random.key(seed)")
            keys = jax.random.split(key, len(params))
            zs = [x] + [jax.random.normal(k, (x.shape[0], layer["W"].shape[0]), x.dtype) for k, layer in zip(keys, params)]
        else:
            raise ValueError(f"unknown init {init!r}: use one of {', '.join(map(repr, INITS))} or a list of activities")
    else:
        zs = [jnp.asarray(z) for z in init]
        if len(zs) != len(params) + 1:
            raise ValueError(f"init lists {len(zs)} activities; a {len(params)}-layer network needs {len(params) + 1}")
    zs = list(zs)
    if y is not None:
        zs[-1] = jnp.asarray(y, zs[-1].dtype)
    return zs


def free_layers(n_layers: int, *, clamp_input: bool, clamp_output: bool) -> tuple[int, ...]:
    """Indices of the layers that inference updates."""
    first = 1 if clamp_input else 0
    last = n_layers - 1 if clamp_output else n_layers
    return tuple(range(first, last + 1))


@partial(jax.jit, static_argnames=("act", "out_act", "steps", "free", "record"))
def _descend(params, zs, dt, pi, *, act, out_act, steps, free, record):
    r"""Run ``steps`` Euler steps on the layers in ``free``; returns (activities, energies, trajectory).

    With the input clamped, layer 1's prediction $\mu_1 = f_1(W_1 x + b_1)$ does not change during
    inference, so it is computed once, before the loop: each step then costs only the predictions
    and transposed errors of layers $2..L$ (the cost floor of :mod:`pclib.bench`). Its energy term
    $\frac{\pi_1}{2}\lVert z_1 - \mu_1\rVert^2$ and the energy of the sub-network above layer 1 add
    up to the full energy, so the gradients are exactly those of :func:`pclib.sample_energies`.
    """
    n = zs[0].shape[0]
    f1 = layer_activations(len(params), act=act, out_act=out_act)[0]
    mu1 = None if 0 in free else f1(preactivation(params[0], zs[0]))

    def total_energy(free_z):
        full = list(zs)
        for i, z in zip(free, free_z):
            full[i] = z
        if mu1 is None:
            return jnp.sum(sample_energies(params, full, act=act, out_act=out_act, precisions=pi))
        e1 = 0.5 * pi[0] * jnp.sum((full[1] - mu1) ** 2)
        if len(params) == 1:
            return e1
        return e1 + jnp.sum(sample_energies(params[1:], full[1:], act=act, out_act=out_act, precisions=pi[1:]))

    def step(free_z, _):
        f, g = jax.value_and_grad(total_energy)(free_z)
        new = [z - dt * gz for z, gz in zip(free_z, g)]
        return new, (f, new if record else None)

    free0 = [zs[i] for i in free]
    free_T, (fs, traj) = jax.lax.scan(step, free0, None, length=steps)
    energies = jnp.concatenate([fs, total_energy(free_T)[None]]) / n
    out = list(zs)
    for i, z in zip(free, free_T):
        out[i] = z
    trajectory = None
    if record:
        trajectory = [jnp.broadcast_to(z, (steps + 1,) + z.shape) for z in zs]
        for j, i in enumerate(free):
            trajectory[i] = jnp.concatenate([free0[j][None], traj[j]])
    return out, energies, trajectory


def check_energies(energies: Any, *, dt: float, steps: int) -> None:
    """Raise :class:`InferenceDivergedError` if the energy trace is non-finite or grew.

    Gradient descent with a small enough step never raises the energy, so a final energy above
    twice the initial one means the step overshoots: Euler's method on a quadratic with
    curvature $\\lambda$ is unstable once $\\mathrm{d}t > 2/\\lambda$.
    """
    e = np.asarray(energies, dtype=np.float64)
    bad = ~np.isfinite(e)
    if bad.any():
        k = int(np.argmax(bad))
        raise InferenceDivergedError(
            f"PC inference diverged: the energy became {e[k]} at step {k} of {steps} with dt={dt:g}. "
            f"The step size is too large for this network; use a smaller dt (e.g. dt={dt / 4:g}) "
            f"and more steps."
        )
    if e.max() > 2.0 * e[0] + 1e-8:
        raise InferenceDivergedError(
            f"PC inference diverged: the energy grew from {e[0]:.3g} to {e.max():.3g} within {steps} steps "
            f"with dt={dt:g}, but gradient descent should lower it. The step size is too large for this "
            f"network; use a smaller dt (e.g. dt={dt / 4:g}) and more steps."
        )


def infer(
    params: Params,
    x: Array,
    y: Array | None = None,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    steps: int = 20,
    dt: float = 0.1,
    init: Union[str, Sequence[Array]] = "ffwd",
    clamp_input: bool = True,
    precisions: Any = None,
    key: Array | None = None,
    record: bool = False,
    check: bool = True,
) -> Inference:
    r"""Run PC inference: ``steps`` Euler steps of size ``dt`` on each sample's energy.

    Parameters
    ----------
    params : the network (see :mod:`pclib.model`).
    x : input batch ``(N, d_0)``; the clamped input, or the starting input if ``clamp_input=False``.
    y : target batch ``(N, d_L)`` clamped at the output, or ``None`` to leave the output free.
    steps, dt : number and size of the Euler steps.
    init : ``"ffwd"`` (default), ``"zeros"``, ``"normal"`` or a list of starting activities.
    clamp_input : ``False`` lets the input layer move too (input-unclamped PC, Millidge et al. Thm 3.3).
    precisions : one scalar $\pi_l$ per layer, or ``None`` for all ones.
    key : PRNG key for ``init="normal"``.
    record : also return the whole trajectory.
    check : raise :class:`InferenceDivergedError` if the energy becomes NaN/inf or grows
        (only outside ``jit``, where values are concrete).

    Returns
    -------
    :class:`Inference` with ``.activities``, ``.energies`` of shape ``(steps + 1,)`` and
    ``.trajectory``.
    """
    check_params(params)
    x = jnp.asarray(x)
    check_data(params, x, y)
    if not (isinstance(steps, (int, np.integer)) and steps >= 0):
        raise ValueError(f"steps must be a non-negative int; got {steps!r}")
    if not isinstance(dt, jax.core.Tracer) and not float(dt) > 0:
        raise ValueError(f"dt must be positive; got {dt!r}")
    zs = initial_activities(params, x, y, act=act, out_act=out_act, init=init, key=key)
    if clamp_input:
        zs[0] = x
    free = free_layers(len(params), clamp_input=clamp_input, clamp_output=y is not None)
    pi = as_precisions(precisions, len(params), zs[0].dtype)
    out, energies, trajectory = _descend(
        params, zs, jnp.asarray(dt, zs[0].dtype), pi,
        act=act, out_act=out_act, steps=int(steps), free=free, record=record,
    )
    if check and not isinstance(energies, jax.core.Tracer):
        check_energies(energies, dt=float(dt), steps=int(steps))
    return Inference(out, energies, trajectory)
