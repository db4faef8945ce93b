r"""Saddles of the loss and of the equilibrated energy of linear networks: Hessians at the origin and at
zero-rank saddles, the Schur-complement view, the explaining-away valley
(Innocenti et al. 2024, "Only strict saddles in the energy landscape of predictive coding networks?")."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..model import Array, Params, check_data, check_params
from .linear import equilibrium_covariance


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
    Returns this ``(d_L d_{L-1}, d_L d_{L-1})`` block (the matrix $-\Sigma_{yy}\otimes G$), a NumPy array.
    Book chapter 5; cf. Innocenti et al. (2024), Thms 2 and 3.
    """
    check_params(params)
    _check_no_bias(params, "zero_rank_energy_curvature")
    y = jnp.asarray(y)
    check_data(params, None, y)
    if len(params) < 2:
        raise ValueError("a zero-rank saddle needs at least one hidden layer (len(params) >= 2)")
    G = np.asarray(equilibrium_covariance(params[:-1]))  # the same sum for the network below the top layer
    y = np.asarray(y)
    return -np.kron(y.T @ y / y.shape[0], G)


def _origin_data(widths: Sequence[int], x: Array, y: Array) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    r"""Validated widths and the NumPy moments $C = \frac1N\sum_i y_ix_i^\top$ and $\Sigma_{yy}$, and $x$'s dtype."""
    widths = [int(w) for w in widths]
    if len(widths) < 3:
        raise ValueError(f"widths must have at least one hidden layer, e.g. [d_in, d_hidden, d_out]; got {widths}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != widths[0] or y.shape[1] != widths[-1] or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have shapes (N, {widths[0]}) and (N, {widths[-1]}); got {x.shape} and {y.shape}"
        )
    N = x.shape[0]
    return widths, y.T @ x / N, y.T @ y / N, x.dtype


def origin_hessians(widths: Sequence[int], x: Array, y: Array) -> tuple[np.ndarray, np.ndarray]:
    r"""Theoretical Hessians of $\mathcal L$ and $\mathcal F^*$ at the origin of a bias-free linear net.

    Weights flattened layer by layer, each $W_l$ row-major (the order of
    :func:`pclib.landscape.flatten` for ``init_mlp(..., bias=False)``). With
    $C = \frac1N\sum_i y_i x_i^\top$ and $\Sigma_{yy} = \frac1N\sum_i y_i y_i^\top$:

    * one hidden layer: $\mathcal L$'s Hessian couples $W_1$ and $W_2$ only,
      $\partial^2\mathcal L/\partial (W_1)_{jb}\,\partial (W_2)_{ak} = -\delta_{jk} C_{ab}$;
    * two or more hidden layers: $\nabla^2\mathcal L(0) = 0$;
    * always: $\nabla^2\mathcal F^*(0) = \nabla^2\mathcal L(0) - \Sigma_{yy}\otimes I_{d_{L-1}}$ on the $W_L$ block.

    Returns ``(hess_L, hess_F)``, NumPy arrays of shape ``(P, P)`` with $P = \sum_l d_l d_{l-1}$. For large
    networks use :func:`origin_hvp`, which applies them without forming them.
    """
    widths, C, Syy, dtype = _origin_data(widths, x, y)
    sizes = [a * b for a, b in zip(widths[:-1], widths[1:])]
    offs = np.cumsum([0] + sizes)
    P = int(offs[-1])
    HL = np.zeros((P, P), dtype)
    if len(widths) == 3:
        d0, d1, d2 = widths
        # (W1)_{jb} at j*d0 + b, (W2)_{ak} at offs[1] + a*d1 + k; coupling -delta_jk C_ab
        block = -np.einsum("jk,ab->jbak", np.eye(d1, dtype=dtype), C).reshape(d1 * d0, d2 * d1)
        HL[: offs[1], offs[1]:] = block
        HL[offs[1]:, : offs[1]] = block.T
    HF = HL.copy()
    HF[offs[-2]:, offs[-2]:] -= np.kron(Syy, np.eye(widths[-2], dtype=dtype))
    return HL, HF


def origin_hvp(widths: Sequence[int], x: Array, y: Array) -> Callable[[Array], tuple[np.ndarray, np.ndarray]]:
    r"""The Hessians of :func:`origin_hessians` as a matrix-free product $v \mapsto (\nabla^2\mathcal L(0)\,v,
    \nabla^2\mathcal F^*(0)\,v)$, for networks too large for a $P\times P$ matrix.

    With $v$ split into blocks $V_l$ shaped like $W_l$: one hidden layer, $\nabla^2\mathcal L(0)\,v$ has the blocks
    $-V_2^\top C$ (on $W_1$) and $-C V_1^\top$ (on $W_2$); two or more, it is zero. $\nabla^2\mathcal F^*(0)\,v$ adds
    $-\Sigma_{yy}V_L$ on the $W_L$ block. Cost $O(P\,d_L)$; ``v`` is a flat vector of length $P$ (NumPy arrays).
    """
    widths, C, Syy, dtype = _origin_data(widths, x, y)
    shapes = [(b, a) for a, b in zip(widths[:-1], widths[1:])]
    offs = np.cumsum([0] + [a * b for b, a in shapes])

    def apply(v: Array) -> tuple[np.ndarray, np.ndarray]:
        v = np.asarray(v, dtype)
        if v.shape != (offs[-1],):
            raise ValueError(f"v must be a flat vector of length {offs[-1]} (see landscape.flatten); got {v.shape}")
        V = [v[offs[i]:offs[i + 1]].reshape(shape) for i, shape in enumerate(shapes)]
        hl = np.zeros_like(v)
        if len(widths) == 3:
            hl[: offs[1]] = (-V[1].T @ C).ravel()
            hl[offs[1]:] = (-C @ V[0].T).ravel()
        hf = hl.copy()
        hf[offs[-2]:] -= (Syy @ V[-1]).ravel()
        return hl, hf

    return apply


def origin_spectra(widths: Sequence[int], x: Array, y: Array) -> tuple[np.ndarray, np.ndarray]:
    r"""The eigenvalues of $\nabla^2\mathcal L(0)$ and $\nabla^2\mathcal F^*(0)$, sorted, without a $P\times P$ matrix.

    Two or more hidden layers: $\mathcal L$'s are all zero; $\mathcal F^*$'s are
    $-\lambda_k(\Sigma_{yy})$, each $d_{L-1}$ times, and zeros. One hidden layer: both Hessians
    are block diagonal over the $d_1$ hidden units, with the block
    $\begin{pmatrix}0 & -C^\top\\ -C & -\alpha\Sigma_{yy}\end{pmatrix}$ acting on the unit's
    incoming and outgoing weights ($\alpha = 0$ for $\mathcal L$, whose eigenvalues are then $\pm\sigma_k(C)$
    and zeros; $\alpha = 1$ for $\mathcal F^*$), and zeros elsewhere. See :func:`origin_hessians`.
    Returns NumPy arrays.
    """
    widths, C, Syy, dtype = _origin_data(widths, x, y)
    P = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    if len(widths) > 3:
        top = np.repeat(-np.linalg.eigvalsh(Syy), widths[-2])
        return np.zeros((P,), dtype), np.sort(np.concatenate([top, np.zeros((P - top.size,), dtype)]))
    d0, d1, d2 = widths
    Z = np.zeros((d0, d0), dtype)
    out = []
    for alpha in (0.0, 1.0):
        block = np.block([[Z, -C.T], [-C, -alpha * Syy]])
        lam = np.repeat(np.linalg.eigvalsh(block), d1)
        out.append(np.sort(np.concatenate([lam, np.zeros((P - lam.size,), dtype)])))
    return out[0], out[1]


def explaining_away_energy(top: Array, y: Array) -> Array:
    r"""The equilibrated energy on the *explaining-away valley*: all layers below the top zero.

    With $W_1 = \dots = W_{L-1} = 0$ and any top layer $W_L$, the network predicts $\hat y = 0$, so
    $\mathcal L = \frac12\operatorname{tr}\Sigma_{yy}$ whatever $W_L$ is, while

    $$\mathcal F^* = \tfrac12\operatorname{tr}\big(\Sigma_{yy}\,(I + W_LW_L^\top)^{-1}\big)
    = \tfrac12\sum_k \frac{u_k^\top\Sigma_{yy}u_k}{1 + s_k^2},$$

    with $W_L = \sum_k s_k u_k v_k^\top$ (an SVD, $s_k = 0$ for $k > \operatorname{rank} W_L$). Along
    $W_L = tA$ it decreases in $t$ to $\frac12\operatorname{tr}(\Sigma_{yy}\Pi)$, $\Pi$ the projector onto
    $\operatorname{range}(A)^\perp$: to zero when $A$ has full row rank. Book chapter 5
    (the explaining-away valley); it follows from Innocenti et al. (2024), Thm 1.

    ``top``: $W_L$, shape ``(d_L, d_{L-1})``; ``y``: targets ``(N, d_L)``. Returns a scalar (NumPy).
    """
    top, y = np.asarray(top), np.asarray(y)
    if top.ndim != 2 or y.ndim != 2 or y.shape[1] != top.shape[0]:
        raise ValueError(
            f"top must be the top weight matrix (d_L, d_{{L-1}}) and y the targets (N, d_L); got shapes "
            f"{top.shape} and {y.shape}"
        )
    Syy = y.T @ y / y.shape[0]
    U, s, _ = np.linalg.svd(top, full_matrices=True)
    s2 = np.zeros((top.shape[0],), top.dtype)
    s2[: s.size] = s**2
    return 0.5 * np.sum(np.einsum("ak,ab,bk->k", U, Syy, U) / (1.0 + s2))


def joint_hessian_schur(params: Params, x: Array, y: Array) -> tuple[Array, Array]:
    r"""The Hessian of the equilibrated energy as a Schur complement of the joint Hessian.

    With $\mathcal F(\theta, z)$ the energy of a linear network (input and output clamped) and $z^*$ its
    inference equilibrium, the joint Hessian in (weights, activities) at $(\theta, z^*)$ has blocks
    $H_{\theta\theta}, H_{\theta z}, H_{zz}$, and since $z^*(\theta)$ solves $\partial_z\mathcal F = 0$
    (implicit function theorem, $H_{zz} \succ 0$),

    $$\nabla^2\mathcal F^* = H_{\theta\theta} - H_{\theta z}H_{zz}^{-1}H_{z\theta}.$$

    $H_{\theta\theta}$ is the Hessian of the energy at *fixed* activities; the subtracted term is
    positive semi-definite, so inference can only add negative curvature. Computed densely with
    ``jax.hessian`` of :func:`pclib.energy` in $(\theta, z)$ at :func:`~pclib.theory.linear_equilibrium`,
    which never uses the closed form of $\mathcal F^*$; meant for small networks and batches
    ($H_{zz}$ has $N\sum_{\ell<L} d_\ell$ rows). Book chapter 5.

    Returns ``(H_fixed, H_schur)``: $H_{\theta\theta}$ and the Schur complement, each ``(P, P)`` in the
    order of :func:`pclib.landscape.flatten`.
    """
    from .linear import linear_equilibrium

    check_params(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    if len(params) < 2:
        raise ValueError("the Schur complement needs at least one hidden layer (len(params) >= 2)")
    return _joint_hessian_schur(params, linear_equilibrium(params, x, y), x, y)


@jax.jit
def _joint_hessian_schur(params: Params, star: list, x: Array, y: Array) -> tuple[Array, Array]:
    from jax.flatten_util import ravel_pytree

    from ..energy import _energy, as_precisions

    w0, unravel_w = ravel_pytree(params)
    z0, unravel_z = ravel_pytree(star[1:-1])
    P = w0.size
    pi = as_precisions(None, len(params), x.dtype)

    def joint(v):
        p, z = unravel_w(v[:P]), unravel_z(v[P:])
        return _energy(p, [x] + list(z) + [y], pi, act="linear", out_act="linear")

    H = jax.hessian(joint)(jnp.concatenate([w0, z0]))
    Htt, Htz, Hzz = H[:P, :P], H[:P, P:], H[P:, P:]
    return Htt, Htt - Htz @ jnp.linalg.solve(Hzz, Htz.T)
