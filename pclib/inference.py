r"""Inference: gradient descent of the energy on the free activities.

Each sample $i$ descends its own energy $F_i$ (the energy without the $1/N$),

$$z_{l,i} \leftarrow z_{l,i} - \mathrm{d}t\, \frac{\partial F_i}{\partial z_{l,i}}
= z_{l,i} - \mathrm{d}t\,\Big(\pi_l \varepsilon_{l,i}
 - \pi_{l+1} J_{l+1,i}^\top \varepsilon_{l+1,i}\Big),$$

($\Pi_l\varepsilon_{l,i} - J_{l+1,i}^\top\Pi_{l+1}\varepsilon_{l+1,i}$ with matrix precisions)

with $J_{l+1} = \partial \mu_{l+1} / \partial z_l$ the Jacobian of the prediction of the
layer above. This is the forward-Euler discretisation of Millidge et al. (2022), Eq. 1.
Because each sample follows its own energy, the dynamics do not depend on the batch size.

:func:`infer` runs a fixed number of steps (one compiled ``lax.scan``), or, with ``tol``, until every
sample's gradient satisfies $\max_{l,k} |\partial F_i / \partial z_{l,k}| < \text{tol}$ (one compiled
``lax.while_loop``). ``method="newton"`` replaces the Euler steps by line-search Newton–CG
(:mod:`pclib.solvers`), which reaches the same equilibrium in far fewer iterations.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import mupc, solvers
from .energy import _SCALAR_SHAPE_HELP, is_matrix_form, layer_precisions, precision_matrices, sample_energies, weighted_square
from .model import (
    Activation, Array, Params, check_data, check_param, check_params, forward, layer_activations, normal, preactivation, split_keys,
    widths_of,
)

INITS = ("ffwd", "zeros", "normal")
METHODS = tuple(solvers.METHODS)
DEFAULT_MAX_STEPS = {"euler": 100_000, "newton": 200}


class InferenceDivergedError(FloatingPointError):
    """Inference produced NaN/inf or an energy that grew: the step size ``dt`` is too large."""


class NotConvergedError(RuntimeError):
    r"""Inference stopped at ``max_steps`` (or could not lower the energy further) before every sample's
    gradient met the tolerance. Attributes: ``residual`` (the max-norm reached), ``tol``, ``steps``, ``method``."""

    def __init__(self, message: str, *, residual: float, tol: float, steps: int, method: str):
        super().__init__(message)
        self.residual, self.tol, self.steps, self.method = residual, tol, steps, method


class WarmStartError(ValueError):
    """A list of starting activities (``init=``) does not fit the network and the batch."""


class Inference(NamedTuple):
    r"""Result of :func:`infer`.

    Attributes
    ----------
    activities : ``[z_0, ..., z_L]`` at the end, like :func:`pclib.forward`'s output.
    energies : ``energies[k]`` is $\mathcal F$ after ``k`` steps. Shape ``(steps + 1,)`` for a fixed
        number of steps; with ``tol`` shape ``(max_steps + 1,)``, the entries after ``steps`` repeating
        the final energy (so the shape, and the compiled program, do not depend on the data).
    trajectory : with ``record=True``, one array of shape ``(steps + 1, N, d_l)`` per layer.
    residual : $\max_{i,l,k} |\partial F_i/\partial z_{l,k}|$ at the returned activities (free layers only):
        a 0-d array.
    steps : iterations taken (Euler steps, or Newton iterations): a 0-d integer array.
    converged : ``residual < tol`` (a 0-d boolean array), or ``None`` without ``tol``.
    inner_steps : conjugate-gradient iterations of ``method="newton"`` (one Hessian-vector product
        each); 0 for Euler.
    """

    activities: list
    energies: Array
    trajectory: Union[list, None] = None
    residual: Union[Array, None] = None
    steps: Union[Array, None] = None
    converged: Union[Array, None] = None
    inner_steps: Union[Array, None] = None


def check_warm_start(params: Params, init: Sequence[Any], n: int) -> None:
    """Raise :class:`WarmStartError` unless ``init`` lists one ``(n, d_l)`` array per layer of ``params``."""
    widths = widths_of(params)
    if len(init) != len(widths):
        raise WarmStartError(
            f"init lists {len(init)} activities; a {len(params)}-layer network needs {len(widths)} "
            f"([z_0, ..., z_{len(params)}], input and output included), e.g. the .activities of a previous "
            f"pclib.infer on the same network"
        )
    for l, (z, d) in enumerate(zip(init, widths)):
        shape = tuple(np.shape(z))
        if shape != (n, d):
            raise WarmStartError(
                f"init[{l}] has shape {shape} but layer {l} of this network with a batch of {n} needs ({n}, {d}); "
                f"warm-start only from activities of the same network and the same batch (or use init='ffwd')"
            )


def initial_activities(
    params: Params,
    x: Array,
    y: Array | None = None,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    init: Union[str, Sequence[Array]] = "ffwd",
    key: Array | None = None,
    param: str = "standard",
) -> list[Array]:
    """Activities at the start of inference; the clamped ends are set to ``x`` and ``y``.

    ``init`` is ``"ffwd"`` (the feedforward pass), ``"zeros"``, ``"normal"`` (standard normal,
    needs ``key``) or an explicit list of activities (a warm start, e.g. a previous solve's
    ``.activities``).
    """
    if isinstance(init, str):
        if init == "ffwd":
            zs = forward(params, x, act=act, out_act=out_act, param=param)
        elif init == "zeros":
            zs = [x] + [jnp.zeros((x.shape[0], layer["W"].shape[0]), x.dtype) for layer in params]
        elif init == "normal":
            if key is None:
                raise ValueError("init='normal' draws random activities: pass key=jax.random.key(seed)")
            keys = split_keys(key, len(params))
            zs = [x] + [jnp.asarray(normal(k, (x.shape[0], layer["W"].shape[0]), x.dtype)) for k, layer in zip(keys, params)]
        else:
            raise ValueError(f"unknown init {init!r}: use one of {', '.join(map(repr, INITS))} or a list of activities")
    else:
        check_warm_start(params, init, int(jnp.shape(x)[0]))
        zs = [jnp.asarray(z) for z in init]
    zs = list(zs)
    if y is not None:
        zs[-1] = jnp.asarray(y, zs[-1].dtype)
    return zs


def free_layers(n_layers: int, *, clamp_input: bool, clamp_output: bool) -> tuple[int, ...]:
    """Indices of the layers that inference updates."""
    first = 1 if clamp_input else 0
    last = n_layers - 1 if clamp_output else n_layers
    return tuple(range(first, last + 1))


def _energies_of_free(params, zs, pi, *, act, out_act, free, param="standard"):
    r"""``(total, per_sample, diagonal)``: $\sum_i F_i$, $F_i$ and a positive approximation of the
    diagonal of $F_i$'s Hessian, as functions of the free activities.

    With the input clamped, layer 1's prediction $\mu_1 = f_1(W_1 x + b_1)$ does not change during
    inference, so it is computed once, before the loop: each step then costs only the predictions
    and transposed errors of layers $2..L$ (the cost floor of :mod:`pclib.bench`). Its energy term
    $\frac{\pi_1}{2}\lVert z_1 - \mu_1\rVert^2$ and the energy of the sub-network above layer 1 add
    up to the full energy, so the gradients are exactly those of :func:`pclib.sample_energies`.
    ``param="mupc"``: :func:`pclib.mupc.energies_of_free`.
    """
    if param != "standard":
        return mupc.energies_of_free(params, zs, pi, act=act, out_act=out_act, free=free)
    f1 = layer_activations(len(params), act=act, out_act=out_act)[0]
    mu1 = None if 0 in free else f1(preactivation(params[0], zs[0]))

    def full(free_z):
        out = list(zs)
        for i, z in zip(free, free_z):
            out[i] = z
        return out

    matrices = isinstance(pi, tuple)  # matrix precisions (a separate program; the scalar one is unchanged)

    def total(free_z):
        z = full(free_z)
        if mu1 is None:
            return jnp.sum(sample_energies(params, z, act=act, out_act=out_act, precisions=pi))
        e1 = jnp.sum(weighted_square(z[1] - mu1, pi[0])) if matrices else 0.5 * pi[0] * jnp.sum((z[1] - mu1) ** 2)
        if len(params) == 1:
            return e1
        return e1 + jnp.sum(sample_energies(params[1:], z[1:], act=act, out_act=out_act, precisions=pi[1:]))

    def per_sample(free_z):
        z = full(free_z)
        if mu1 is None:
            return sample_energies(params, z, act=act, out_act=out_act, precisions=pi)
        e1 = weighted_square(z[1] - mu1, pi[0]) if matrices else 0.5 * pi[0] * jnp.sum((z[1] - mu1) ** 2, axis=1)
        if len(params) == 1:
            return e1
        return e1 + sample_energies(params[1:], z[1:], act=act, out_act=out_act, precisions=pi[1:])

    fs = layer_activations(len(params), act=act, out_act=out_act)

    def diagonal(free_z):
        r"""The Gauss-Newton diagonal $\pi_l + \pi_{l+1} (f'_{l+1}(a_{l+1})^2)^\top W_{l+1}^{\odot 2}$ of each free unit
        (for CG's Jacobi preconditioner). With matrix precisions it is the diagonal of
        $\Pi_l + J_{l+1}^\top\Pi_{l+1}J_{l+1}$, $J_{l+1} = \operatorname{diag}(f'_{l+1})W_{l+1}$: positive, since
        $\Pi_l \succ 0$ has a positive diagonal and $J^\top\Pi J \succeq 0$ a non-negative one."""
        z = full(free_z)
        out = []
        for l in free:
            if matrices:
                d = jnp.zeros_like(z[l]) + (jnp.diagonal(pi[l - 1]) if l >= 1 else 0.0)
            else:
                d = jnp.zeros_like(z[l]) + (pi[l - 1] if l >= 1 else 0.0)
            if l < len(params):
                a = preactivation(params[l], z[l])
                fp = jax.jvp(fs[l], (a,), (jnp.ones_like(a),))[1]
                if matrices:  # diag(J_i^T P J_i) for every sample i, J_i = diag(fp_i) W
                    J = fp[:, :, None] * params[l]["W"]
                    d = d + jnp.einsum("njk,jm,nmk->nk", J, pi[l], J)
                else:
                    d = d + pi[l] * (fp**2) @ (params[l]["W"] ** 2)
            out.append(jnp.maximum(d, jnp.finfo(d.dtype).tiny ** 0.5))
        return out

    return total, per_sample, diagonal


@partial(jax.jit, static_argnames=("act", "out_act", "init", "clamp_input", "free", "method", "steps", "use_tol",
                                   "record", "param"))
def _run(params, x, y, warm, key, dt, precisions, tol, *, act, out_act, init, clamp_input, free, method, steps,
         use_tol, record, param="standard"):
    """The whole of :func:`infer` after validation: start, solve, residual. One compiled program per
    shape and option set; ``dt``, ``tol``, the precisions and the data are traced."""
    zs = initial_activities(params, x, y, act=act, out_act=out_act, init=init if warm is None else warm, key=key,
                            param=param)
    if clamp_input:
        zs[0] = x
    dtype = zs[0].dtype
    pi = layer_precisions(precisions, len(params), dtype)
    dt = jnp.asarray(dt, dtype)
    tol = jnp.asarray(tol, dtype)
    total, per_sample, diagonal = _energies_of_free(params, zs, pi, act=act, out_act=out_act, free=free, param=param)
    free0 = [zs[i] for i in free]
    n = zs[0].shape[0]
    trajectory = None
    inner = jnp.asarray(0)
    if not free:  # every layer is clamped (a one-layer network with x and y given): nothing moves
        energies = jnp.full((steps + 1,), total([]) / n)
        if record:
            trajectory = [jnp.broadcast_to(z, (steps + 1,) + z.shape) for z in zs]
        residual = jnp.zeros((), dtype)
        converged = residual < tol if use_tol else None
        return list(zs), energies, trajectory, residual, jnp.asarray(0), converged, inner
    if method == "euler" and not use_tol:

        def step(free_z, _):
            f, g = jax.value_and_grad(total)(free_z)
            new = [z - dt * gz for z, gz in zip(free_z, g)]
            return new, (f, new if record else None)

        free_T, (fs, traj) = jax.lax.scan(step, free0, None, length=steps)
        f_T, g_T = jax.value_and_grad(total)(free_T)
        energies = jnp.concatenate([fs, f_T[None]]) / n
        residual = jnp.max(solvers.sample_max_abs(g_T))
        taken = jnp.asarray(steps)
        if record:
            trajectory = [jnp.broadcast_to(z, (steps + 1,) + z.shape) for z in zs]
            for j, i in enumerate(free):
                trajectory[i] = jnp.concatenate([free0[j][None], traj[j]])
    else:
        if method == "euler":
            sol = solvers.euler_until(per_sample, free0, dt=dt, tol=tol, max_steps=steps)
        else:
            sol = solvers.newton_until(per_sample, free0, tol=tol if use_tol else jnp.zeros((), dtype), max_steps=steps,
                                       diagonal=diagonal)
        free_T, energies, taken, inner = sol.z, sol.energies, sol.steps, sol.inner_steps
        residual = jnp.max(sol.residuals)
    out = list(zs)
    for i, z in zip(free, free_T):
        out[i] = z
    converged = residual < tol if use_tol else None
    return out, energies, trajectory, residual, taken, converged, inner


def check_energies(energies: Any, *, dt: float, steps: int, method: str = "euler") -> None:
    """Raise :class:`InferenceDivergedError` if the energy trace is non-finite or grew.

    Gradient descent with a small enough step never raises the energy, so a final energy above
    twice the initial one means the step overshoots: Euler's method on a quadratic with
    curvature $\\lambda$ is unstable once $\\mathrm{d}t > 2/\\lambda$. Newton–CG's line search never
    raises the energy, so there only a non-finite energy (NaN/inf in the network or data) is possible.
    """
    e = np.asarray(energies, dtype=np.float64)
    bad = ~np.isfinite(e)
    if method != "euler" and bad.any():
        raise InferenceDivergedError(
            f"PC inference ({method}) diverged: the energy became {e[int(np.argmax(bad))]} at iteration "
            f"{int(np.argmax(bad))}. Its line search never raises the energy, so look for NaN or inf in the "
            f"parameters, the data or the starting activities."
        )
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


def not_converged_message(residual: float, tol: float, steps: int, max_steps: int, method: str, dt: float) -> str:
    """Why an inference stopped short of ``tol``, and what to change."""
    what = "Euler steps" if method == "euler" else "Newton-CG iterations"
    fixes = [f"raise max_steps (e.g. max_steps={4 * max_steps})"]
    if method == "euler":
        fixes += ["use method='newton', which reaches tight tolerances in far fewer iterations",
                  f"use a larger dt than {dt:g} if it stays stable (Euler is stable below 2 / the largest curvature)"]
    else:
        fixes += ["start closer to the equilibrium (a warm start, init=<previous activities>)"]
    fixes += ["or loosen tol, which must stay above the rounding error of the gradient in this dtype"]
    stop = "hit max_steps" if steps >= max_steps else "could not lower the energy further"
    return (f"inference did not converge: after {steps} {what} ({stop}) the largest activity gradient "
            f"max |dF_i/dz| is {residual:.3g}, above tol={tol:.3g}. To reach it, " + "; ".join(fixes) + ".")


def _is_concrete(v: Any) -> bool:
    return not isinstance(v, jax.core.Tracer)


def infer(
    params: Params,
    x: Array,
    y: Array | None = None,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    steps: int | None = None,
    dt: float = 0.1,
    init: Union[str, Sequence[Array], Inference] = "ffwd",
    clamp_input: bool = True,
    precisions: Any = None,
    key: Array | None = None,
    record: bool = False,
    check: bool = True,
    tol: float | None = None,
    max_steps: int | None = None,
    method: str = "euler",
    param: str = "standard",
) -> Inference:
    r"""Run PC inference: ``steps`` Euler steps of size ``dt`` on each sample's energy, or, with ``tol``,
    until every sample's gradient is below ``tol``.

    Parameters
    ----------
    params : the network (see :mod:`pclib.model`).
    x : input batch ``(N, d_0)``; the clamped input, or the starting input if ``clamp_input=False``.
    y : target batch ``(N, d_L)`` clamped at the output, or ``None`` to leave the output free.
    steps : without ``tol``, the number of steps (default 20); with ``tol``, the same as ``max_steps``.
    dt : the Euler step size (unused by ``method="newton"``).
    init : ``"ffwd"`` (default), ``"zeros"``, ``"normal"``, a list of starting activities
        ``[z_0, ..., z_L]`` or a previous :class:`Inference` (a warm start; shapes must fit the network
        and batch, else :class:`WarmStartError`).
    clamp_input : ``False`` lets the input layer move too (input-unclamped PC, Millidge et al. Thm 3.3).
    precisions : one scalar $\pi_l$ per layer, ``None`` for all ones, or a list with one entry per layer, each a
        scalar or a symmetric positive definite ``(d_l, d_l)`` matrix $\Pi_l$ (the energy's term is then
        $\frac12\varepsilon_l^\top\Pi_l\varepsilon_l$ and the force $\Pi_l\varepsilon_l - J_{l+1}^\top\Pi_{l+1}\varepsilon_{l+1}$;
        matrices compile a separate program).
    key : PRNG key for ``init="normal"``.
    record : also return the whole trajectory (fixed-step Euler only).
    check : raise :class:`InferenceDivergedError` if the energy becomes NaN/inf or grows and, with
        ``tol``, :class:`NotConvergedError` if the tolerance was not met (only outside ``jit``, where
        values are concrete). Checking waits for the result; ``check=False`` does not, and leaves
        ``.converged`` to the caller.
    tol : stop once $\max_{l,k} |\partial F_i/\partial z_{l,k}| <$ ``tol`` for every sample $i$ (a sample
        that meets it stops moving). ``None``: run exactly ``steps`` steps.
    max_steps : the cap with ``tol`` (default 100000 Euler steps, 200 Newton iterations).
    method : ``"euler"`` (default: the dynamics of Millidge et al. 2022, Eq. 1) or ``"newton"``
        (line-search Newton–CG on every sample's energy, :func:`pclib.solvers.newton_until`: the same
        equilibrium, reached in a few iterations).
    param : ``"standard"`` or ``"mupc"`` (the scaled residual predictions of :func:`pclib.model.mupc_predictors`,
        also for the feedforward start).

    Returns
    -------
    :class:`Inference` with ``.activities``, ``.energies``, ``.trajectory``, ``.residual``,
    ``.steps``, ``.converged`` and ``.inner_steps``.

    Every call with the same shapes and options runs one compiled program (new data, ``dt``, ``tol``
    or precisions compile nothing new).
    """
    check_params(params)
    check_param(param, params)
    check_data(params, x, y)
    x = x if isinstance(x, jax.Array) else jnp.asarray(x)
    y = y if y is None or isinstance(y, jax.Array) else jnp.asarray(y)
    if method not in solvers.METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(map(repr, METHODS))}")
    use_tol = tol is not None
    if use_tol and _is_concrete(tol) and not float(tol) > 0:
        raise ValueError(f"tol must be positive (the largest activity gradient to accept); got {tol!r}")
    for name, v in (("steps", steps), ("max_steps", max_steps)):
        if v is not None and not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0):
            raise ValueError(f"{name} must be a non-negative int; got {v!r}")
    if use_tol:
        if steps is not None and max_steps is not None and steps != max_steps:
            raise ValueError(f"with tol, steps is the cap max_steps: pass one of them (got steps={steps}, max_steps={max_steps})")
        cap = max_steps if max_steps is not None else steps if steps is not None else DEFAULT_MAX_STEPS[method]
        if cap < 1:
            raise ValueError(f"max_steps must be at least 1 with tol; got {cap}. Raise max_steps.")
        if record:
            raise ValueError("record=True needs a fixed number of steps: drop tol and pass steps=..., "
                             "or read the end point of the tol run from .activities")
    else:
        if max_steps is not None:
            raise ValueError("max_steps caps a run with a tolerance: pass tol=... too, or use steps=... for a "
                             "fixed number of steps")
        cap = 20 if steps is None else int(steps)
        if record and method != "euler":
            raise ValueError(f"record=True records Euler steps; method={method!r} has no trajectory to record")
    if method == "euler" and _is_concrete(dt) and not float(dt) > 0:
        raise ValueError(f"dt must be positive; got {dt!r}")
    if isinstance(init, Inference):
        init = init.activities
    warm = None
    if not isinstance(init, str):
        check_warm_start(params, init, int(np.shape(x)[0]))
        warm, init = list(init), None
    elif init not in INITS:
        raise ValueError(f"unknown init {init!r}: use one of {', '.join(map(repr, INITS))} or a list of activities")
    elif init == "normal" and key is None:
        raise ValueError("init='normal' draws random activities: pass key=jax.random.key(seed)")
    elif init == "normal" and _is_concrete(key) and _is_concrete(x):
        # draw the start here: the compiled solve is then the warm start's, with no random-number code in it
        warm, init, key = initial_activities(params, x, y, act=act, out_act=out_act, init="normal", key=key,
                                             param=param), None, None
    if init != "normal":
        key = None  # only a random start reads the key: without it, every key shares one compiled program
    if is_matrix_form(precisions):
        precisions = precision_matrices(precisions, widths_of(params))
    elif precisions is not None and np.shape(precisions) != (len(params),):
        raise ValueError(
            f"precisions must hold {_SCALAR_SHAPE_HELP.format(L=len(params))}; got shape {np.shape(precisions)}"
        )
    free = free_layers(len(params), clamp_input=clamp_input, clamp_output=y is not None)
    out, energies, trajectory, residual, taken, converged, inner = _run(
        params, x, y, warm, key, dt, precisions, tol if use_tol else 0.0,
        act=act, out_act=out_act, init=init, clamp_input=bool(clamp_input), free=free, method=method,
        steps=int(cap), use_tol=use_tol, record=bool(record), param=param,
    )
    result = Inference(out, energies, trajectory, residual, taken, converged, inner)
    if check and _is_concrete(energies):
        dt_f = float(dt) if _is_concrete(dt) else float("nan")
        check_energies(energies, dt=dt_f, steps=int(cap), method=method)
        if use_tol and not bool(converged):
            raise NotConvergedError(
                not_converged_message(float(residual), float(tol), int(taken), int(cap), method, dt_f),
                residual=float(residual), tol=float(tol), steps=int(taken), method=method,
            )
    return result
