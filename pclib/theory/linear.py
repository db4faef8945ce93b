r"""Closed forms for *linear* PCNs: the activity Hessian, the equilibrium, one layer's exact flow,
and the equilibrated energy with its covariance $S$.

Linear networks (Millidge et al. 2022, Thm 3.4/3.5 and App. A.3/A.4). For $f_l = \mathrm{id}$
the per-sample energy is a convex quadratic in the hidden activities
$z = (z_1, \dots, z_{L-1})$. Its gradient in $z_l$ is

$$\pi_l(z_l - W_l z_{l-1} - b_l) - \pi_{l+1} W_{l+1}^\top (z_{l+1} - W_{l+1} z_l - b_{l+1}),$$

so the equilibrium solves one block-tridiagonal linear system $H z = r$ with

$$H_{ll} = \pi_l I + \pi_{l+1} W_{l+1}^\top W_{l+1}, \quad H_{l,l-1} = -\pi_l W_l, \quad
H_{l,l+1} = -\pi_{l+1} W_{l+1}^\top .$$

$H$ is the Hessian of the energy in the activities: it does not depend on the activities and
is positive definite, so the equilibrium is unique. Setting the other layers to their
equilibrium values recovers Millidge et al.'s layerwise form
$z_l^* = (I + \pi_l^{-1}\pi_{l+1} W_{l+1}^\top W_{l+1})^{-1}[W_l z_{l-1}^* + \pi_l^{-1}\pi_{l+1} W_{l+1}^\top z_{l+1}^*]$
(with zero biases).

Every function here also takes matrix precisions (a list with one scalar or symmetric positive definite
$(d_l, d_l)$ matrix $\Pi_l$ per layer; :func:`pclib.energy.precision_matrices`): then

$$H_{ll} = \Pi_l + W_{l+1}^\top \Pi_{l+1} W_{l+1}, \quad H_{l,l-1} = -\Pi_l W_l, \quad
H_{l,l+1} = -W_{l+1}^\top \Pi_{l+1},$$

and the layerwise form is Millidge et al.'s Theorem 3.5,
$z_l^* = (I + \Pi_l^{-1} W_{l+1}^\top \Pi_{l+1} W_{l+1})^{-1}[W_l z_{l-1}^* + \Pi_l^{-1} W_{l+1}^\top\Pi_{l+1} z_{l+1}^*]$.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from ..energy import _energy, layer_precisions, precision_argument
from ..model import Array, Params, check_data, check_params, preactivation


def _bias(layer: dict, dtype) -> Array:
    b = layer.get("b")
    return jnp.zeros((layer["W"].shape[0],), dtype) if b is None else b


def linear_activity_hessian(params: Params, *, precisions: Any = None) -> Array:
    r"""The Hessian $H$ of a sample's energy in the hidden activities of a *linear* PCN.

    Shape ``(D, D)`` with $D = d_1 + \dots + d_{L-1}$, blocks ordered by layer.
    Its diagonal blocks are $\pi_l I + \pi_{l+1} W_{l+1}^\top W_{l+1}$ (Millidge et al. 2022, Eq. 28).
    """
    check_params(params)
    return _linear_activity_hessian_jit(params, precision_argument(precisions, params))


def _linear_activity_hessian(params: Params, precisions: Any) -> Array:
    L = len(params)
    dtype = params[0]["W"].dtype
    pi = layer_precisions(precisions, L, dtype)
    matrices = isinstance(pi, tuple)
    dims = [p["W"].shape[0] for p in params[:-1]]
    offs = [sum(dims[:i]) for i in range(len(dims) + 1)]
    H = jnp.zeros((offs[-1], offs[-1]), dtype)
    for i in range(L - 1):  # hidden layer l = i + 1
        W_up = params[i + 1]["W"]
        s = slice(offs[i], offs[i + 1])
        if matrices:  # Pi_l + W^T Pi_{l+1} W on the diagonal, -W^T Pi_{l+1} and -Pi_{l+1} W beside it
            PW = pi[i + 1] @ W_up
            H = H.at[s, s].set(pi[i] + W_up.T @ PW)
            up_block, down_block = -PW.T, -PW
        else:
            H = H.at[s, s].set(pi[i] * jnp.eye(dims[i], dtype=dtype) + pi[i + 1] * W_up.T @ W_up)
            up_block, down_block = -pi[i + 1] * W_up.T, -pi[i + 1] * W_up
        if i + 1 < L - 1:
            s_up = slice(offs[i + 1], offs[i + 2])
            H = H.at[s, s_up].set(up_block)
            H = H.at[s_up, s].set(down_block)
    return H


_linear_activity_hessian_jit = jax.jit(_linear_activity_hessian)


def linear_equilibrium(params: Params, x: Array, y: Array, *, precisions: Any = None) -> list[Array]:
    r"""Exact inference equilibrium of a linear PCN with input $x$ and output $y$ clamped.

    A direct linear solve (Cholesky) of $H z^* = r$, not an iteration; see the module docstring.
    Millidge et al. (2022), Theorems 3.4 (unit precisions) and 3.5 (precisions, scalar or matrix).

    Returns
    -------
    ``[x, z_1*, ..., z_{L-1}*, y]``, aligned with :func:`pclib.forward`'s activities.
    """
    check_params(params)
    check_data(params, x, y)
    pi = precision_argument(precisions, params)
    return _linear_equilibrium_jit(params, x, y, pi)


def _linear_equilibrium(params: Params, x: Array, y: Array, precisions: Any) -> list[Array]:
    """:func:`linear_equilibrium` without the checks (compiled below, once per shape)."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    L = len(params)
    if L == 1:
        return [x, y]
    dtype = params[0]["W"].dtype
    pi = layer_precisions(precisions, L, dtype)
    matrices = isinstance(pi, tuple)
    rhs = []
    for i in range(L - 1):  # hidden layer l = i + 1, predicted by params[i], predicting via params[i + 1]
        lo, up = params[i], params[i + 1]
        if matrices:  # rows: r_l = Pi_l (b_l [+ W_1 x]) - W_{l+1}^T Pi_{l+1} (b_{l+1} [- y]), Pi symmetric
            r = _bias(lo, dtype) @ pi[i] - _bias(up, dtype) @ pi[i + 1] @ up["W"]
            r = jnp.broadcast_to(r, (x.shape[0],) + r.shape)
            if i == 0:
                r = r + x @ lo["W"].T @ pi[0]
            if i == L - 2:
                r = r + y @ pi[L - 1] @ up["W"]
        else:
            r = pi[i] * _bias(lo, dtype) - pi[i + 1] * up["W"].T @ _bias(up, dtype)
            r = jnp.broadcast_to(r, (x.shape[0],) + r.shape)
            if i == 0:
                r = r + pi[0] * x @ lo["W"].T
            if i == L - 2:
                r = r + pi[L - 1] * y @ up["W"]
        rhs.append(r)
    H = _linear_activity_hessian(params, pi)
    z = jsl.cho_solve(jsl.cho_factor(H), jnp.concatenate(rhs, axis=1).T).T
    sizes = [p["W"].shape[0] for p in params[:-1]]
    splits = [sum(sizes[: i + 1]) for i in range(len(sizes) - 1)]
    return [x] + list(jnp.split(z, splits, axis=1)) + [y]


_linear_equilibrium_jit = jax.jit(_linear_equilibrium)


def layer_flow(
    params: Params, activities: Sequence[Array], layer: int, times: Array, *, precisions: Any = None
) -> Array:
    r"""Exact continuous-time inference path of one layer of a linear PCN, its neighbours held fixed.

    With $z_{l-1}$ and $z_{l+1}$ fixed, $\dot z_l = -\partial F/\partial z_l = -A z_l + c$ with
    $A = \pi_l I + \pi_{l+1} W_{l+1}^\top W_{l+1}$ ($\Pi_l + W_{l+1}^\top\Pi_{l+1}W_{l+1}$ with matrix precisions), so

    $$z_l(t) = z_l^\star + e^{-A t}\,\big(z_l(0) - z_l^\star\big), \qquad z_l^\star = A^{-1} c .$$

    This is exact for the hidden layer of a two-layer network with both ends clamped
    (Millidge et al. 2022, App. A.4, whose Eq. 30 flips the sign of the drift, so Eq. 31 grows).
    $A$ is symmetric, so $e^{-At} = Q\,\mathrm{diag}(e^{-\lambda_k t})\,Q^\top$ from its eigendecomposition
    $A = Q\,\mathrm{diag}(\lambda_k)\,Q^\top$: every time at once, in one compiled program per shape.

    Returns an array of shape ``(len(times), N, d_l)`` starting from ``activities[layer]``.
    """
    check_params(params)
    if not 1 <= layer <= len(params) - 1:
        raise ValueError(f"layer must be a hidden layer, 1..{len(params) - 1}; got {layer}")
    dtype = params[0]["W"].dtype
    z = [jnp.asarray(activities[i], dtype) for i in (layer - 1, layer, layer + 1)]
    return _layer_flow(params, precision_argument(precisions, params), *z, jnp.asarray(times, dtype), layer=layer)


@partial(jax.jit, static_argnames=("layer",))
def _layer_flow(params: Params, precisions: Any, z_below: Array, z_l: Array, z_above: Array, times: Array, *,
                layer: int) -> Array:
    dtype = z_l.dtype
    pi = layer_precisions(precisions, len(params), dtype)
    lo, up = params[layer - 1], params[layer]
    if isinstance(pi, tuple):  # A = Pi_l + W^T Pi_{l+1} W, c = Pi_l (W_l z_{l-1} + b_l) + W^T Pi_{l+1} (z_{l+1} - b_{l+1})
        A = pi[layer - 1] + up["W"].T @ pi[layer] @ up["W"]
        c = preactivation(lo, z_below) @ pi[layer - 1] + (z_above - _bias(up, dtype)) @ pi[layer] @ up["W"]
    else:
        A = pi[layer - 1] * jnp.eye(lo["W"].shape[0], dtype=dtype) + pi[layer] * up["W"].T @ up["W"]
        c = pi[layer - 1] * preactivation(lo, z_below) + pi[layer] * (z_above - _bias(up, dtype)) @ up["W"]
    z_star = jnp.linalg.solve(A, c.T).T
    lam, Q = jnp.linalg.eigh(A)
    decay = jnp.exp(-jnp.outer(times, lam))  # (T, d): e^{-lambda_k t}
    return z_star + jnp.einsum("nk,tk,jk->tnj", (z_l - z_star) @ Q, decay, Q)


def linear_equilibrated_energy(params: Params, x: Array, y: Array, *, precisions: Any = None) -> Array:
    r"""$\mathcal F^*(\theta) = \min_z \mathcal F(z;\theta)$ for a *linear* PCN, via :func:`linear_equilibrium`.

    Differentiable in ``params``: by the envelope theorem (chapter 2),
    $\nabla_\theta\mathcal F^* = \partial_\theta\mathcal F(z^*;\theta)$, PC's weight gradient at the
    exact equilibrium. $\mathcal F^* \le \pi_L\,\mathcal L(\theta)$, with $\mathcal L$ the feedforward loss (chapter 2).
    """
    check_params(params)
    check_data(params, x, y)
    return _linear_equilibrated_energy_jit(params, x, y, precision_argument(precisions, params))


def _linear_equilibrated_energy(params: Params, x: Array, y: Array, precisions: Any) -> Array:
    z = _linear_equilibrium(params, x, y, precisions)
    return _energy(params, z, precisions, act="linear", out_act="linear")


_linear_equilibrated_energy_jit = jax.jit(_linear_equilibrated_energy)


def _linear_output(params: Params, x: Array) -> Array:
    """The feedforward output of the *linear* network (biases included)."""
    z = x
    for layer in params:
        z = preactivation(layer, z)
    return z


def equilibrium_covariance(params: Params, *, precisions: Any = None) -> Array:
    r"""The matrix $S$ of the equilibrated energy of a linear PCN, shape ``(d_L, d_L)``.

    $$S = \sum_{\ell=1}^{L} \pi_\ell^{-1} M_\ell M_\ell^\top, \qquad M_\ell = W_L W_{L-1}\cdots W_{\ell+1},
    \quad M_L = I,$$

    which for unit precisions is $I + \sum_{\ell=2}^{L}(W_L\cdots W_\ell)(W_L\cdots W_\ell)^\top$
    (Innocenti et al. 2024, Thm 1). It is the covariance of the output under the generative model
    $z_\ell = W_\ell z_{\ell-1} + b_\ell + \varepsilon_\ell$, $\varepsilon_\ell \sim \mathcal N(0, \pi_\ell^{-1} I)$,
    given the input, and is positive definite ($S \succeq \pi_L^{-1} I$). With matrix precisions the noise of
    layer $\ell$ has covariance $\Pi_\ell^{-1}$ and $S = \sum_\ell M_\ell\Pi_\ell^{-1}M_\ell^\top$.
    """
    check_params(params)
    return _equilibrium_covariance_jit(params, precision_argument(precisions, params))


def _equilibrium_covariance(params: Params, precisions: Any) -> Array:
    L = len(params)
    dtype = params[0]["W"].dtype
    pi = layer_precisions(precisions, L, dtype)
    d = params[-1]["W"].shape[0]
    M = jnp.eye(d, dtype=dtype)
    if isinstance(pi, tuple):  # S = sum_l M_l Pi_l^{-1} M_l^T
        S = jnp.linalg.inv(pi[L - 1])
        for l in range(L - 1, 0, -1):
            M = M @ params[l]["W"]
            S = S + M @ jnp.linalg.solve(pi[l - 1], M.T)
        return 0.5 * (S + S.T)
    S = M / pi[L - 1]
    for l in range(L - 1, 0, -1):  # M_l = W_L ... W_{l+1}; params[l] is W_{l+1}
        M = M @ params[l]["W"]
        S = S + (M @ M.T) / pi[l - 1]
    return S


_equilibrium_covariance_jit = jax.jit(_equilibrium_covariance)


def equilibrated_energy(params: Params, x: Array, y: Array, *, precisions: Any = None) -> Array:
    r"""The energy of a *linear* PCN at its inference equilibrium, in closed form (no inference).

    $$\mathcal F^* = \frac{1}{2N}\sum_{i=1}^N r_i^\top S^{-1} r_i, \qquad r_i = y_i - \hat y_i,$$

    with $S$ from :func:`equilibrium_covariance` and $\hat y_i$ the feedforward output
    (Innocenti et al. 2024, Thm 1, there without biases: $r_i = y_i - W_L\cdots W_1 x_i$).
    Biases are supported: they shift the output by the propagated bias, which the feedforward
    output $\hat y_i$ includes, and leave $S$ unchanged. It is the MSE rescaled by $S^{-1}$, computed
    as $\frac12\operatorname{tr}(S^{-1}\Sigma_{rr})$ with $\Sigma_{rr} = \frac1N\sum_i r_ir_i^\top$: one
    $d_L\times d_L$ linear solve with $d_L$ right-hand sides, not $N$ (a solve with $N$ right-hand sides
    is slow on CPU under ``vmap``, and LU's derivatives compile faster than Cholesky's). The activation
    is the identity throughout; for nonlinear networks run :func:`pclib.infer`.
    """
    check_params(params)
    check_data(params, x, y)
    return _equilibrated_energy_jit(params, x, y, precision_argument(precisions, params))


def _equilibrated_energy(params: Params, x: Array, y: Array, precisions: Any) -> Array:
    x, y = jnp.asarray(x), jnp.asarray(y)
    r = y - _linear_output(params, x)
    S = _equilibrium_covariance(params, precisions)
    Srr = r.T @ r / r.shape[0]
    return 0.5 * jnp.trace(jnp.linalg.solve(S, Srr))


_equilibrated_energy_jit = jax.jit(_equilibrated_energy)
