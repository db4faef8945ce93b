r"""The predictive-coding energy, the backprop loss, and their decomposition.

Conventions (stated once in the book's chapter 1). For a batch of $N$ samples,

$$\mathcal F = \frac1N \sum_{i=1}^N \sum_{l=1}^L \frac{\pi_l}{2} \lVert \varepsilon_{l,i} \rVert^2,
\qquad \varepsilon_l = z_l - f_l(W_l z_{l-1} + b_l),$$

with scalar precisions $\pi_l$ (default 1), or, more generally, matrix precisions: $\Pi_l$ symmetric positive
definite, $(d_l, d_l)$, and the term $\frac12\varepsilon_{l,i}^\top\Pi_l\varepsilon_{l,i}$ (Millidge et al. 2022,
Sec. 3.2; $\pi_l$ is the case $\Pi_l = \pi_l I$), and

$$\mathcal L = \frac1N \sum_{i=1}^N \frac12 \lVert y_i - \hat y_i \rVert^2 .$$

Millidge et al. (2022) write $\mathcal F = \sum_l \varepsilon_l^2$ with no $\tfrac12$, summed over samples;
their dynamics and learning rule (Eqs. 1, 2) are the derivatives of $\tfrac12\sum_l\varepsilon_l^2$,
i.e. ours per sample, and their batch gradients are $N$ times ours. No equilibrium moves.

The energy splits as $\mathcal F = \mathcal L(z) + \tilde E$ with $\mathcal L(z)$ the output
layer's term and $\tilde E$ the hidden layers' terms (Millidge et al. 2022, Eq. 12). With the
output clamped to $y$ and $\pi_L = 1$, $\mathcal L(z)$ is the loss of the prediction made
from $z_{L-1}$; at the feedforward pass it equals the backprop loss.

Every function here takes ``param``: ``"standard"`` (the predictions above) or ``"mupc"``, the scaled residual
predictions of μPC (:func:`pclib.model.mupc_predictors`) in the same energy.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from .model import (
    Activation, Array, Params, check_data, check_param, check_params, layer_activations, mupc_predictors, preactivation,
    static_options, widths_of,
)

_STATIC = ("act", "out_act", "param")


def _check_activities(params: Params, activities: Sequence[Array]) -> None:
    if len(activities) != len(params) + 1:
        raise ValueError(
            f"activities must list one array per layer, input and output included "
            f"({len(params) + 1} for a {len(params)}-layer network); got {len(activities)}"
        )
    widths = [params[0]["W"].shape[1]] + [layer["W"].shape[0] for layer in params]
    for l, (z, d) in enumerate(zip(activities, widths)):
        if jnp.ndim(z) != 2 or jnp.shape(z)[1] != d:
            raise ValueError(f"activities[{l}] must have shape (N, {d}); got {tuple(jnp.shape(z))}")


_SCALAR_SHAPE_HELP = "one scalar per layer, shape ({L},), or a list of {L} entries, each a scalar or a (d_l, d_l) matrix"


def is_matrix_form(precisions: Any) -> bool:
    """Whether ``precisions`` is a list (or tuple) of per-layer precisions with at least one matrix entry;
    such precisions take the matrix code path, every other form the scalar one."""
    return isinstance(precisions, (list, tuple)) and any(jnp.ndim(p) == 2 for p in precisions)


def _symmetry_tol(P: np.ndarray, dtype: Any) -> float:
    eps = np.finfo(dtype).eps if np.issubdtype(dtype, np.floating) else np.finfo(np.float64).eps
    return float(np.sqrt(eps)) * max(1.0, float(np.max(np.abs(P))))


def precision_matrices(precisions: Sequence[Any], widths: Sequence[int]) -> tuple[Array, ...]:
    r"""Validate matrix-form precisions and return them as one $(d_l, d_l)$ matrix per layer $l = 1..L$.

    ``precisions`` lists one entry per weight layer, each a scalar $\pi_l$ (taken as $\pi_l I$) or a
    matrix $\Pi_l$ of shape ``(d_l, d_l)``, ``widths = [d_0, ..., d_L]``. A matrix must be symmetric (up to
    $\sqrt{\epsilon}$ of its largest entry; it is then symmetrised) and positive definite, as the inverse of a
    covariance is. The value checks run only on concrete values (outside ``jit``).

    Raises
    ------
    ValueError
        For a wrong number of entries, a wrong shape, a non-symmetric or a non-positive-definite matrix,
        naming the layer and the fix.
    """
    L = len(widths) - 1
    if len(precisions) != L:
        raise ValueError(
            f"precisions must list one entry per weight layer ({L} for a {L}-layer network), each a scalar or a "
            f"(d_l, d_l) symmetric positive definite matrix; got {len(precisions)} entries"
        )
    out = []
    for i, (p, d) in enumerate(zip(precisions, widths[1:])):
        l = i + 1
        if jnp.ndim(p) == 0:
            out.append(jnp.asarray(p) * jnp.eye(d, dtype=jnp.result_type(p, float)))
            continue
        if jnp.shape(p) != (d, d):
            raise ValueError(
                f"precisions[{i}] (layer {l}, width {d}) must be a scalar or a ({d}, {d}) matrix, one row and "
                f"column per unit of layer {l}; got shape {tuple(jnp.shape(p))}"
            )
        p = p if isinstance(p, jax.Array) else jnp.asarray(p)
        if not isinstance(p, jax.core.Tracer):
            P = np.asarray(p, dtype=np.float64)
            if not np.all(np.isfinite(P)):
                raise ValueError(f"precisions[{i}] (layer {l}) has NaN or inf entries")
            asym = float(np.max(np.abs(P - P.T)))
            if asym > _symmetry_tol(P, np.dtype(p.dtype)):
                raise ValueError(
                    f"precisions[{i}] (layer {l}) is not symmetric: max |P - P^T| = {asym:.3g}. A precision matrix "
                    f"is the inverse of a covariance, which is symmetric: pass (P + P.T) / 2"
                )
            lam = float(np.linalg.eigvalsh(0.5 * (P + P.T))[0])
            if not lam > 0:
                raise ValueError(
                    f"precisions[{i}] (layer {l}) is not positive definite: its smallest eigenvalue is {lam:.3g}. "
                    f"Pass the inverse of a positive definite covariance, or add a multiple of the identity "
                    f"(P + c I with c > {-lam:.3g})"
                )
        out.append(0.5 * (p + p.T))
    return tuple(out)


def precision_argument(precisions: Any, params: Params) -> Any:
    """Precisions as an argument of a compiled function: ``None`` stays ``None`` (all ones), matrix-form
    precisions become a tuple of ``(d_l, d_l)`` matrices (:func:`precision_matrices`), anything else an
    array of shape ``(L,)``, all checked here, outside the compiled code."""
    if precisions is None:
        return None
    n_layers = len(params)
    if is_matrix_form(precisions):
        return precision_matrices(precisions, widths_of(params))
    p = precisions if isinstance(precisions, jax.Array) else jnp.asarray(precisions)
    if np.shape(p) != (n_layers,):
        raise ValueError(
            f"precisions must hold {_SCALAR_SHAPE_HELP.format(L=n_layers)}; got shape {np.shape(p)}"
        )
    return p


def as_precisions(precisions: Any, n_layers: int, dtype: Any = None) -> Array:
    """Scalar precisions as an array of shape ``(L,)``; ``None`` means all ones.

    For the functions that take only scalar precisions: matrix-form precisions raise a ``ValueError``.
    """
    if precisions is None:
        return jnp.ones((n_layers,), dtype)
    if is_matrix_form(precisions):
        raise ValueError(
            "this function takes scalar precisions only, one per layer, shape "
            f"({n_layers},); matrix precisions work in pclib.energy, pclib.infer, pclib.pc_grads, "
            "pclib.theory.equilibrium and the closed forms of pclib.theory.linear"
        )
    p = jnp.asarray(precisions, dtype)
    if p.shape != (n_layers,):
        raise ValueError(
            f"precisions must hold one scalar per layer, shape ({n_layers},); got shape {p.shape}"
        )
    return p


def layer_precisions(precisions: Any, n_layers: int, dtype: Any = None) -> Union[Array, tuple]:
    """Inside compiled code: already-checked precisions as ``(L,)`` scalars (:func:`as_precisions`) or,
    in matrix form, a tuple of ``(d_l, d_l)`` matrices in ``dtype``."""
    if is_matrix_form(precisions):
        return tuple(jnp.asarray(p, dtype) for p in precisions)
    return as_precisions(precisions, n_layers, dtype)


def precision_scales(precisions: Any) -> list[float]:
    r"""The size of each layer's precision: $\pi_l$, or the largest eigenvalue of $\Pi_l$ (concrete values)."""
    if is_matrix_form(precisions):
        return [float(np.max(np.linalg.eigvalsh(np.atleast_2d(np.asarray(p, np.float64))))) if jnp.ndim(p) == 2
                else float(p) for p in precisions]
    return [float(v) for v in np.asarray(precisions, dtype=np.float64).reshape(-1)]


def weighted_square(e: Array, p: Array) -> Array:
    r"""Each sample's $\frac12 \varepsilon_i^\top \Pi \varepsilon_i$ for errors ``e`` of shape ``(N, d)``: shape ``(N,)``.
    ``p`` is a scalar $\pi$ ($\Pi = \pi I$) or a symmetric ``(d, d)`` matrix."""
    if jnp.ndim(p) == 2:
        return 0.5 * jnp.sum((e @ p) * e, axis=1)
    return 0.5 * p * jnp.sum(e**2, axis=1)


def predictions(
    params: Params, activities: Sequence[Array], *, act: Activation = "tanh", out_act: Activation = "linear",
    param: str = "standard",
) -> list[Array]:
    r"""Top-down predictions $\mu_l = f_l(W_l z_{l-1} + b_l)$ for $l = 1..L$ (``param="mupc"``: those of
    :func:`pclib.model.mupc_predictors`)."""
    check_param(param, params)
    if param != "standard":
        return [mu(layer, z) for layer, mu, z in zip(params, mupc_predictors(params, act=act, out_act=out_act),
                                                     activities[:-1])]
    fs = layer_activations(len(params), act=act, out_act=out_act)
    return [f(preactivation(layer, z)) for layer, f, z in zip(params, fs, activities[:-1])]


def _errors(params: Params, activities: Sequence[Array], *, act: Activation, out_act: Activation,
            param: str = "standard") -> list[Array]:
    mus = predictions(params, activities, act=act, out_act=out_act, param=param)
    return [z - mu for z, mu in zip(activities[1:], mus)]


_errors_jit = jax.jit(_errors, static_argnames=_STATIC)


def errors(
    params: Params, activities: Sequence[Array], *, act: Activation = "tanh", out_act: Activation = "linear",
    param: str = "standard",
) -> list[Array]:
    r"""Prediction errors $\varepsilon_l = z_l - \mu_l$ for $l = 1..L$, each of shape ``(N, d_l)``.

    Compiled once per shape and activation (the checks run before, outside the compiled code).
    """
    check_params(params)
    check_param(param, params)
    _check_activities(params, activities)
    fn = _errors_jit if static_options(act, out_act) else _errors
    return fn(params, list(activities), act=act, out_act=out_act, param=param)


def sample_layer_energies(
    params: Params,
    activities: Sequence[Array],
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    param: str = "standard",
) -> Array:
    r"""Every sample's energy in every layer, $\frac{\pi_l}{2}\lVert\varepsilon_{l,i}\rVert^2$: shape ``(N, L)``.

    ``precisions``: ``None`` (all ones), one scalar per layer (shape ``(L,)``), or a list with one entry per
    layer, each a scalar or a symmetric positive definite ``(d_l, d_l)`` matrix $\Pi_l$; a matrix makes the
    term $\frac12\varepsilon_{l,i}^\top\Pi_l\varepsilon_{l,i}$ (:func:`precision_matrices` checks it).

    :func:`layer_energies` averages it over samples and :func:`sample_energies` sums it over layers.
    """
    check_params(params)
    check_param(param, params)
    _check_activities(params, activities)
    return _sample_layer_energies(params, activities, act=act, out_act=out_act, precisions=precisions, param=param)


def _sample_layer_energies(params, activities, *, act, out_act, precisions, param="standard"):
    eps = _errors(params, activities, act=act, out_act=out_act, param=param)
    if is_matrix_form(precisions):
        Ps = precision_matrices(precisions, widths_of(params))
        return jnp.stack([weighted_square(e, P.astype(e.dtype)) for e, P in zip(eps, Ps)], axis=1)
    pi = as_precisions(precisions, len(params), eps[0].dtype)
    return 0.5 * pi * jnp.stack([jnp.sum(e**2, axis=1) for e in eps], axis=1)


def layer_energies(params: Params, activities: Sequence[Array], **options: Any) -> Array:
    r"""Per-layer energies $\frac1N\sum_i \frac{\pi_l}{2}\lVert\varepsilon_{l,i}\rVert^2$, shape ``(L,)``.

    Keyword options (``act``, ``out_act``, ``precisions``, ``param``) as in :func:`sample_layer_energies`.
    """
    return jnp.mean(sample_layer_energies(params, activities, **options), axis=0)


def sample_energies(params: Params, activities: Sequence[Array], **options: Any) -> Array:
    r"""Each sample's own energy $F_i = \sum_l \frac{\pi_l}{2}\lVert\varepsilon_{l,i}\rVert^2$, shape ``(N,)``.

    Keyword options (``act``, ``out_act``, ``precisions``, ``param``) as in :func:`sample_layer_energies`.
    """
    return jnp.sum(sample_layer_energies(params, activities, **options), axis=1)


def layer_energy_trace(
    params: Params,
    trajectory: Sequence[Array],
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    param: str = "standard",
) -> Array:
    """:func:`layer_energies` at every step of a recorded trajectory (``infer(..., record=True)``):
    shape ``(T, L)``."""
    return jax.vmap(lambda zs: layer_energies(params, zs, act=act, out_act=out_act, precisions=precisions,
                                              param=param))(
        list(trajectory)
    )


def _energy(params, activities, precisions, *, act, out_act, param="standard"):
    return jnp.sum(jnp.mean(_sample_layer_energies(params, activities, act=act, out_act=out_act,
                                                   precisions=precisions, param=param), axis=0))


_energy_jit = jax.jit(_energy, static_argnames=_STATIC)


def energy(
    params: Params,
    activities: Sequence[Array],
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    param: str = "standard",
) -> Array:
    r"""The energy $\mathcal F = \frac1N\sum_i F_i$ (a scalar).

    Compiled once per shape and activation; ``precisions`` is an argument, not a compile-time constant.
    """
    check_params(params)
    check_param(param, params)
    _check_activities(params, activities)
    pi = precision_argument(precisions, params)
    fn = _energy_jit if static_options(act, out_act) else _energy
    return fn(params, list(activities), pi, act=act, out_act=out_act, param=param)


def energy_decomposition(
    params: Params,
    activities: Sequence[Array],
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    param: str = "standard",
) -> tuple[Array, Array]:
    r"""Split $\mathcal F = \mathcal L(z) + \tilde E$ (Millidge et al. 2022, Eq. 12).

    Returns ``(output_term, residual)``: the output layer's energy and the hidden layers' sum.
    """
    e = layer_energies(params, activities, act=act, out_act=out_act, precisions=precisions, param=param)
    return e[-1], jnp.sum(e[:-1])


def mse_loss(
    params: Params, x: Array, y: Array, *, act: Activation = "tanh", out_act: Activation = "linear",
    param: str = "standard",
) -> Array:
    r"""The backprop loss $\mathcal L = \frac1N\sum_i \frac12\lVert y_i - \hat y_i\rVert^2$.

    Compiled once per shape and activation (the checks run before, outside the compiled code).
    """
    check_params(params)
    check_param(param, params)
    check_data(params, x, y)
    fn = _mse_loss_jit if static_options(act, out_act) else _mse_loss
    return fn(params, x, y, act=act, out_act=out_act, param=param)


def _mse_loss(params: Params, x: Array, y: Array, *, act: Activation, out_act: Activation,
              param: str = "standard") -> Array:
    """:func:`mse_loss` without the checks, for use inside compiled code."""
    z = jnp.asarray(x)
    if param != "standard":
        check_param(param, params)
        for layer, mu in zip(params, mupc_predictors(params, act=act, out_act=out_act)):
            z = mu(layer, z)
        return 0.5 * jnp.sum((jnp.asarray(y) - z) ** 2) / z.shape[0]
    for layer, f in zip(params, layer_activations(len(params), act=act, out_act=out_act)):
        z = f(preactivation(layer, z))
    return 0.5 * jnp.sum((jnp.asarray(y) - z) ** 2) / z.shape[0]


_mse_loss_jit = jax.jit(_mse_loss, static_argnames=_STATIC)


# --- chapter 2: EM view ---


def energy_gradient_split(
    params: Params,
    activities: Sequence[Array],
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    param: str = "standard",
) -> tuple[list[Array], list[Array]]:
    r"""The activity gradients of the two parts of $\mathcal F = \mathcal L(z) + \tilde E$ (Eq. 12 of
    Millidge et al. 2022), in the hidden layers $z_1, \dots, z_{L-1}$.

    Gradients are of the summed per-sample energies $\sum_i$ (not the batch mean), so that row $i$ is
    sample $i$'s own gradient, the force that :func:`pclib.infer` applies to it. Because
    $\mathcal L(z)$ is the output layer's term, $\partial\mathcal L/\partial z_l = 0$ for $l < L-1$.

    Returns ``(grad_L, grad_E)``, two lists of ``L - 1`` arrays shaped like ``activities[1:-1]``.
    """
    check_params(params)
    _check_activities(params, activities)
    if len(params) < 2:
        raise ValueError("energy_gradient_split needs at least one hidden layer (a network with >= 2 layers)")
    n = jnp.shape(activities[0])[0]
    ends = (activities[0], activities[-1])

    def parts(hidden):
        full = [ends[0], *hidden, ends[1]]
        out, res = energy_decomposition(params, full, act=act, out_act=out_act, precisions=precisions, param=param)
        return n * out, n * res

    hidden = list(activities[1:-1])
    grad_L = jax.grad(lambda h: parts(h)[0])(hidden)
    grad_E = jax.grad(lambda h: parts(h)[1])(hidden)
    return grad_L, grad_E
