r"""Inference on μPC networks (Innocenti, Achour & Buckley 2025): the energy of the free activities and a
positive approximation of its Hessian diagonal, for :func:`pclib.infer` with ``param="mupc"``.

The energy is the book's, $F_i = \sum_l \frac{\pi_l}{2}\lVert z_{l,i} - \mu_l(z_{l-1,i})\rVert^2$, with the μPC
predictions of :func:`pclib.model.mupc_predictors`. The Jacobian of a prediction with respect to the layer below is

$$J_{l+1} = \frac{\partial \mu_{l+1}}{\partial z_l} = r_{l+1} I + a_{l+1}\,\operatorname{diag}(g_{l+1})\,W_{l+1}\,
\operatorname{diag}(\phi'(z_l)),$$

with $r_{l+1} = 1$ for a residual layer ($2 \le l+1 \le L-1$) and 0 otherwise, $g_L = f_L'$ at the output and
$g = 1$ elsewhere, and $\phi' = 1$ for the input layer (no activation on $x$).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .energy import precision_scales, weighted_square
from .model import Activation, Params, get_activation, mupc_predictors, mupc_scales, preactivation, widths_of


def energies_of_free(params: Params, zs: list, pi: Any, *, act: Activation, out_act: Activation, free: tuple):
    r"""``(total, per_sample, diagonal)`` as in :func:`pclib.inference._energies_of_free`, for ``param="mupc"``.

    With the input clamped, layer 1's prediction $a_1(W_1 x + b_1)$ is computed once, before the loop. The
    diagonal is the Gauss-Newton diagonal $\operatorname{diag}(\Pi_l) + \operatorname{diag}(J_{l+1}^\top\Pi_{l+1}J_{l+1})$
    of each free unit (exact for scalar precisions: $\pi_{l+1}\sum_j J_{jk}^2$)."""
    preds = mupc_predictors(params, act=act, out_act=out_act)
    a = mupc_scales(widths_of(params))
    L = len(params)
    mu1 = None if 0 in free else preds[0](params[0], zs[0])
    matrices = isinstance(pi, tuple)

    def full(free_z):
        out = list(zs)
        for i, z in zip(free, free_z):
            out[i] = z
        return out

    def per_sample(free_z):
        z = full(free_z)
        total = 0.0
        for l in range(1, L + 1):
            mu = mu1 if (l == 1 and mu1 is not None) else preds[l - 1](params[l - 1], z[l - 1])
            total = total + weighted_square(z[l] - mu, pi[l - 1])
        return total

    def total(free_z):
        return jnp.sum(per_sample(free_z))

    phi, f_out = get_activation(act), get_activation(out_act)

    def diagonal(free_z):
        z = full(free_z)
        out = []
        for l in free:
            d = jnp.zeros_like(z[l]) + ((jnp.diagonal(pi[l - 1]) if matrices else pi[l - 1]) if l >= 1 else 0.0)
            if l < L:
                W, a_up = params[l]["W"], a[l]
                fp = jnp.ones_like(z[l]) if l == 0 else jax.jvp(phi, (z[l],), (jnp.ones_like(z[l]),))[1]
                if l + 1 == L:  # output layer: g = f_out' at its pre-activation
                    pre = a_up * preactivation(params[l], phi(z[l]))
                    g = jax.jvp(f_out, (pre,), (jnp.ones_like(pre),))[1]
                else:
                    g = jnp.ones((z[l].shape[0], W.shape[0]), z[l].dtype)
                residual = 0 < l < L - 1
                if matrices:
                    J = a_up * g[:, :, None] * W[None] * fp[:, None, :]
                    if residual:
                        J = J + jnp.eye(W.shape[0], dtype=J.dtype)
                    d = d + jnp.einsum("njk,jm,nmk->nk", J, pi[l], J)
                else:
                    s = (a_up * fp) ** 2 * ((g**2) @ (W**2))
                    if residual:
                        s = s + 1.0 + 2.0 * a_up * fp * jnp.diagonal(W)
                    d = d + pi[l] * s
            out.append(jnp.maximum(d, jnp.finfo(d.dtype).tiny ** 0.5))
        return out

    return total, per_sample, diagonal


def euler_dt(params: Params, precisions: Any) -> float:
    r"""A stable Euler step for clamped inference on a μPC network,
    $\mathrm dt = 0.5 / \max_l(\pi_l + \pi_{l+1}(r_{l+1} + a_{l+1}\lVert W_{l+1}\rVert_2)^2)$, from
    $\lVert J_{l+1}\rVert_2 \le r_{l+1} + a_{l+1}\lVert W_{l+1}\rVert_2$ when $|\phi'|, |f_L'| \le 1$ (tanh, ReLU,
    linear); the μPC counterpart of :func:`pclib.equilibria.euler_dt`."""
    pi = precision_scales(precisions)
    a = mupc_scales(widths_of(params))
    L = len(params)
    bound = [(float(0 < l < L - 1) + a[l] * float(np.linalg.norm(np.asarray(params[l]["W"], np.float64), 2))) ** 2
             for l in range(1, L)] + [0.0]
    return 0.5 / max(pi[l] + (pi[l + 1] if l + 1 < L else 0.0) * bound[l] for l in range(L))
