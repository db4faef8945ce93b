r"""Where the clamped equilibrium sits between backprop and target propagation (Millidge et al. 2022,
Sec. 3.2, Figs. 2 and 3): along a sweep of precision ratios, and during one inference run."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import equilibria
from ..energy import errors
from ..model import Activation, Array, Params, forward
from .precisions import ratio_precisions
from .targets import backprop_errors, equilibrium_residual, tp_targets


def interpolation_sweep(
    params: Params,
    x: Array,
    y: Array,
    ratios: Sequence[float],
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    scheme: str = "geometric",
    steps: int | None = None,
    pinv: bool = False,
    difference: bool = False,
    tol: float | str | None = "auto",
    max_steps: int | None = None,
    method: str = "newton",
) -> dict[str, Any]:
    r"""Where the clamped equilibrium sits between backprop and target propagation, per precision ratio.

    For each ratio $\rho$ (precisions from :func:`ratio_precisions`) it finds the equilibrium $z^*$
    (closed form if linear, else :func:`pclib.equilibria.equilibrium` solved to ``tol`` and warm-started
    from the previous ratio's equilibrium; sort ``ratios`` ascending; ``tol``, ``max_steps`` (alias
    ``steps``) and ``method`` are passed on, and a ratio whose equilibrium is not reached raises
    :class:`pclib.inference.NotConvergedError`) and measures, over the hidden layers $1..L-1$:

    * ``dist_ff``, ``dist_tp``: $\lVert z^* - \hat z\rVert / \lVert \hat z\rVert$ and $\lVert z^* - t\rVert / \lVert t\rVert$,
      with $\hat z$ the feedforward pass and $t$ the TP targets (:func:`tp_targets`);
    * ``angle_bp``: the angle between the precision-weighted equilibrium errors $\pi_l\varepsilon^*_l$
      and backprop's $\delta_l$ (:func:`backprop_errors` at the feedforward pass);
    * ``angle_tp``: the angle between the move $z^* - \hat z$ and the move that TP asks for, $t - \hat z$.

    ``pinv`` is passed to :func:`tp_targets` (for non-square weights); ``difference=True`` measures against
    the difference targets instead (``tp_targets(..., feedforward=...)``). Returns a dict of NumPy
    arrays of shape ``(len(ratios),)`` plus ``"ratios"``, the same four measures for each hidden layer on its own
    (``"angle_bp_layers"`` etc., shape ``(len(ratios), L - 1)``, layer 1 first), and, to certify every point,
    ``"residual"`` (:func:`equilibrium_residual` at each equilibrium, computed afresh by ``jax.grad``)
    and ``"tol"`` (the tolerance each point was solved to; for linear networks, solved in closed form,
    the tolerance ``"auto"`` would have used). With ``tol=None`` the points are ``max_steps``
    iterations of inference, not certified, and the residual says how far from an equilibrium each is.
    """
    L = len(params)
    if L < 2:
        raise ValueError("the interpolation needs at least one hidden layer (two weight layers)")
    ff = forward(params, x, act=act, out_act=out_act)
    ts = tp_targets(params, y, act=act, out_act=out_act, lowest=1, pinv=pinv, feedforward=ff if difference else None)
    delta = backprop_errors(params, ff, y - ff[-1], act=act, out_act=out_act)
    hid = slice(1, L)
    out = {k: [] for k in ("dist_ff", "dist_tp", "angle_bp", "angle_tp", "residual", "tol")}
    out.update({k + "_layers": [] for k in MEASURES})
    init: Any = "ffwd"
    for r in ratios:
        pi = ratio_precisions(r, L, scheme=scheme)
        closed_form = act == "linear" and out_act == "linear"
        out["tol"].append(np.nan if tol is None and not closed_form
                          else equilibria.default_tol(pi.dtype, pi) if closed_form or tol == "auto" else float(tol))
        zs = equilibria.equilibrium(params, x, y, act=act, out_act=out_act, precisions=pi, steps=steps, init=init,
                                    tol=tol, max_steps=max_steps, method=method)
        init = zs
        out["residual"].append(equilibrium_residual(params, zs, act=act, out_act=out_act, precisions=pi))
        eps = errors(params, zs, act=act, out_act=out_act)
        layers = [tuple(np.asarray(v) for v in vs) for vs in
                  zip(zs[hid], ff[hid], ts[hid], [p * e for p, e in zip(pi[:-1], eps[:-1])], delta[:-1])]
        for key, value in _measures(layers).items():
            out[key].append(value)
        for key, value in zip(MEASURES, zip(*[_measures([layer]).values() for layer in layers])):
            out[key + "_layers"].append(value)
    res = {k: np.asarray(vs, dtype=float) for k, vs in out.items()}
    res["ratios"] = np.asarray(ratios, dtype=float)
    return res


MEASURES = ("dist_ff", "dist_tp", "angle_bp", "angle_tp")


def _measures(layers) -> dict[str, float]:
    """The four measures of :func:`interpolation_sweep` over the layers listed, each a tuple of NumPy arrays
    ``(z, feedforward, target, pi * error, delta)`` (computed on the host: these are small)."""
    def norm(vs):
        return np.sqrt(sum(float(np.sum(v * v)) for v in vs))

    def angle_np(us, vs):
        c = sum(float(np.sum(u * v)) for u, v in zip(us, vs)) / (norm(us) * norm(vs))
        return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))

    z, f, t, w, d = (list(v) for v in zip(*layers))
    return {"dist_ff": norm([a - b for a, b in zip(z, f)]) / norm(f), "dist_tp": norm([a - b for a, b in zip(z, t)]) / norm(t),
            "angle_bp": angle_np(w, d), "angle_tp": angle_np([a - b for a, b in zip(z, f)], [a - b for a, b in zip(t, f)])}


def interpolation_course(
    params: Params,
    trajectory: Sequence[Array],
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    pinv: bool = False,
    every: int = 1,
) -> dict[str, Any]:
    r"""The four measures of :func:`interpolation_sweep` *during* inference, at every ``every``-th step of a
    recorded run (``pclib.infer(..., record=True)`` with both ends clamped, from the feedforward pass).

    At step 0 the activities are the feedforward pass: the move and the hidden errors are zero there, so
    both angles are NaN. Returns a dict of NumPy arrays of shape ``(len(steps),)`` plus ``"steps"``.
    """
    L = len(params)
    traj = [np.asarray(z[::every]) for z in trajectory]
    x, y = jnp.asarray(traj[0][0]), jnp.asarray(traj[-1][0])
    ff = [np.asarray(z) for z in forward(params, x, act=act, out_act=out_act)]
    ts = [None if t is None else np.asarray(t) for t in tp_targets(params, y, act=act, out_act=out_act, lowest=1, pinv=pinv)]
    delta = [np.asarray(d) for d in backprop_errors(params, [jnp.asarray(f) for f in ff], y - ff[-1], act=act,
                                                      out_act=out_act)[:-1]]
    pi = np.asarray(ratio_precisions(1.0, L) if precisions is None else precisions, dtype=float)
    eps = jax.vmap(lambda *zs: errors(params, list(zs), act=act, out_act=out_act))(*[jnp.asarray(z) for z in traj])
    weighted = [p * np.asarray(e) for p, e in zip(pi[:-1], eps[:-1])]

    def norm(vs):  # |v| per step, over samples and hidden layers
        return np.sqrt(sum(np.sum(v.reshape(v.shape[0], -1) ** 2, axis=1) for v in vs))

    def cos(us, vs):
        dot = sum(np.sum((u * v).reshape(u.shape[0], -1), axis=1) for u, v in zip(us, vs))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.clip(dot / (norm(us) * norm(vs)), -1.0, 1.0)

    T = traj[0].shape[0]
    move = [traj[l] - ff[l] for l in range(1, L)]
    tp_move = [np.broadcast_to(ts[l] - ff[l], traj[l].shape) for l in range(1, L)]
    out = {
        "dist_ff": norm(move) / norm([f[None] for f in ff[1:L]]),
        "dist_tp": norm([traj[l] - ts[l] for l in range(1, L)]) / norm([t[None] for t in ts[1:L]]),
        "angle_bp": np.degrees(np.arccos(cos(weighted, [np.broadcast_to(d, w.shape) for d, w in zip(delta, weighted)]))),
        "angle_tp": np.degrees(np.arccos(cos(move, tp_move))),
    }
    out["steps"] = np.arange(T) * every
    return out
