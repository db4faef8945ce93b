r"""Closed forms that the chapters compare against iterative inference.

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
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from .energy import as_precisions
from .model import Activation, Array, Params, check_data, check_params, layer_activations, preactivation


def _bias(layer: dict, dtype) -> Array:
    b = layer.get("b")
    return jnp.zeros((layer["W"].shape[0],), dtype) if b is None else b


def linear_activity_hessian(params: Params, *, precisions: Any = None) -> Array:
    r"""The Hessian $H$ of a sample's energy in the hidden activities of a *linear* PCN.

    Shape ``(D, D)`` with $D = d_1 + \dots + d_{L-1}$, blocks ordered by layer.
    Its diagonal blocks are $\pi_l I + \pi_{l+1} W_{l+1}^\top W_{l+1}$ (Millidge et al. 2022, Eq. 28).
    """
    check_params(params)
    L = len(params)
    dtype = params[0]["W"].dtype
    pi = as_precisions(precisions, L, dtype)
    dims = [p["W"].shape[0] for p in params[:-1]]
    offs = [sum(dims[:i]) for i in range(len(dims) + 1)]
    H = jnp.zeros((offs[-1], offs[-1]), dtype)
    for i in range(L - 1):  # hidden layer l = i + 1
        W_up = params[i + 1]["W"]
        s = slice(offs[i], offs[i + 1])
        H = H.at[s, s].set(pi[i] * jnp.eye(dims[i], dtype=dtype) + pi[i + 1] * W_up.T @ W_up)
        if i + 1 < L - 1:
            s_up = slice(offs[i + 1], offs[i + 2])
            H = H.at[s, s_up].set(-pi[i + 1] * W_up.T)
            H = H.at[s_up, s].set(-pi[i + 1] * W_up)
    return H


def linear_equilibrium(params: Params, x: Array, y: Array, *, precisions: Any = None) -> list[Array]:
    r"""Exact inference equilibrium of a linear PCN with input $x$ and output $y$ clamped.

    A direct linear solve (Cholesky) of $H z^* = r$, not an iteration; see the module docstring.
    Millidge et al. (2022), Theorems 3.4 (unit precisions) and 3.5 (scalar precisions).

    Returns
    -------
    ``[x, z_1*, ..., z_{L-1}*, y]``, aligned with :func:`pclib.forward`'s activities.
    """
    check_params(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    L = len(params)
    if L == 1:
        return [x, y]
    dtype = params[0]["W"].dtype
    pi = as_precisions(precisions, L, dtype)
    rhs = []
    for i in range(L - 1):  # hidden layer l = i + 1, predicted by params[i], predicting via params[i + 1]
        lo, up = params[i], params[i + 1]
        r = pi[i] * _bias(lo, dtype) - pi[i + 1] * up["W"].T @ _bias(up, dtype)
        r = jnp.broadcast_to(r, (x.shape[0],) + r.shape)
        if i == 0:
            r = r + pi[0] * x @ lo["W"].T
        if i == L - 2:
            r = r + pi[L - 1] * y @ up["W"]
        rhs.append(r)
    H = linear_activity_hessian(params, precisions=pi)
    z = jsl.cho_solve(jsl.cho_factor(H), jnp.concatenate(rhs, axis=1).T).T
    sizes = [p["W"].shape[0] for p in params[:-1]]
    splits = [sum(sizes[: i + 1]) for i in range(len(sizes) - 1)]
    return [x] + list(jnp.split(z, splits, axis=1)) + [y]


def layer_flow(
    params: Params, activities: Sequence[Array], layer: int, times: Array, *, precisions: Any = None
) -> Array:
    r"""Exact continuous-time inference path of one layer of a linear PCN, its neighbours held fixed.

    With $z_{l-1}$ and $z_{l+1}$ fixed, $\dot z_l = -\partial F/\partial z_l = -A z_l + c$ with
    $A = \pi_l I + \pi_{l+1} W_{l+1}^\top W_{l+1}$, so

    $$z_l(t) = z_l^\star + e^{-A t}\,\big(z_l(0) - z_l^\star\big), \qquad z_l^\star = A^{-1} c .$$

    This is exact for the hidden layer of a two-layer network with both ends clamped
    (Millidge et al. 2022, App. A.4, whose Eq. 30 flips the sign of the drift, so Eq. 31 grows).

    Returns an array of shape ``(len(times), N, d_l)`` starting from ``activities[layer]``.
    """
    check_params(params)
    if not 1 <= layer <= len(params) - 1:
        raise ValueError(f"layer must be a hidden layer, 1..{len(params) - 1}; got {layer}")
    dtype = params[0]["W"].dtype
    pi = as_precisions(precisions, len(params), dtype)
    lo, up = params[layer - 1], params[layer]
    A = pi[layer - 1] * jnp.eye(lo["W"].shape[0], dtype=dtype) + pi[layer] * up["W"].T @ up["W"]
    c = pi[layer - 1] * preactivation(lo, activities[layer - 1]) + pi[layer] * (
        activities[layer + 1] - _bias(up, dtype)
    ) @ up["W"]
    z_star = jnp.linalg.solve(A, c.T).T
    dz0 = activities[layer] - z_star
    return jnp.stack([z_star + dz0 @ jsl.expm(-A * t).T for t in jnp.asarray(times, dtype)])


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


def relative_error(a: Any, b: Any) -> Array:
    r"""$\lVert a - b\rVert / \lVert b\rVert$ over whole pytrees (e.g. lists of activities)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    num = jnp.sqrt(sum(jnp.sum((u - v) ** 2) for u, v in zip(la, lb)))
    den = jnp.sqrt(sum(jnp.sum(v**2) for v in lb))
    return num / den


# --- chapter 5: strict saddles ---


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
    given the input, and is positive definite ($S \succeq \pi_L^{-1} I$).
    """
    check_params(params)
    L = len(params)
    dtype = params[0]["W"].dtype
    pi = as_precisions(precisions, L, dtype)
    d = params[-1]["W"].shape[0]
    M = jnp.eye(d, dtype=dtype)
    S = M / pi[L - 1]
    for l in range(L - 1, 0, -1):  # M_l = W_L ... W_{l+1}; params[l] is W_{l+1}
        M = M @ params[l]["W"]
        S = S + (M @ M.T) / pi[l - 1]
    return S


def equilibrated_energy(params: Params, x: Array, y: Array, *, precisions: Any = None) -> Array:
    r"""The energy of a *linear* PCN at its inference equilibrium, in closed form (no inference).

    $$\mathcal F^* = \frac{1}{2N}\sum_{i=1}^N r_i^\top S^{-1} r_i, \qquad r_i = y_i - \hat y_i,$$

    with $S$ from :func:`equilibrium_covariance` and $\hat y_i$ the feedforward output
    (Innocenti et al. 2024, Thm 1, there without biases: $r_i = y_i - W_L\cdots W_1 x_i$).
    Biases are supported: they shift the output by the propagated bias, which the feedforward
    output $\hat y_i$ includes, and leave $S$ unchanged. It is the MSE rescaled by $S^{-1}$, computed
    with a Cholesky solve. The activation is the identity throughout; for nonlinear networks
    run :func:`pclib.infer`.
    """
    check_params(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    r = y - _linear_output(params, x)
    S = equilibrium_covariance(params, precisions=precisions)
    Sinv_r = jsl.cho_solve(jsl.cho_factor(S, lower=True), r.T).T
    return 0.5 * jnp.sum(r * Sinv_r) / r.shape[0]


def _check_no_bias(params: Params, name: str) -> None:
    if any(layer.get("b") is not None for layer in params):
        raise ValueError(
            f"{name} is stated for networks without biases (its Hessian is taken in the weights only); "
            f"build the network with pclib.init_mlp(..., bias=False) or drop the 'b' entries"
        )


def zero_rank_energy_curvature(params: Params, y: Array) -> Array:
    r"""The curvature that equilibration adds at a zero-rank saddle with $W_L = 0$.

    If $W_L = 0$ and $W_{L-1}\cdots W_1 = 0$, the point is a critical point of both $\mathcal L$
    and $\mathcal F^*$, and the two Hessians differ only in the $W_L$ block, by

    $$\nabla^2\mathcal F^* - \nabla^2\mathcal L = -\,\Sigma_{yy}\otimes G, \qquad
    \Sigma_{yy} = \frac1N\sum_i y_i y_i^\top, \quad
    G = I + \sum_{\ell=2}^{L-1}(W_{L-1}\cdots W_\ell)(W_{L-1}\cdots W_\ell)^\top ,$$

    in the row-major order of $W_L$ (entry $(a, j)$ at $a\,d_{L-1} + j$). At the origin $G = I$.
    Returns this ``(d_L d_{L-1}, d_L d_{L-1})`` block (the matrix $-\Sigma_{yy}\otimes G$).
    Book chapter 5; cf. Innocenti et al. (2024), Thms 2 and 3.
    """
    check_params(params)
    _check_no_bias(params, "zero_rank_energy_curvature")
    y = jnp.asarray(y)
    check_data(params, None, y)
    if len(params) < 2:
        raise ValueError("a zero-rank saddle needs at least one hidden layer (len(params) >= 2)")
    G = equilibrium_covariance(params[:-1])  # the same sum for the network below the top layer
    Syy = y.T @ y / y.shape[0]
    return -jnp.kron(Syy, G)


def origin_hessians(widths: Sequence[int], x: Array, y: Array) -> tuple[Array, Array]:
    r"""Theoretical Hessians of $\mathcal L$ and $\mathcal F^*$ at the origin of a bias-free linear net.

    Weights flattened layer by layer, each $W_l$ row-major (the order of
    :func:`pclib.landscape.flatten` for ``init_mlp(..., bias=False)``). With
    $C = \frac1N\sum_i y_i x_i^\top$ and $\Sigma_{yy} = \frac1N\sum_i y_i y_i^\top$:

    * one hidden layer: $\mathcal L$'s Hessian couples $W_1$ and $W_2$ only,
      $\partial^2\mathcal L/\partial (W_1)_{jb}\,\partial (W_2)_{ak} = -\delta_{jk} C_{ab}$;
    * two or more hidden layers: $\nabla^2\mathcal L(0) = 0$;
    * always: $\nabla^2\mathcal F^*(0) = \nabla^2\mathcal L(0) - \Sigma_{yy}\otimes I_{d_{L-1}}$ on the $W_L$ block.

    Returns ``(hess_L, hess_F)``, each ``(P, P)`` with $P = \sum_l d_l d_{l-1}$.
    """
    widths = [int(w) for w in widths]
    if len(widths) < 3:
        raise ValueError(f"widths must have at least one hidden layer, e.g. [d_in, d_hidden, d_out]; got {widths}")
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != widths[0] or y.shape[1] != widths[-1] or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have shapes (N, {widths[0]}) and (N, {widths[-1]}); got {x.shape} and {y.shape}"
        )
    sizes = [a * b for a, b in zip(widths[:-1], widths[1:])]
    offs = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    P = offs[-1]
    N = x.shape[0]
    C = y.T @ x / N
    Syy = y.T @ y / N
    HL = jnp.zeros((P, P), x.dtype)
    if len(widths) == 3:
        d0, d1, d2 = widths
        # (W1)_{jb} at j*d0 + b, (W2)_{ak} at offs[1] + a*d1 + k; coupling -delta_jk C_ab
        block = -jnp.einsum("jk,ab->jbak", jnp.eye(d1, dtype=x.dtype), C).reshape(d1 * d0, d2 * d1)
        HL = HL.at[: offs[1], offs[1]:].set(block).at[offs[1]:, : offs[1]].set(block.T)
    top = slice(offs[-2], offs[-1])
    HF = HL.at[top, top].add(-jnp.kron(Syy, jnp.eye(widths[-2], dtype=x.dtype)))
    return HL, HF


def origin_spectra(widths: Sequence[int], x: Array, y: Array) -> tuple[Array, Array]:
    r"""The eigenvalues of $\nabla^2\mathcal L(0)$ and $\nabla^2\mathcal F^*(0)$, sorted, without a $P\times P$ matrix.

    Two or more hidden layers: $\mathcal L$'s are all zero; $\mathcal F^*$'s are
    $-\lambda_k(\Sigma_{yy})$, each $d_{L-1}$ times, and zeros. One hidden layer: both Hessians
    are block diagonal over the $d_1$ hidden units, with the block
    $\begin{pmatrix}0 & -C^\top\\ -C & -\alpha\Sigma_{yy}\end{pmatrix}$ acting on the unit's
    incoming and outgoing weights ($\alpha = 0$ for $\mathcal L$, whose eigenvalues are then $\pm\sigma_k(C)$
    and zeros; $\alpha = 1$ for $\mathcal F^*$), and zeros elsewhere. See :func:`origin_hessians`.
    """
    HL, HF = origin_hessians(widths, x, y)  # validates
    widths = [int(w) for w in widths]
    x, y = jnp.asarray(x), jnp.asarray(y)
    P = HL.shape[0]
    N = x.shape[0]
    Syy = y.T @ y / N
    if len(widths) > 3:
        top = jnp.repeat(-jnp.linalg.eigvalsh(Syy), widths[-2])
        zeros = jnp.zeros((P - top.size,), x.dtype)
        return jnp.zeros((P,), x.dtype), jnp.sort(jnp.concatenate([top, zeros]))
    d0, d1, d2 = widths
    C = y.T @ x / N
    Z = jnp.zeros((d0, d0), x.dtype)
    out = []
    for alpha in (0.0, 1.0):
        block = jnp.block([[Z, -C.T], [-C, -alpha * Syy]])
        lam = jnp.repeat(jnp.linalg.eigvalsh(block), d1)
        out.append(jnp.sort(jnp.concatenate([lam, jnp.zeros((P - lam.size,), x.dtype)])))
    return out[0], out[1]
