r"""Linear networks with a bottleneck: what backprop finds and what PC tends to.

A linear network whose narrowest hidden layer has width $k$ computes an affine map of rank at most
$k$. Backprop minimises the loss over such maps: *reduced-rank regression*. PC with exact inference
descends the equilibrated energy instead (chapter 2). For one hidden layer and unit precisions,
$\mathcal F^* = \frac1{2N}\sum_i e_i^\top (I + W_2W_2^\top)^{-1} e_i$, and with $W_2 = U\Sigma V^\top$,

$$\mathcal F^* = \frac1{2N}\sum_i \Big[\lVert (I - UU^\top)(y_i - b_2)\rVert^2
+ \lVert (I + \Sigma^2)^{-1/2} U^\top e_i\rVert^2\Big]
\;\ge\; \tfrac12 \sum_{j > k} \lambda_j(C_y),$$

with $C_y$ the covariance of the targets. The infimum is approached only as $\Sigma \to \infty$ with
$U$ spanning the top-$k$ principal subspace of the targets (chapter 2, the bottleneck proposition).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..model import Array


class LowRankLimit(NamedTuple):
    r"""Reduced-rank regression (backprop's optimum) and PC's bottleneck limit for one rank $k$.

    Attributes
    ----------
    bp_loss : the least loss $\frac1{2N}\sum_i\lVert y_i - \hat y_i\rVert^2$ over affine maps of rank $\le k$.
    bp_directions : ``(d_out, k)`` orthonormal output directions of that optimum (reduced-rank regression).
    pc_energy_inf : $\inf_\theta \mathcal F^* = \frac12\sum_{j>k}\lambda_j(C_y)$, the targets' PCA residual.
    pc_directions : ``(d_out, k)`` top-$k$ principal directions of the targets.
    pc_loss : the loss of the best affine map whose output moves only along ``pc_directions``.
    pc_grad_scale : $\lVert G\rVert_F$ with $G = \frac1N\sum_i (I - U_kU_k^\top) y_{c,i}\, t_i^\top$, $t_i$ the fitted
        coordinates along ``pc_directions``. For ``rank=1``, $\lVert\nabla_\theta\mathcal L\rVert\cdot\lVert W_2\rVert$ tends
        to it as PC approaches its limit, so the backprop gradient vanishes like $1/\lVert W_2\rVert$.
    """

    bp_loss: float
    bp_directions: np.ndarray
    pc_energy_inf: float
    pc_directions: np.ndarray
    pc_loss: float
    pc_grad_scale: float


def _affine_fit(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    xa = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    return xa @ np.linalg.lstsq(xa, t, rcond=None)[0]


def low_rank_limits(x: Array, y: Array, *, rank: int) -> LowRankLimit:
    r"""Backprop's reduced-rank optimum and PC's bottleneck limit for data ``(x, y)`` and a rank ``rank``.

    Backprop: the affine least-squares fit $\hat Y$ projected on its top-``rank`` right singular
    vectors (reduced-rank regression with identity weighting; Izenman 1975). PC (one linear hidden
    layer of width ``rank``, unit precisions): $\inf\mathcal F^* = \frac12\sum_{j>k}\lambda_j(C_y)$, approached
    as $\lVert W_2\rVert\to\infty$ with the output directions tending to the top principal subspace $U_k$
    of the targets; the loss there is $\frac12\sum_{j>k}\lambda_j + \frac1{2N}\sum_i
    \lVert U_k^\top y_{c,i} - \mathrm{fit}_i\rVert^2$, with the affine least-squares fit of $U_k^\top y_c$ on $x$.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x and y must be (N, d_in) and (N, d_out) with the same N; got {x.shape} and {y.shape}")
    if not 1 <= rank < y.shape[1]:
        raise ValueError(f"rank must be between 1 and d_out - 1 = {y.shape[1] - 1} (a bottleneck); got {rank}")
    n = len(y)
    yc = y - y.mean(0)
    fit = _affine_fit(x, y) - y.mean(0)
    _, _, vt = np.linalg.svd(fit, full_matrices=False)
    bp_dirs = vt[:rank].T
    bp_loss = 0.5 * np.sum((yc - fit @ bp_dirs @ bp_dirs.T) ** 2) / n
    lam, vecs = np.linalg.eigh(yc.T @ yc / n)
    pc_dirs = vecs[:, ::-1][:, :rank]
    pca_res = 0.5 * float(np.sum(lam[: y.shape[1] - rank]))
    proj = yc @ pc_dirs
    t = _affine_fit(x, proj)
    pc_loss = pca_res + 0.5 * np.sum((proj - t) ** 2) / n
    G = (yc - proj @ pc_dirs.T).T @ t / n
    return LowRankLimit(float(bp_loss), bp_dirs, pca_res, pc_dirs, float(pc_loss), float(np.linalg.norm(G)))


def least_squares_loss(x: Array, y: Array) -> float:
    r"""The least loss $\frac1{2N}\sum_i\lVert y_i - A x_i - c\rVert^2$ over all affine maps: backprop's optimum
    for a linear network without a bottleneck (every hidden layer at least as wide as the output)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x and y must be (N, d_in) and (N, d_out) with the same N; got {x.shape} and {y.shape}")
    return float(0.5 * np.sum((y - _affine_fit(x, y)) ** 2) / len(y))
