r"""The Fisher information of the activities and PC as a trust-region method
(Innocenti, Singh & Buckley 2023, "Understanding predictive coding as a second-order trust-region method").

Expand one sample's energy around the feedforward values $\hat z$ (output clamped to $y$):

$$F(\hat z + \Delta z) = F(\hat z) + g^\top \Delta z + \tfrac12 \Delta z^\top H_F(\hat z) \Delta z + O(\Delta z^3),$$

where $F(\hat z) = \pi_L \mathcal L$ (all hidden errors vanish), $g = \nabla_z F(\hat z)$ is the gradient of
the output term (the loss as a function of the activities), and $H_F(\hat z) = \mathcal I(\hat z)$, the
Gauss-Newton / Fisher matrix, whenever the output layer is linear.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

from ..energy import as_precisions, errors, mse_loss
from ..model import Activation, Array, Params, check_data, check_params, forward


def _hidden_widths(params: Params) -> list[int]:
    if len(params) < 2:
        raise ValueError(
            "trust-region quantities live on the hidden activities, and a 1-layer network has none; "
            "use a network with at least one hidden layer (len(params) >= 2)"
        )
    return [layer["W"].shape[0] for layer in params[:-1]]


def _error_vector(params: Params, x_i: Array, y_i: Array, z_flat: Array, *, act, out_act, pi) -> Array:
    r"""$(\sqrt{\pi_1}\varepsilon_1, \dots, \sqrt{\pi_L}\varepsilon_L)$ of one sample as a function of its
    flattened hidden activities, so that $F_i = \frac12\lVert r(z)\rVert^2$."""

    widths = _hidden_widths(params)
    cuts = [sum(widths[: k + 1]) for k in range(len(widths) - 1)]
    zs = [x_i[None]] + [z[None] for z in jnp.split(z_flat, cuts)] + [y_i[None]]
    eps = errors(params, zs, act=act, out_act=out_act)
    return jnp.concatenate([jnp.sqrt(p) * e[0] for p, e in zip(pi, eps)])


def _ffwd_hidden(params: Params, x: Array, *, act, out_act) -> Array:

    return jnp.concatenate(forward(params, x, act=act, out_act=out_act)[1:-1], axis=1)


def _split_hidden(params: Params, flat: Array) -> list[Array]:
    widths = _hidden_widths(params)
    cuts = [sum(widths[: k + 1]) for k in range(len(widths) - 1)]
    return list(jnp.split(flat, cuts, axis=-1))


def fisher_information(
    params: Params,
    x: Array,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
) -> Array:
    r"""Fisher information $\mathcal I(\hat z)$ of the PC generative model at each sample's feedforward values.

    Read one sample's energy as the negative log-likelihood of Gaussian residuals,
    $F_i(z) = \sum_l \frac{\pi_l}{2}\lVert\varepsilon_l(z)\rVert^2$, with the hidden activities
    $z = (z_1, \dots, z_{L-1})$ as the parameters. The Fisher information of a Gaussian with
    precision $\pi_l$ and mean moving with $z$ is

    $$\mathcal I(z) = \sum_{l=1}^L \pi_l\, A_l(z)^\top A_l(z), \qquad A_l = \partial \varepsilon_l / \partial z ,$$

    the Gauss-Newton part of $\nabla_z^2 F$. It does not depend on the target. At the feedforward
    values the hidden errors vanish, so with a linear output layer $\mathcal I(\hat z)$ *equals* the
    Hessian $\nabla_z^2 F(\hat z)$ (Innocenti, Singh & Buckley 2023, Eq. 6).

    Returns an array of shape ``(N, D, D)``, $D = d_1 + \dots + d_{L-1}$, blocks ordered by layer.
    """
    check_params(params)
    _hidden_widths(params)
    x = jnp.asarray(x)
    check_data(params, x)
    pi = as_precisions(precisions, len(params), x.dtype)
    zhat = _ffwd_hidden(params, x, act=act, out_act=out_act)
    y0 = jnp.zeros((params[-1]["W"].shape[0],), x.dtype)  # the Jacobian does not depend on y

    def one(x_i, z_i):
        A = jax.jacfwd(lambda z: _error_vector(params, x_i, y0, z, act=act, out_act=out_act, pi=pi))(z_i)
        return A.T @ A

    return jax.vmap(one)(x, zhat)


def activity_gradient(
    params: Params,
    x: Array,
    y: Array,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
) -> Array:
    r"""$g = \nabla_z F_i(\hat z)$, each sample's energy gradient in the hidden activities at the feedforward values.

    Only the output term contributes there: $g$ is zero except in layer $L-1$, where it is
    $-\pi_L J_L^\top (y - \hat y)$, the gradient of the loss as a function of the activities.
    Shape ``(N, D)``.
    """
    check_params(params)
    _hidden_widths(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    pi = as_precisions(precisions, len(params), x.dtype)
    zhat = _ffwd_hidden(params, x, act=act, out_act=out_act)

    def one(x_i, y_i, z_i):
        return jax.grad(lambda z: 0.5 * jnp.sum(_error_vector(params, x_i, y_i, z, act=act, out_act=out_act, pi=pi) ** 2))(z_i)

    return jax.vmap(one)(x, y, zhat)


def natural_gradient_step(
    params: Params,
    x: Array,
    y: Array,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
) -> list[Array]:
    r"""The trust-region solution $\Delta z \approx -\mathcal I(\hat z)^{-1} g$ of each sample, per hidden layer.

    The minimiser of the quadratic model $g^\top\Delta z + \frac12\Delta z^\top\mathcal I\Delta z$: a natural-gradient
    step on the loss in activity space (Innocenti, Singh & Buckley 2023, Eq. 7). For a linear network
    it is the exact equilibrium displacement $z^* - \hat z$. Returns ``[dz_1, ..., dz_{L-1}]``, each ``(N, d_l)``.
    """
    I = fisher_information(params, x, act=act, out_act=out_act, precisions=precisions)
    g = activity_gradient(params, x, y, act=act, out_act=out_act, precisions=precisions)
    dz = -jax.vmap(lambda A, b: jsl.cho_solve(jsl.cho_factor(A), b))(I, g)
    return _split_hidden(params, dz)


def trust_region_energy(
    params: Params,
    x: Array,
    y: Array,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
) -> Array:
    r"""The equilibrated energy predicted by the quadratic (trust-region) model,

    $$\tilde F^*(\theta) = \frac1N\sum_i \Big[F_i(\hat z_i) - \tfrac12\, g_i^\top \mathcal I(\hat z_i)^{-1} g_i\Big],
    \qquad F_i(\hat z_i) = \tfrac{\pi_L}{2}\lVert y_i - \hat y_i\rVert^2 ,$$

    the model's value at its minimiser $\Delta z = -\mathcal I^{-1}g$. Exact ($= \mathcal F^*$) for linear networks.
    """

    I = fisher_information(params, x, act=act, out_act=out_act, precisions=precisions)
    g = activity_gradient(params, x, y, act=act, out_act=out_act, precisions=precisions)
    pi = as_precisions(precisions, len(params), jnp.asarray(x).dtype)
    q = jax.vmap(lambda A, b: b @ jsl.cho_solve(jsl.cho_factor(A), b))(I, g)
    return pi[-1] * mse_loss(params, x, y, act=act, out_act=out_act) - 0.5 * jnp.mean(q)


def trust_region_decomposition(
    params: Params,
    x: Array,
    y: Array,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
) -> dict:
    r"""Split the PC weight gradient as *BP direction + trust-region direction* (Innocenti et al. 2023, Eq. 8).

    Differentiating $\tilde F^*$ of :func:`trust_region_energy` in the weights gives

    $$\nabla_\theta \mathcal F^* \approx \underbrace{\pi_L \nabla_\theta \mathcal L}_{\text{BP}}
    \;\underbrace{-\;\nabla_\theta\, \tfrac1{2N}\textstyle\sum_i g_i^\top \mathcal I(\hat z_i)^{-1} g_i}_{\text{TR}} ,$$

    where the TR term is $-\frac1N\sum_i (\partial g_i/\partial\theta)^\top \mathcal I^{-1} g_i$ plus the change of
    $\mathcal I$ with $\theta$. Returns ``{"bp": ..., "tr": ..., "approx": bp + tr}``, each a params pytree.
    Exact for linear networks (where $\tilde F^* = \mathcal F^*$).
    """

    pi = as_precisions(precisions, len(params), jnp.asarray(x).dtype)
    bp = jax.grad(lambda p: pi[-1] * mse_loss(p, x, y, act=act, out_act=out_act))(params)
    full = jax.grad(lambda p: trust_region_energy(p, x, y, act=act, out_act=out_act, precisions=pi))(params)
    tr = jax.tree_util.tree_map(lambda a, b: a - b, full, bp)
    return {"bp": bp, "tr": tr, "approx": full}
