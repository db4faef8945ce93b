r"""Inference variants that return an equilibrium: the clamped equilibrium of any network (closed form
for linear networks) and inference on a generalised energy.

An equilibrium is a point, not a path, so these functions solve until every sample's activity gradient
is below a tolerance, $\max_{l,k} |\partial F_i / \partial z_{l,k}| < \text{tol}$, by default with
line-search Newton–CG (:func:`pclib.solvers.newton_until`), and raise
:class:`~pclib.inference.NotConvergedError` rather than return a point that is not one.
The default tolerance is :func:`default_tol`.
"""

from __future__ import annotations

from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import solvers
from .energy import _errors, as_precisions, is_matrix_form, precision_matrices, precision_scales
from .inference import (
    DEFAULT_MAX_STEPS, METHODS, InferenceDivergedError, NotConvergedError, infer, not_converged_message,
)
from .model import Activation, Array, Params, check_data, check_param, check_params, forward, mupc_effective_params, widths_of
from .mupc import euler_dt as mupc_euler_dt
from .theory.linear import linear_equilibrium

Tolerance = Union[float, str, None]


def default_tol(dtype: Any, precisions: Any = None) -> float:
    r"""The default tolerance on $\max_{l,k}|\partial F_i/\partial z_{l,k}|$:
    $10^{-10}\,s$ in float64, $10^{-5}\,s$ in float32 and $10^{-2}\,s$ in 16-bit floats, with
    $s = \max(1, \max_l \pi_l)$, since the gradient $\pi_l\varepsilon_l - \pi_{l+1}J_{l+1}^\top\varepsilon_{l+1}$
    scales with the precisions ($\lambda_{\max}(\Pi_l)$ in place of $\pi_l$ for a matrix). Each is a few thousand
    times the rounding error of the gradient of a moderate network in that dtype."""
    bits = jnp.finfo(dtype).bits
    base = 1e-10 if bits >= 64 else 1e-5 if bits >= 32 else 1e-2
    scale = 1.0 if precisions is None else max(1.0, max(precision_scales(precisions)))
    return base * scale


def _cap(steps: int | None, max_steps: int | None, method: str) -> int:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: use one of {', '.join(map(repr, METHODS))}")
    if steps is not None and max_steps is not None and steps != max_steps:
        raise ValueError(f"steps is another name for max_steps here: pass one of them (got {steps} and {max_steps})")
    cap = max_steps if max_steps is not None else steps if steps is not None else DEFAULT_MAX_STEPS[method]
    if not (isinstance(cap, (int, np.integer)) and cap >= 1):
        raise ValueError(f"max_steps must be an int >= 1; got {cap!r}. Raise max_steps.")
    return int(cap)


def _resolve_tol(tol: Tolerance, dtype: Any, precisions: Any) -> float | None:
    if tol is None:
        return None
    if isinstance(tol, str):
        if tol != "auto":
            raise ValueError(f"tol must be a positive float, 'auto' or None; got {tol!r}")
        return default_tol(dtype, precisions)
    if not float(tol) > 0:
        raise ValueError(f"tol must be positive (the largest activity gradient to accept); got {tol!r}")
    return float(tol)


def euler_dt(params: Params, precisions: Any) -> float:
    r"""A stable Euler step for clamped inference,
    $\mathrm dt = 0.5 / \max_l (\pi_l + \pi_{l+1}\lVert W_{l+1}\rVert_2^2)$: half the inverse of a bound on
    the largest curvature of a Gauss-Newton energy (tanh' <= 1); ``precisions`` is an array of shape ``(L,)``
    or matrix-form precisions (then $\lambda_{\max}(\Pi_l)$ in place of $\pi_l$)."""
    pi = precision_scales(precisions)
    norms = [float(jnp.linalg.norm(p["W"], 2)) ** 2 for p in params[1:]] + [0.0]
    return 0.5 / max(pi[l] + (pi[l + 1] if l + 1 < len(params) else 0.0) * norms[l] for l in range(len(params)))


def equilibrium(
    params: Params,
    x: Array,
    y: Array,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    tol: Tolerance = "auto",
    max_steps: int | None = None,
    steps: int | None = None,
    method: str = "newton",
    dt: float | None = None,
    init: Any = "ffwd",
    param: str = "standard",
) -> list[Array]:
    r"""The inference equilibrium with both ends clamped: the closed form for linear networks
    (:func:`linear_equilibrium`), otherwise :func:`pclib.infer` run until every sample's activity
    gradient is below ``tol``.

    Parameters
    ----------
    precisions : ``None``, one scalar per layer, or a list of scalars and symmetric positive definite
        ``(d_l, d_l)`` matrices (as in :func:`pclib.infer`).
    tol : ``"auto"`` (default) for :func:`default_tol`, a positive float, or ``None`` for exactly
        ``max_steps`` iterations with no convergence check (a point on the way, not an equilibrium).
    max_steps : the cap on iterations (default 200 Newton iterations, 100000 Euler steps); ``steps``
        is another name for it.
    method : ``"newton"`` (default: line-search Newton–CG, :func:`pclib.solvers.newton_until`) or
        ``"euler"`` (the dynamics of Millidge et al. 2022, Eq. 1; both reach the same equilibrium).
    dt : Euler's step; ``None`` takes $\mathrm dt = 0.5 / \max_l (\pi_l + \pi_{l+1}\lVert W_{l+1}\rVert_2^2)$,
        a bound on the largest curvature of a Gauss-Newton energy (tanh' <= 1).
    init : where to start: ``"ffwd"`` or a previous equilibrium's activities (a warm start).
    param : ``"standard"`` or ``"mupc"``; a linear μPC network is the standard linear network of
        :func:`pclib.model.mupc_effective_params` (same energy), so it too has the closed form; ``dt=None``
        then takes :func:`pclib.mupc.euler_dt`.

    Raises
    ------
    NotConvergedError
        If the tolerance was not met within ``max_steps``; the message gives the residual reached and
        what to change.
    """
    check_param(param, params)
    if act == "linear" and out_act == "linear":
        eff = params if param == "standard" else mupc_effective_params(params)
        return linear_equilibrium(eff, x, y, precisions=precisions)
    check_params(params)
    cap = _cap(steps, max_steps, method)
    dtype = params[0]["W"].dtype
    if is_matrix_form(precisions):
        pi = tuple(P.astype(dtype) for P in precision_matrices(precisions, widths_of(params)))
    else:
        pi = as_precisions(precisions, len(params), dtype)
    tol_f = _resolve_tol(tol, dtype, pi)
    if dt is None:
        dt = euler_dt(params, pi) if param == "standard" else mupc_euler_dt(params, pi)
    options = dict(steps=cap) if tol_f is None else dict(tol=tol_f, max_steps=cap)
    return infer(params, x, y, act=act, out_act=out_act, precisions=pi, dt=dt, init=init, method=method,
                 param=param, **options).activities


def generalised_infer(
    params: Params,
    x: Array,
    y: Array,
    *,
    h: Any,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    tol: Tolerance = "auto",
    max_steps: int | None = None,
    steps: int | None = None,
    method: str = "newton",
    dt: float = 0.1,
) -> list[Array]:
    r"""Inference on :func:`generalised_energy`: minimise each sample's
    $F_{h,i} = \sum_l \pi_l \sum_k h(\varepsilon_{l,i,k})$ in the hidden activities, from the
    feedforward pass, both ends clamped, until every $\max_{l,k}|\partial F_{h,i}/\partial z_{l,k}| <$ ``tol``.

    ``tol``, ``max_steps`` (alias ``steps``) and ``method`` as in :func:`equilibrium`; ``dt`` is Euler's
    step (Millidge et al. 2022, Eq. 1, on $F_h$). ``tol=None`` runs exactly ``max_steps`` iterations.

    Returns the activities ``[x, z_1, ..., z_{L-1}, y]``.

    Raises
    ------
    NotConvergedError
        If ``tol`` was not met within ``max_steps``.
    InferenceDivergedError
        If the energy rose or became non-finite (Euler with too large a ``dt``).
    """
    check_params(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    cap = _cap(steps, max_steps, method)
    pi = as_precisions(precisions, len(params), x.dtype)
    tol_f = _resolve_tol(tol, x.dtype, pi)
    if len(params) == 1:
        return [x, y]
    solve = _generalised_solve_jit if _hashable(h, act, out_act) else _generalised_solve
    sol = solve(params, x, y, pi, jnp.asarray(dt, x.dtype), jnp.asarray(0.0 if tol_f is None else tol_f, x.dtype),
                h=h, act=act, out_act=out_act, method=method, cap=cap)
    e = np.asarray(sol.energies, dtype=np.float64)
    if not (np.all(np.isfinite(e)) and e[-1] <= e[0] + 1e-12 * abs(e[0])):
        raise InferenceDivergedError(
            f"generalised inference diverged: the energy went from {e[0]:.3g} to {e[-1]:.3g}; "
            + ("use a smaller dt" if method == "euler" else "look for NaN or inf in the parameters or data")
        )
    residual = float(jnp.max(sol.residuals))
    if tol_f is not None and not residual < tol_f:
        raise NotConvergedError(
            not_converged_message(residual, tol_f, int(sol.steps), cap, method, float(dt)),
            residual=residual, tol=tol_f, steps=int(sol.steps), method=method,
        )
    return [x, *sol.z, y]


def _hashable(*options: Any) -> bool:
    try:
        hash(options)
    except TypeError:
        return False
    return True


def _generalised_sample_energy(params, x, y, pi, *, h, act, out_act):
    """Each sample's $F_{h,i}$ as a function of the hidden activities (a list of ``(N, d_l)`` arrays)."""
    def per_sample(hidden):
        eps = _errors(params, [x, *hidden, y], act=act, out_act=out_act)
        return sum(p * jnp.sum(h(e), axis=1) for p, e in zip(pi, eps))
    return per_sample


def _generalised_solve(params, x, y, pi, dt, tol, *, h, act, out_act, method, cap):
    """Inference on $F_h$ from the feedforward pass: one compiled program per shape, ``h`` and option set."""
    hidden = forward(params, x, act=act, out_act=out_act)[1:-1]
    per_sample = _generalised_sample_energy(params, x, y, pi, h=h, act=act, out_act=out_act)
    if method == "euler":
        return solvers.euler_until(per_sample, hidden, dt=dt, tol=tol, max_steps=cap)
    return solvers.newton_until(per_sample, hidden, tol=tol, max_steps=cap)


_generalised_solve_jit = jax.jit(_generalised_solve, static_argnames=("h", "act", "out_act", "method", "cap"))


def _global_norm(tree: Any) -> Array:
    return jnp.sqrt(sum(jnp.sum(a**2) for a in jax.tree_util.tree_leaves(tree)))


def _generalised_run(params, x, y, pi, lr, tol, *, h, act, out_act, method, iterations, cap, normalise):
    """The whole of :func:`generalised_train` after validation: one ``lax.scan`` over the updates."""
    n = x.shape[0]

    def loss(p):
        return jnp.sum(h(y - forward(p, x, act=act, out_act=out_act)[-1])) / n

    def step(p, _):
        ell, g_bp = jax.value_and_grad(loss)(p)
        if method == "pc":
            sol = _generalised_solve(p, x, y, pi, jnp.asarray(0.1, x.dtype), tol, h=h, act=act, out_act=out_act,
                                     method="newton", cap=cap)
            zs = [x, *sol.z, y]
            g = jax.grad(lambda q: jnp.mean(
                _generalised_sample_energy(q, x, y, pi, h=h, act=act, out_act=out_act)(zs[1:-1])))(p)
            res, k = jnp.max(sol.residuals), sol.steps
        else:
            g, res, k = g_bp, jnp.zeros((), x.dtype), jnp.asarray(0)
        gn, bn = _global_norm(g), _global_norm(g_bp)
        dot = sum(jnp.sum(a * b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_bp)))
        scale = lr / gn if normalise else lr
        p = jax.tree_util.tree_map(lambda a, b: a - scale * b, p, g)
        return p, (ell, res, k, dot / (gn * bn), bn / gn)

    p, (ell, res, k, cos, ratio) = jax.lax.scan(step, params, None, length=iterations)
    return p, jnp.concatenate([ell, loss(p)[None]]), res, k, cos, ratio


_generalised_run_jit = jax.jit(_generalised_run, static_argnames=("h", "act", "out_act", "method", "iterations",
                                                                  "cap", "normalise"))


def generalised_train(
    params: Params,
    x: Array,
    y: Array,
    *,
    h: Any,
    lr: float,
    iterations: int,
    method: str = "pc",
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    tol: Tolerance = "auto",
    max_steps: int = 50,
    normalise: bool = False,
) -> dict:
    r"""Full-batch training with a generalised error penalty $h$ (Millidge et al. 2022, App. A.8).

    ``method="pc"``: each update solves inference on $\mathcal F_h$ (:func:`generalised_infer`, Newton–CG from
    the feedforward pass, to ``tol``) and steps $\theta \leftarrow \theta - \eta\,g$ with
    $g = \partial\mathcal F_h/\partial\theta$ at that equilibrium. ``method="bp"``: $g = \nabla\ell_h$, the
    backprop gradient of the loss $\ell_h(\theta) = \frac1N\sum_i\sum_k h(y_{i,k} - \hat y_{i,k})$.
    ``normalise=True`` steps $\eta\,g/\lVert g\rVert$ instead (every method takes steps of length $\eta$).
    The whole run is one compiled ``lax.scan`` (per shape, ``h`` and option set).

    Returns a dict of NumPy arrays: ``"loss"`` $\ell_h$ before every update and after the last, shape
    ``(iterations + 1,)``; ``"residual"`` the largest inference residual $\max_{i,l,k}|\partial F_{h,i}/\partial z_{l,k}|$
    of every update (0 for backprop), ``"newton_steps"`` its Newton iterations, and ``"tol"``; ``"cosine"`` between $g$ and $\nabla\ell_h$ at the same
    $\theta$ and ``"norm_ratio"`` $\lVert\nabla\ell_h\rVert/\lVert g\rVert$, shape ``(iterations,)``; and the
    final ``"params"``.

    Raises
    ------
    NotConvergedError
        If some update's inference did not reach ``tol`` within ``max_steps`` Newton iterations.
    """
    check_params(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    if method not in ("pc", "bp"):
        raise ValueError(f"unknown method {method!r}: use 'pc' or 'bp'")
    if len(params) < 2 and method == "pc":
        raise ValueError("PC training needs a hidden layer (a network with >= 2 layers)")
    if not (isinstance(iterations, int) and iterations >= 1):
        raise ValueError(f"iterations must be an int >= 1; got {iterations!r}")
    cap = _cap(None, max_steps, "newton")
    pi = as_precisions(precisions, len(params), x.dtype)
    tol_f = _resolve_tol("auto" if tol is None else tol, x.dtype, pi)
    run = _generalised_run_jit if _hashable(h, act, out_act) else _generalised_run
    p, loss, res, k, cos, ratio = run(params, x, y, pi, jnp.asarray(lr, x.dtype), jnp.asarray(tol_f, x.dtype), h=h,
                                   act=act, out_act=out_act, method=method, iterations=iterations, cap=cap,
                                   normalise=bool(normalise))
    out = dict(loss=np.asarray(loss), residual=np.asarray(res), tol=tol_f, newton_steps=np.asarray(k), cosine=np.asarray(cos),
               norm_ratio=np.asarray(ratio), params=p)
    worst = float(np.max(out["residual"]))
    if method == "pc" and not worst < tol_f:
        raise NotConvergedError(
            f"generalised training: an update's inference stopped at residual {worst:.3g} above tol={tol_f:.3g}; "
            f"raise max_steps (e.g. max_steps={4 * cap}), lower lr, or loosen tol",
            residual=worst, tol=tol_f, steps=cap, method="newton",
        )
    return out
