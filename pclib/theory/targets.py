r"""Targets that PC interpolates between: backprop's errors and exact target propagation
(Millidge et al. 2022, Sec. 3.2 and Thm 3.3), and the residual and Hessians that certify equilibria near them.
Where the clamped equilibrium sits between them is measured in :mod:`pclib.theory.interpolation`."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from ..energy import precision_argument, sample_energies
from ..model import (
    Activation, Array, Params, check_data, check_params, layer_activations, predict, preactivation, static_options,
)
from .linear import _bias


def backprop_errors(
    params: Params,
    activities: Sequence[Array],
    output_error: Array,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
) -> list[Array]:
    r"""Propagate an output error down through the Jacobians taken at ``activities``.

    $\delta_L = e$ and $\delta_l = J_{l+1}(z_l)^\top \delta_{l+1}$ with
    $J_{l+1} = \partial f_{l+1}(W_{l+1} z_l + b_{l+1}) / \partial z_l$: the backprop recursion.
    At the feedforward pass with $e = y - \hat y$, $\delta_l = -\partial \ell_i / \partial \hat z_l$,
    the negative per-sample gradient of $\ell_i = \frac12\lVert y_i - \hat y_i \rVert^2$.

    Returns ``[delta_1, ..., delta_L]``, each of shape ``(N, d_l)``.
    """
    fs = layer_activations(len(params), act=act, out_act=out_act)
    deltas = [jnp.asarray(output_error)]
    for l in range(len(params) - 1, 0, -1):  # propagate through layer l + 1 (params[l]) down to layer l
        layer, f = params[l], fs[l]
        _, vjp = jax.vjp(lambda z: f(preactivation(layer, z)), activities[l])
        deltas.insert(0, vjp(deltas[0])[0])
    return deltas


_INVERSES = {"linear": lambda t: t, "tanh": jnp.arctanh}


def _inverse_activation(act: Activation, where: str):
    if isinstance(act, str) and act in _INVERSES:
        return _INVERSES[act]
    raise ValueError(
        f"{where} activation {act!r} has no inverse in pclib: target propagation needs an invertible "
        f"activation; use one of {', '.join(map(repr, _INVERSES))}"
    )


def tp_targets(
    params: Params,
    y: Array,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    pinv: bool = False,
    lowest: int = 0,
    feedforward: Sequence[Array] | None = None,
) -> list[Array]:
    r"""Exact target-propagation targets: invert the network layer by layer, from the output down.

    With $t_L = y$ and layer $l$'s map $z_l = f_l(W_l z_{l-1} + b_l)$,

    $$t_{l-1} = W_l^{-1}\big(f_l^{-1}(t_l) - b_l\big), \qquad l = L, \dots, 1$$

    (Millidge et al. 2022, Eq. 3, with biases). $t_0$ is the input that the network maps to $y$
    exactly, and $t_l$ is the activity of layer $l$ on the way. ``pinv=True`` uses the
    Moore-Penrose pseudo-inverse $W_l^+$ instead (least squares for tall $W_l$, minimum norm for
    wide $W_l$), as in the paper's experiments with non-square weights; the targets are then
    only approximate inverses. ``lowest`` stops the recursion at layer ``lowest``: with the input
    clamped only the hidden targets matter (``lowest=1``), and $t_0$ may not exist even when they do
    (a hidden target outside tanh's range).

    ``feedforward`` (the activities of :func:`pclib.forward`) gives *difference* targets
    (Lee et al. 2015) instead, which invert only the change asked of each layer:
    $t_{l-1} = \hat z_{l-1} + W_l^{+}\big(f_l^{-1}(t_l) - W_l\hat z_{l-1} - b_l\big)$. For square invertible
    $W_l$, or tall ones with ``pinv`` (full column rank), they equal the targets above; for wide $W_l$ they
    keep the part of $\hat z_{l-1}$ in the null space of $W_l$, which the minimum-norm target drops.

    Returns
    -------
    ``[t_0, t_1, ..., t_L = y]``, aligned with :func:`pclib.forward`'s activities; the entries
    below ``lowest`` are ``None``.

    Raises
    ------
    ValueError
        For a non-square $W_l$ without ``pinv``, a singular (or numerically singular) $W_l$,
        an activation without an inverse (e.g. ReLU), or a target outside the range of tanh.
    """
    check_params(params)
    y = jnp.asarray(y)
    check_data(params, None, y)
    L = len(params)
    if not (isinstance(lowest, int) and 0 <= lowest <= L):
        raise ValueError(f"lowest must be a layer index 0..{L}; got {lowest!r}")
    fs = [act] * (L - 1) + [out_act]
    ts = [y]
    for l in range(L, lowest, -1):
        layer, f = params[l - 1], fs[l - 1]
        inv = _inverse_activation(f, "output" if l == L else "hidden")
        t = ts[0]
        if f == "tanh":
            worst = float(jnp.max(jnp.abs(t)))
            if not worst < 1.0:
                raise ValueError(
                    f"target for layer {l} is outside tanh's range (-1, 1): max |t_{l}| = {worst:.3g}, so no "
                    f"activity of layer {l - 1} reaches it; choose y inside the range that the network can "
                    f"produce, e.g. y = pclib.predict(params, x) for some input x"
                )
        W = layer["W"]
        a = inv(t) - _bias(layer, W.dtype)
        if feedforward is not None:  # invert only the change: a - W z_ff, added to z_ff below
            a = a - feedforward[l - 1] @ W.T
        base = 0.0 if feedforward is None else feedforward[l - 1]
        if pinv:
            ts.insert(0, base + a @ jnp.linalg.pinv(W).T)
            continue
        if W.shape[0] != W.shape[1]:
            raise ValueError(
                f"W_{l} has shape {tuple(W.shape)}, which is not square, so layer {l} has no inverse; "
                f"pass pinv=True to use the Moore-Penrose pseudo-inverse"
            )
        cond = float(jnp.linalg.cond(W))
        if not cond < 1.0 / jnp.finfo(W.dtype).eps:
            raise ValueError(
                f"W_{l} is singular (condition number {cond:.3g}), so the target of layer {l - 1} is not unique; "
                f"pass pinv=True for the minimum-norm target"
            )
        ts.insert(0, base + jnp.linalg.solve(W, a.T).T)
    return [None] * lowest + ts


def equilibrium_residual(
    params: Params,
    activities: Sequence[Array],
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    free: Sequence[int] | None = None,
) -> float:
    r"""How far ``activities`` are from an equilibrium: $\max_{i,\,l \in \text{free},\,k} |\partial F_i/\partial z_{l,k}|$.

    The same quantity as :func:`pclib.infer`'s ``.residual``, computed independently of the solver by
    ``jax.grad`` of the summed per-sample energies (each $F_i$ depends only on sample $i$'s activities).
    ``free`` defaults to the hidden layers $1, \dots, L-1$ (both ends clamped). It is 0 exactly at a
    critical point; compare it with the tolerance the point was solved to.
    """
    L = len(params)
    free = tuple(range(1, L)) if free is None else tuple(int(l) for l in free)
    if not free:
        return 0.0
    check_params(params)
    pi = precision_argument(precisions, params)
    fn = _equilibrium_residual_jit if static_options(act, out_act) else _equilibrium_residual
    return float(fn(params, [jnp.asarray(z) for z in activities], pi, act=act, out_act=out_act, free=free))


def _equilibrium_residual(params, activities, precisions, *, act, out_act, free):
    """:func:`equilibrium_residual` without the checks (compiled below, once per shape and option set)."""

    def total(free_z):
        zs = list(activities)
        for l, z in zip(free, free_z):
            zs[l] = z
        return jnp.sum(sample_energies(params, zs, act=act, out_act=out_act, precisions=precisions))

    grads = jax.grad(total)([activities[l] for l in free])
    return jnp.max(jnp.stack([jnp.max(jnp.abs(g)) for g in grads]))


_equilibrium_residual_jit = jax.jit(_equilibrium_residual, static_argnames=("act", "out_act", "free"))


def sample_activity_hessians(
    params: Params,
    activities: Sequence[Array],
    *,
    free: Sequence[int],
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
) -> Array:
    r"""Each sample's Hessian of its energy $F_i$ in the activities of the layers ``free``, by ``jax.hessian``.

    Shape ``(N, D, D)`` with $D = \sum_{l \in \text{free}} d_l$, blocks ordered as ``free``. At a
    zero-energy point it is the Gauss-Newton matrix $\sum_l \pi_l A_l^\top A_l$,
    $A_l = \partial\varepsilon_l / \partial z$, and $1 - \mathrm dt\,\lambda_{\min}$ is the rate at which
    inference approaches that point.
    """

    free = tuple(int(l) for l in free)
    if precisions is not None:
        precisions = precision_argument(precisions, params)
    fn = _sample_hessians_jit if static_options(act, out_act) else _sample_hessians
    return fn(params, [jnp.asarray(z) for z in activities], precisions, free=free, act=act, out_act=out_act)


def _sample_hessians(params, activities, precisions, *, free, act, out_act):
    """:func:`sample_activity_hessians` after the checks: compiled once per shape and option set."""
    sizes = [int(jnp.shape(activities[l])[1]) for l in free]

    def F1(flat, sample):
        zs = [z[None] for z in sample]
        o = 0
        for l, s in zip(free, sizes):
            zs[l] = flat[o:o + s][None]
            o += s
        return sample_energies(params, zs, act=act, out_act=out_act, precisions=precisions)[0]

    def one(sample):
        flat = jnp.concatenate([sample[l] for l in free])
        return jax.hessian(F1)(flat, sample)

    return jax.vmap(one)(list(activities))


_sample_hessians_jit = jax.jit(_sample_hessians, static_argnames=("free", "act", "out_act"))


def random_invertible_problem(
    seed: int,
    width: int,
    n_layers: int,
    *,
    act: Activation = "tanh",
    out_act: Activation = "tanh",
    n: int = 16,
    gain: float = 1.0,
    bias_scale: float = 0.1,
    target_scale: float = 0.5,
    spread: float = 1.0,
) -> tuple[Params, Array, Array]:
    r"""A square, well-conditioned network for target propagation, an input and a reachable target.

    Weights are $W_l = \text{gain}\cdot U_l S_l V_l^\top$ with random orthogonal $U_l, V_l$ and singular
    values $S_l$ log-uniform in $[1/\text{spread}, \text{spread}]$, so every $W_l$ is invertible with condition
    number at most $\text{spread}^2$ (``spread=1``: orthogonal weights; then $W^{-1} = W^\top/\text{gain}^2$ and
    backprop and TP point the same way in linear networks). Biases have std ``bias_scale``, inputs $x$ are standard normal, and the target is the
    output for another input, $y = \hat y(x')$ with $x' \sim \mathcal N(0, \text{target\_scale}^2)$,
    so that every TP target exists and lies inside tanh's range.
    Returns ``(params, x, y)``; :func:`tp_targets` recovers $x'$ as $t_0$.
    """

    if not float(spread) >= 1.0:
        raise ValueError(f"spread must be >= 1 (the largest singular value over the gain); got {spread!r}")
    keys = jax.random.split(jax.random.key(seed), 4 * n_layers + 2)

    def orthogonal(k):
        q, r = jnp.linalg.qr(jax.random.normal(k, (width, width)))
        return q * jnp.sign(jnp.diag(r))

    params = []
    for l in range(n_layers):
        W = orthogonal(keys[l])
        if spread > 1.0:
            s = jnp.exp(jax.random.uniform(keys[2 * n_layers + l], (width,), minval=-1.0, maxval=1.0) * jnp.log(spread))
            W = (W * s) @ orthogonal(keys[3 * n_layers + l]).T
        params.append({"W": gain * W, "b": bias_scale * jax.random.normal(keys[n_layers + l], (width,))})
    x = jax.random.normal(keys[-2], (n, width))
    x_target = target_scale * jax.random.normal(keys[-1], (n, width))
    return params, x, predict(params, x_target, act=act, out_act=out_act)
