r"""The Fisher information of the activities and PC as a trust-region method
(Innocenti, Singh & Buckley 2023, "Understanding predictive coding as a second-order trust-region method").

Expand one sample's energy around the feedforward values $\hat z$ (output clamped to $y$):

$$F(\hat z + \Delta z) = F(\hat z) + g^\top \Delta z + \tfrac12 \Delta z^\top H_F(\hat z) \Delta z + O(\Delta z^3),$$

where $F(\hat z) = \pi_L \mathcal L$ (all hidden errors vanish), $g = \nabla_z F(\hat z)$ is the gradient of
the output term (the loss as a function of the activities), and $H_F(\hat z) = \mathcal I(\hat z)$, the
Gauss-Newton / Fisher matrix, whenever the output layer is linear.
"""

from __future__ import annotations

from functools import partial
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
    Hessian $\nabla_z^2 F(\hat z)$ (Innocenti, Singh & Buckley 2023; Eq. 6 of the first author's blog summary).

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
    step on the loss in activity space (Innocenti, Singh & Buckley 2023; Eq. 7 of the blog summary). For a linear network
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
    r"""Split the PC weight gradient as *BP direction + trust-region direction* (Innocenti et al. 2023; cf. the unnumbered weight-gradient formula after Eq. 7 of the blog summary, which differs in form: see :func:`blog_weight_gradient`).

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


def _step_factors(params: Params, x_i: Array, z_i: Array, *, act, out_act) -> tuple[Array, Array]:
    r"""One sample's Jacobians at $\hat z$: $J = \partial(\varepsilon_1, \dots, \varepsilon_{L-1})/\partial z$ (unit
    lower triangular) and $A = \partial \hat y / \partial z$ (non-zero only in the block of $z_{L-1}$)."""
    L = len(params)
    y0 = jnp.zeros((params[-1]["W"].shape[0],), x_i.dtype)
    ones = jnp.ones((L,), x_i.dtype)
    full = jax.jacfwd(lambda z: _error_vector(params, x_i, y0, z, act=act, out_act=out_act, pi=ones))(z_i)
    d_out = params[-1]["W"].shape[0]
    return full[:-d_out], -full[-d_out:]  # eps_L = y - y_hat, so d y_hat / dz = -d eps_L / dz


def _check_ratio(ratio: Any) -> Array:
    r = jnp.asarray(ratio)
    if r.ndim != 0:
        raise ValueError(f"ratio must be one positive number (the output precision ratio rho); got shape {tuple(r.shape)}")
    try:
        bad = not float(r) > 0
    except (TypeError, jax.errors.ConcretizationTypeError):  # traced under jit or grad: no check possible
        bad = False
    if bad:
        raise ValueError(f"ratio must be > 0 (rho = pi_L / pi_hidden; use jnp.inf for the Gauss-Newton limit); got {ratio!r}")
    return r


def _checked(params: Params, x: Any, y: Any, ratio: Any) -> tuple[Array, Array, Array]:
    """The checks of :func:`trust_region_step` and :func:`trust_region_radius`: data as arrays and $\rho$."""
    check_params(params)
    _hidden_widths(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    return x, y, _check_ratio(ratio).astype(x.dtype)


def trust_region_step(
    params: Params,
    x: Array,
    y: Array,
    *,
    ratio: float,
    act: Activation = "tanh",
    out_act: Activation = "linear",
) -> list[Array]:
    r"""The Levenberg-Marquardt step that inference takes with output precision ratio $\rho$.

    With precisions $(1, \dots, 1, \rho)$, linearise each sample's errors around the feedforward
    values $\hat z$: the hidden errors become $J\Delta z$ ($J$ unit lower triangular) and the output
    error $e - A\Delta z$, with $e = y - \hat y$ and $A = \partial\hat y/\partial z$. The model
    $\tfrac12\lVert J\Delta z\rVert^2 + \tfrac\rho2\lVert e - A\Delta z\rVert^2$ is minimised by

    $$\Delta z(\rho) = \big(\rho^{-1} H + A^\top A\big)^{-1} A^\top e
    = H^{-1}A^\top\big(\rho^{-1} I + A H^{-1} A^\top\big)^{-1} e, \qquad H = J^\top J ,$$

    the solution of the trust-region subproblem $\min \tfrac12\lVert e - A\Delta z\rVert^2$ subject to
    $\lVert J\Delta z\rVert \le r(\rho)$ with Lagrange multiplier (damping) $1/\rho$
    (Innocenti, Singh & Buckley 2023; Levenberg 1944, Marquardt 1963). The second form is used, so
    ``ratio=jnp.inf`` gives the Gauss-Newton limit $H^{-1}A^\top(AH^{-1}A^\top)^{-1}e$ (needs
    $d_L \le d_{L-1}$ and a full-rank $A$). For a linear network $\Delta z(\rho)$ is exactly the
    equilibrium with precisions $(1, \dots, 1, \rho)$ minus the feedforward pass; for one hidden layer
    it is Chapter 3's ridge path. At ``ratio=1`` it equals :func:`natural_gradient_step`.

    Returns ``[dz_1, ..., dz_{L-1}]``, each ``(N, d_l)``, like ``forward``'s hidden activities.
    """
    x, y, rho = _checked(params, x, y, ratio)
    return _split_hidden(params, _step_jit(params, x, y, rho, act=act, out_act=out_act))


@partial(jax.jit, static_argnames=("act", "out_act"))
def _step_jit(params, x, y, rho, *, act, out_act):
    r"""Every sample's $\Delta z(\rho)$, concatenated over the hidden layers: compiled once per shape."""
    ff = forward(params, x, act=act, out_act=out_act)
    zhat, e = jnp.concatenate(ff[1:-1], axis=1), y - ff[-1]

    def one(x_i, z_i, e_i):
        J, A = _step_factors(params, x_i, z_i, act=act, out_act=out_act)
        # H^{-1} A^T = J^{-1} J^{-T} A^T by two triangular solves
        B = jsl.solve_triangular(J, jsl.solve_triangular(J, A.T, trans=1, lower=True), lower=True)
        K = A @ B + jnp.eye(A.shape[0], dtype=A.dtype) / rho
        return B @ jnp.linalg.solve(K, e_i)

    return jax.vmap(one)(x, zhat, e)


@partial(jax.jit, static_argnames=("act", "out_act"))
def _radius_jit(params, x, y, rho, *, act, out_act):
    dz = _step_jit(params, x, y, rho, act=act, out_act=out_act)
    ff = forward(params, x, act=act, out_act=out_act)
    zhat = jnp.concatenate(ff[1:-1], axis=1)
    Js = jax.vmap(lambda x_i, z_i: _step_factors(params, x_i, z_i, act=act, out_act=out_act)[0])(x, zhat)
    return jnp.linalg.norm(jnp.einsum("nij,nj->ni", Js, dz), axis=1)


def trust_region_radius(
    params: Params,
    x: Array,
    y: Array,
    *,
    ratio: float,
    act: Activation = "tanh",
    out_act: Activation = "linear",
) -> Array:
    r"""Each sample's trust-region radius $r(\rho) = \lVert J\Delta z(\rho)\rVert = \sqrt{\Delta z^\top H\Delta z}$.

    The norm of the hidden prediction errors that the step of :func:`trust_region_step` creates:
    the size of the region around the feedforward pass that inference may move in. It rises
    from 0 ($\rho \to 0$) to the Gauss-Newton step's $\lVert J\Delta z_{\rm GN}\rVert$ ($\rho \to \infty$),
    in proportion to the output error $\lVert e\rVert$. Shape ``(N,)``.
    """
    x, y, rho = _checked(params, x, y, ratio)
    return _radius_jit(params, x, y, rho, act=act, out_act=out_act)


def blog_weight_gradient(
    params: Params,
    x: Array,
    y: Array,
    *,
    sign: float = 1.0,
    act: Activation = "tanh",
    out_act: Activation = "linear",
) -> Params:
    r"""The weight-gradient approximation as printed in the blog summary of Innocenti et al. (2023):

    $$\nabla_\theta\mathcal F^* \approx g_{\mathcal L}(\theta) + s\,\frac1N\sum_i
    \Big(\frac{\partial\hat z_i}{\partial\theta}\Big)^\top \mathcal I(\hat z_i)^{-1} g_i ,$$

    with $g_{\mathcal L}(\theta)$ the backprop gradient, $g_i = \nabla_z F_i(\hat z_i)$ and
    $\partial\hat z/\partial\theta$ the Jacobian of the feedforward hidden activities. The blog prints
    $s = +1$; $s = -1$ reads the correction as $+(\partial\hat z/\partial\theta)^\top\Delta z_{\rm TR}$. It is
    *not* the gradient of the quadratic model (that is :func:`trust_region_decomposition`), and
    Chapter 4 measures where it points. Unit precisions. Returns a params pytree.
    """
    check_params(params)
    _hidden_widths(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    I = fisher_information(params, x, act=act, out_act=out_act)
    g = activity_gradient(params, x, y, act=act, out_act=out_act)
    cot = jax.vmap(lambda A, b: jsl.cho_solve(jsl.cho_factor(A), b))(I, g) / x.shape[0]
    _, vjp = jax.vjp(lambda p: _ffwd_hidden(p, x, act=act, out_act=out_act), params)
    corr = vjp(cot)[0]
    bp = jax.grad(lambda p: mse_loss(p, x, y, act=act, out_act=out_act))(params)
    return jax.tree_util.tree_map(lambda a, b: a + sign * b, bp, corr)
