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
from .energy import as_precisions, errors
from .inference import (
    DEFAULT_MAX_STEPS, METHODS, InferenceDivergedError, NotConvergedError, infer, not_converged_message,
)
from .model import Activation, Array, Params, check_data, check_params, forward
from .theory.linear import linear_equilibrium

Tolerance = Union[float, str, None]


def default_tol(dtype: Any, precisions: Any = None) -> float:
    r"""The default tolerance on $\max_{l,k}|\partial F_i/\partial z_{l,k}|$:
    $10^{-10}\,s$ in float64, $10^{-5}\,s$ in float32 and $10^{-2}\,s$ in 16-bit floats, with
    $s = \max(1, \max_l \pi_l)$, since the gradient $\pi_l\varepsilon_l - \pi_{l+1}J_{l+1}^\top\varepsilon_{l+1}$
    scales with the precisions. Each is a few thousand times the rounding error of the gradient of a
    moderate network in that dtype."""
    bits = jnp.finfo(dtype).bits
    base = 1e-10 if bits >= 64 else 1e-5 if bits >= 32 else 1e-2
    scale = 1.0 if precisions is None else max(1.0, float(np.max(np.asarray(precisions, dtype=np.float64))))
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
    the largest curvature of a Gauss-Newton energy (tanh' <= 1); ``precisions`` is an array of shape ``(L,)``."""
    pi = [float(v) for v in np.asarray(precisions)]
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
) -> list[Array]:
    r"""The inference equilibrium with both ends clamped: the closed form for linear networks
    (:func:`linear_equilibrium`), otherwise :func:`pclib.infer` run until every sample's activity
    gradient is below ``tol``.

    Parameters
    ----------
    tol : ``"auto"`` (default) for :func:`default_tol`, a positive float, or ``None`` for exactly
        ``max_steps`` iterations with no convergence check (a point on the way, not an equilibrium).
    max_steps : the cap on iterations (default 200 Newton iterations, 100000 Euler steps); ``steps``
        is another name for it.
    method : ``"newton"`` (default: line-search Newton–CG, :func:`pclib.solvers.newton_until`) or
        ``"euler"`` (the dynamics of Millidge et al. 2022, Eq. 1; both reach the same equilibrium).
    dt : Euler's step; ``None`` takes $\mathrm dt = 0.5 / \max_l (\pi_l + \pi_{l+1}\lVert W_{l+1}\rVert_2^2)$,
        a bound on the largest curvature of a Gauss-Newton energy (tanh' <= 1).
    init : where to start: ``"ffwd"`` or a previous equilibrium's activities (a warm start).

    Raises
    ------
    NotConvergedError
        If the tolerance was not met within ``max_steps``; the message gives the residual reached and
        what to change.
    """
    if act == "linear" and out_act == "linear":
        return linear_equilibrium(params, x, y, precisions=precisions)
    check_params(params)
    cap = _cap(steps, max_steps, method)
    dtype = params[0]["W"].dtype
    pi = as_precisions(precisions, len(params), dtype)
    tol_f = _resolve_tol(tol, dtype, pi)
    if dt is None:
        dt = euler_dt(params, pi)
    options = dict(steps=cap) if tol_f is None else dict(tol=tol_f, max_steps=cap)
    return infer(params, x, y, act=act, out_act=out_act, precisions=pi, dt=dt, init=init, method=method,
                 **options).activities


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
    zs = forward(params, x, act=act, out_act=out_act)
    if len(params) == 1:
        return [x, y]

    def per_sample(hidden):
        eps = errors(params, [x, *hidden, y], act=act, out_act=out_act)
        return sum(p * jnp.sum(h(e), axis=1) for p, e in zip(pi, eps))

    @jax.jit
    def run(hidden, tol):
        if method == "euler":
            return solvers.euler_until(per_sample, hidden, dt=jnp.asarray(dt, x.dtype), tol=tol, max_steps=cap)
        return solvers.newton_until(per_sample, hidden, tol=tol, max_steps=cap)

    sol = run(zs[1:-1], jnp.asarray(0.0 if tol_f is None else tol_f, x.dtype))
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
