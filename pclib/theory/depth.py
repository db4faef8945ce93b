r"""Depth: how far errors travel during inference, how the activity Hessian's conditioning grows with depth,
and what the μPC scalings do to both (book chapter 6).

**The error-space view of inference.** For a linear PCN with unit precisions and effective weights $M_l$ (for a
standard network $M_l = W_l$), the errors $\varepsilon = (\varepsilon_1, \dots, \varepsilon_L)$ are affine in the
hidden activities, $\varepsilon = Bz - c$, with $\partial\varepsilon_l/\partial z_l = I$ ($l < L$) and
$\partial\varepsilon_l/\partial z_{l-1} = -M_l$ ($l \ge 2$). The activity Hessian is $H = B^\top B$ and one Euler
step $z \leftarrow z - \mathrm dt\,B^\top\varepsilon$ moves the errors by

$$\varepsilon \leftarrow (I - \mathrm dt\,G)\,\varepsilon, \qquad G = BB^\top,$$

with $G$ block-tridiagonal: $G_{ll} = [l < L]\,I + [l \ge 2]\,M_lM_l^\top$, $G_{l,l+1} = -M_{l+1}^\top$. From the
feedforward pass only $\varepsilon_L = \delta_L = y - \hat y$ is non-zero, so after $k$ steps

$$\varepsilon^{(k)}_{L-j} = \sum_{m=j}^{k}\binom km(-\mathrm dt)^m\,[G^m]_{L-j,L}\,\delta_L
= \binom kj\mathrm dt^j\,\delta_{L-j} + O(\mathrm dt^{j+1}),$$

zero for $j > k$, where $\delta_{L-j} = M_{L-j+1}^\top\cdots M_L^\top\delta_L$ is backprop's error
(:func:`error_operator`, :func:`leading_order_errors`).

**μPC** (Innocenti, Achour & Buckley 2025): weights $W_l \sim \mathcal N(0, 1)$ and the predictions
$\mu_1 = a_1W_1x$, $\mu_l = z_{l-1} + a_lW_l\phi(z_{l-1})$, $\mu_L = a_LW_L\phi(z_{L-1})$, with $a_1 = 1/\sqrt D$,
$a_l = 1/\sqrt{NL}$, $a_L = 1/N$. A *linear* μPC network is the standard linear network with
$M_1 = a_1W_1$, $M_l = I + a_lW_l$, $M_L = a_LW_L$ (:func:`mupc_effective_weights`), so every closed form of
:mod:`pclib.theory.linear` applies to it.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..model import Array, Params, check_params, mupc_effective_params


# --- the error wave -------------------------------------------------------------------------------


def error_operator(params: Params) -> Array:
    r"""The matrix $G = BB^\top$ that moves the errors of a linear PCN during inference, ``(P, P)``
    with $P = d_1 + \dots + d_L$, blocks ordered by layer.

    $B = \partial\varepsilon/\partial z$ (errors of layers $1..L$ by hidden activities $1..L-1$), so one Euler
    step of size $\mathrm dt$ maps the errors $\varepsilon \mapsto (I - \mathrm dt\,G)\varepsilon$ exactly,
    biases included ($\varepsilon$ is affine in $z$). $G$ and the activity Hessian $H = B^\top B$
    (:func:`pclib.theory.linear_activity_hessian`) have the same non-zero eigenvalues; $G$ has $d_L$ more zeros.
    Unit precisions. Formed from $B$ densely: for checks on small networks.
    """
    check_params(params)
    return _error_operator(params)


@jax.jit
def _error_operator(params: Params) -> Array:
    dims = [p["W"].shape[0] for p in params]
    rows, cols = [sum(dims[:i]) for i in range(len(dims) + 1)], [sum(dims[:i]) for i in range(len(dims))]
    B = jnp.zeros((rows[-1], cols[-1]), params[0]["W"].dtype)
    for l in range(len(params)):  # error of layer l + 1
        if l < len(params) - 1:  # d eps_{l+1} / d z_{l+1} = I
            B = B.at[rows[l]:rows[l + 1], cols[l]:cols[l] + dims[l]].set(jnp.eye(dims[l], dtype=B.dtype))
        if l >= 1:  # d eps_{l+1} / d z_l = -M_{l+1}
            B = B.at[rows[l]:rows[l + 1], cols[l - 1]:cols[l - 1] + dims[l - 1]].set(-params[l]["W"])
    return B @ B.T


def leading_order_errors(params: Params, delta_L: Array, *, steps: int, dt: float) -> list[Array]:
    r"""The leading-order errors after $k = 0..$``steps`` Euler steps from the feedforward pass of a linear PCN:

    $$\varepsilon^{(k)}_{L-j} \approx \binom kj\,\mathrm dt^{\,j}\,\delta_{L-j}, \qquad
    \delta_{L-j} = M_{L-j+1}^\top\cdots M_L^\top\,\delta_L, \qquad \text{exactly } 0 \text{ for } j > k,$$

    exact for $j = k$ (chapter 1's first-steps result) and for every $j \ge k$; for $j < k$ the relative
    correction is of order $\mathrm dt\,(k - j)\max_l\lVert G_{ll}\rVert$ (the next term's block
    $[G^{j+1}]_{L-j,L}$ sums $j + 1$ paths, which cancels the $1/(j + 1)$ of $\binom k{j+1}/\binom kj$); for square
    orthogonal $M_l$ ($l \ge 2$) it is $-\mathrm dt\,(k - j)(2j + 1)/(j + 1)$ to first order. ``delta_L`` is the output error
    $y - \hat y$, ``(N, d_L)``. Returns one ``(steps + 1, N, d_l)`` array per layer $l = 1..L$.
    """
    check_params(params)
    L = len(params)
    deltas = [jnp.asarray(delta_L)]
    for l in range(L - 1, 0, -1):  # delta_l = M_{l+1}^T delta_{l+1}
        deltas.insert(0, deltas[0] @ params[l]["W"])
    k = np.arange(steps + 1)
    out = []
    for l, d in enumerate(deltas, start=1):
        j = L - l
        coef = np.array([math.comb(int(kk), j) * float(dt) ** j for kk in k])  # comb(k, j) = 0 for j > k
        out.append(jnp.asarray(coef, d.dtype)[:, None, None] * d[None])
    return out


def fixed_time_profile(t: float, n_layers: int) -> np.ndarray:
    r"""The continuous-time limit of the leading order: $\mathrm dt \to 0$ with $k\,\mathrm dt = t$ gives
    $\binom kj\mathrm dt^j \to t^j/j!$, the size at distance $j = 0..$``n_layers - 1`` from the output of the error
    that inference time $t$ delivers (relative to backprop's $\delta_{L-j}$). It falls faster than any geometric
    sequence once $j > e\,t$."""
    j = np.arange(n_layers)
    return np.exp(j * np.log(max(t, 1e-300)) - np.array([math.lgamma(v + 1) for v in j]))


# --- conditioning -----------------------------------------------------------------------------------


def path_eigenvalues(n: int) -> np.ndarray:
    r"""Eigenvalues of the activity Hessian of a linear chain of $n$ hidden layers with orthogonal hidden maps
    and a zero output map ($M_2, \dots, M_{L-1}$ orthogonal, $M_L = 0$, $n = L - 1$): the path Laplacian with
    one clamped and one free end, $\lambda_k = 2 - 2\cos\frac{(2k-1)\pi}{2n+1}$, $k = 1..n$, each repeated
    $d$ times (the width). So $\lambda_{\min} \approx \pi^2/(2n+1)^2$ and the condition number grows like
    $16L^2/\pi^2$. Ascending."""
    k = np.arange(1, n + 1)
    return 2.0 - 2.0 * np.cos((2 * k - 1) * np.pi / (2 * n + 1))


def activity_hessian_np(params: Params) -> np.ndarray:
    r"""The activity Hessian $H$ of a *linear* PCN with unit precisions, as a NumPy array: the same matrix as
    :func:`pclib.theory.linear_activity_hessian` (diagonal blocks $I + M_{l+1}^\top M_{l+1}$, off-diagonal blocks
    $-M_{l+1}$ and its transpose), built on the host, so a new depth or width compiles nothing."""
    check_params(params)
    M = [np.asarray(p["W"], np.float64) for p in params]
    dims = [m.shape[0] for m in M[:-1]]
    offs = np.concatenate([[0], np.cumsum(dims)]).astype(int)
    H = np.zeros((offs[-1], offs[-1]))
    for i in range(len(dims)):  # hidden layer i + 1
        H[offs[i]:offs[i + 1], offs[i]:offs[i + 1]] = np.eye(dims[i]) + M[i + 1].T @ M[i + 1]
        if i + 1 < len(dims):
            H[offs[i + 1]:offs[i + 2], offs[i]:offs[i + 1]] = -M[i + 1]
            H[offs[i]:offs[i + 1], offs[i + 1]:offs[i + 2]] = -M[i + 1].T
    return H


def activity_spectrum(params: Params) -> np.ndarray:
    r"""All eigenvalues (ascending) of the activity Hessian $H$ of a *linear* PCN (unit precisions), from its band.

    $H$ is block-tridiagonal (:func:`activity_hessian_np`): with hidden widths at most $N$ its bandwidth is below
    $2N$, so LAPACK's banded solver (:func:`scipy.linalg.eig_banded`) costs $O(n N^2)$ for $n = d_1 + \dots + d_{L-1}$
    instead of the $O(n^3)$ of a dense one: over ten times faster than :func:`numpy.linalg.eigvalsh` for 32 layers
    of width 64."""
    from scipy.linalg import eig_banded

    H = activity_hessian_np(params)
    dims = [int(p["W"].shape[0]) for p in params[:-1]]
    n = H.shape[0]
    u = max((dims[i] + dims[i + 1] - 1 for i in range(len(dims) - 1)), default=dims[0] - 1)
    band = np.zeros((u + 1, n))
    for k in range(u + 1):
        band[k, : n - k] = np.diagonal(H, -k)
    return eig_banded(band, lower=True, eigvals_only=True)


def chain_lambda_min_bound(params: Params, u: Array) -> float:
    r"""An upper bound on $\lambda_{\min}(H)$ of a linear PCN from one input direction $u$ of the first hidden layer.

    Trial activities $z_l = c_l\,P_lu$ with $P_l = M_l\cdots M_2$ ($P_1 = I$) make every hidden error
    $(c_l - c_{l-1})P_lu$, so with $w_l = \lVert P_lu\rVert^2$ the Rayleigh quotient of $H$ is the weighted
    one-dimensional form

    $$\frac{c_1^2w_1 + \sum_{l=2}^{n}(c_l - c_{l-1})^2w_l + c_n^2\lVert M_LP_nu\rVert^2}{\sum_l c_l^2w_l},
    \qquad n = L - 1,$$

    (with $\lVert u\rVert = 1$, $w_1 = 1$) whose minimum over $c$ (a generalised tridiagonal eigenproblem) is
    returned. Equality holds when the hidden maps are orthogonal and $M_L = 0$ (:func:`path_eigenvalues`).
    """
    check_params(params)
    M = [np.asarray(p["W"], np.float64) for p in params]
    v = np.asarray(u, np.float64) / np.linalg.norm(np.asarray(u, np.float64))
    P = [v]
    for Ml in M[1:-1]:
        P.append(Ml @ P[-1])
    w = np.array([float(p @ p) for p in P])
    n = len(w)
    A = np.zeros((n, n))
    A[0, 0] += w[0]
    for l in range(1, n):  # (c_l - c_{l-1})^2 w_l
        A[l, l] += w[l]
        A[l - 1, l - 1] += w[l]
        A[l, l - 1] -= w[l]
        A[l - 1, l] -= w[l]
    top = M[-1] @ P[-1]
    A[-1, -1] += float(top @ top)
    s = 1.0 / np.sqrt(w)  # D^{-1/2} A D^{-1/2}
    return float(np.linalg.eigvalsh(s[:, None] * A * s[None, :])[0])


def _modes(H: Array, g0: Array) -> tuple[np.ndarray, np.ndarray]:
    r"""Eigenvalues of ``H`` and the squared weights $w_i = \sum_n (q_i^\top g_{0,n})^2$ of ``g0`` on its eigenvectors."""
    lam, Q = np.linalg.eigh(np.asarray(H, np.float64))
    return lam, np.sum((np.asarray(g0, np.float64) @ Q) ** 2, axis=0)


def _residuals(lam: np.ndarray, w: np.ndarray, ks: Sequence[int], dt: float) -> np.ndarray:
    ks = np.asarray(ks, np.float64)
    with np.errstate(divide="ignore"):
        logs = (2.0 * ks[:, None] * np.log(np.maximum(np.abs(1.0 - dt * lam), 1e-300))[None, :]
                + np.log(np.maximum(w, 1e-300))[None, :])
    m = logs.max(axis=1, keepdims=True)
    return np.sqrt(np.exp(m[:, 0]) * np.exp(logs - m).sum(axis=1) / w.sum())


def euler_residuals(H: Array, g0: Array, ks: Sequence[int], *, dt: float) -> np.ndarray:
    r"""Relative residuals $\lVert g_k\rVert / \lVert g_0\rVert$ of Euler's method on a quadratic with Hessian $H$
    after each of ``ks`` steps of size ``dt``, exactly: $g_k = (I - \mathrm dt\,H)^kg_0$ for the gradient
    $g = \nabla_z F$, so with $H = \sum_i\lambda_iq_iq_i^\top$ and $w_i = \sum_n (q_i^\top g_{0,n})^2$ over samples,
    $\lVert g_k\rVert^2 = \sum_i(1 - \mathrm dt\,\lambda_i)^{2k}w_i$. ``g0`` is ``(N, D)``: the activity gradients at
    the start, all hidden layers concatenated. For $0 < \mathrm dt \le 2/(\lambda_{\min} + \lambda_{\max})$ the
    residual falls monotonically, at least as fast as $\big((\kappa - 1)/(\kappa + 1)\big)^k$ at the largest such step."""
    return _residuals(*_modes(H, g0), ks, dt)


def euler_steps_to(H: Array, g0: Array, *, tol: float, dt: float, max_steps: int = 10**8) -> int:
    r"""The number of Euler steps of size ``dt`` after which the relative residual (:func:`euler_residuals`)
    first falls below ``tol``, by bisection (the residual is monotone for $\mathrm dt \le 2/(\lambda_{\min} +
    \lambda_{\max})$). One eigendecomposition. Returns ``max_steps`` if it does not get there."""
    lam, w = _modes(H, g0)
    lo, hi = 0, 1
    while _residuals(lam, w, [hi], dt)[0] >= tol:
        lo, hi = hi, 2 * hi
        if hi > max_steps:
            return max_steps
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _residuals(lam, w, [mid], dt)[0] >= tol else (lo, mid)
    return hi


# --- parameterisations ------------------------------------------------------------------------------


def mupc_effective_weights(params: Params) -> Params:
    r"""The standard linear network equal to a *linear* μPC network with weights ``params``:
    $M_1 = a_1W_1$, $M_l = I + a_lW_l$ ($l = 2..L-1$), $M_L = a_LW_L$ (biases scaled by $a_l$), with the
    scalings of :func:`pclib.model.mupc_scales` (:func:`pclib.model.mupc_effective_params` computes it)."""
    check_params(params)
    return mupc_effective_params(params)


def expected_square_norms(widths: Sequence[int], scales: Sequence[float], *, residual: bool) -> np.ndarray:
    r"""$\mathbb E\lVert\hat z_l\rVert^2 / \lVert x\rVert^2$, $l = 1..L$, for the feedforward pass of a *linear* network
    $\hat z_l = r_l\hat z_{l-1} + a_lW_l\hat z_{l-1}$ with independent $W_l \sim \mathcal N(0, 1)$, $r_l = 1$ on the
    hidden-to-hidden layers if ``residual`` (else 0). Each layer multiplies the expected square norm by
    $r_l + a_l^2d_l$, $d_l$ its output width (the cross term has mean zero): $1 + 1/L$ per residual layer under μPC, so
    $(1 + 1/L)^{L-2} < e$ over the whole depth; 2 per layer for residual layers scaled only by $1/\sqrt N$;
    and $d_l/d_{l-1}$ for the standard parameterisation $a_l = 1/\sqrt{d_{l-1}}$ without residuals."""
    widths = [int(w) for w in widths]
    L = len(widths) - 1
    # E||a W z||^2 = a^2 d_out ||z||^2 for W ~ N(0, 1) with d_out rows
    g = [(1.0 if residual and 0 < l < L - 1 else 0.0) + scales[l] ** 2 * widths[l + 1] for l in range(L)]
    return np.cumprod(g)


def expected_output_covariance(widths: Sequence[int], scales: Sequence[float], *, residual: bool) -> float:
    r"""The constant $c$ with $\mathbb E[S] = c\,I$ for the matrix $S = I + \sum_{\ell=2}^{L}(M_L\cdots M_\ell)
    (M_L\cdots M_\ell)^\top$ of the equilibrated energy (chapter 5), over independent $W_l \sim \mathcal N(0, 1)$ in
    $M_l = r_lI + a_lW_l$ ($M_L = a_LW_L$):

    $$c = 1 + a_L^2\sum_{\ell=2}^{L} d_{\ell-1}\prod_{m=\ell}^{L-1}(r_m + a_m^2d_m).$$

    Standard parameterisation with equal hidden widths: $c = L$. μPC: $c = 1 + \frac LN\big((1 + \frac1L)^{L-1}
    - 1\big) \to 1 + (e - 1)\frac LN$. Where $S$ concentrates around $cI$, $\mathcal F^*/\mathcal L \approx 1/c$."""
    widths = [int(w) for w in widths]
    L = len(widths) - 1
    g = [(1.0 if residual and 0 < m < L - 1 else 0.0) + scales[m] ** 2 * widths[m + 1] for m in range(L)]
    total = 0.0
    for ell in range(2, L + 1):  # the product M_{L-1} ... M_ell acting on R^{d_{ell-1}}
        total += widths[ell - 1] * float(np.prod(g[ell - 1:L - 1]))
    return 1.0 + scales[L - 1] ** 2 * total


def energy_loss_ratio(params: Params, x: Array, y: Array) -> float:
    r"""$\mathcal F^*/\mathcal L$ for a bias-free *linear* PCN: $\operatorname{tr}(S^{-1}\Sigma_{rr})/\operatorname{tr}\Sigma_{rr}$,
    the closed form of :func:`pclib.theory.equilibrated_energy` divided by the MSE, in NumPy (no compilation per
    shape, for sweeps over many widths and depths). It lies in $[1/\lambda_{\max}(S), 1/\lambda_{\min}(S)]$."""
    check_params(params)
    M = [np.asarray(p["W"], np.float64) for p in params]
    out = np.asarray(x, np.float64).T
    for Ml in M:
        out = Ml @ out
    r = np.asarray(y, np.float64).T - out
    P = np.eye(M[-1].shape[0])
    S = P.copy()
    for Ml in M[:0:-1]:  # P = M_L ... M_l, l = L..2
        P = P @ Ml
        S += P @ P.T
    Srr = r @ r.T
    return float(np.trace(np.linalg.solve(S, Srr)) / np.trace(Srr))


def standard_scales(widths: Sequence[int]) -> tuple[float, ...]:
    r"""The standard parameterisation written as scalings: $a_l = 1/\sqrt{d_{l-1}}$ with $W_l \sim \mathcal N(0, 1)$,
    i.e. :func:`pclib.init_mlp`'s default $W_l \sim \mathcal N(0, 1/d_{l-1})$ (tanh, linear)."""
    return tuple(1.0 / math.sqrt(int(d)) for d in widths[:-1])
