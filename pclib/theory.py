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
import numpy as np

from .energy import as_precisions, energy, energy_gradient_split, errors, mse_loss, sample_energies
from .inference import infer
from .model import Activation, Array, Params, check_data, check_params, forward, layer_activations, predict, preactivation


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


# --- chapter 4: trust regions ---
#
# Innocenti, Singh & Buckley (2023), "Understanding predictive coding as a second-order
# trust-region method". Expand one sample's energy around the feedforward values
# \hat z (output clamped to y):
#
#   F(\hat z + \Delta z) = F(\hat z) + g^T \Delta z + 1/2 \Delta z^T H_F(\hat z) \Delta z + O(\Delta z^3),
#
# where F(\hat z) = \pi_L L (all hidden errors vanish), g = \nabla_z F(\hat z) is the gradient of
# the output term (the loss as a function of the activities), and H_F(\hat z) = I(\hat z), the
# Gauss-Newton / Fisher matrix below, whenever the output layer is linear.


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


def tree_cosine(a: Any, b: Any) -> Array:
    r"""Cosine of the angle between two pytrees read as flat vectors (the same as :func:`cosine`)."""
    return cosine(a, b)


# --- chapter 2: EM view ---


def _tree_dot(a: Any, b: Any) -> Array:
    return sum(jnp.sum(u * v) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def marginal_residual(
    params: Params,
    activities: Sequence[Array],
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
) -> Array:
    r"""How far the activities are from the marginal condition (Millidge et al. 2022, Lemma 3.1):

    $$r = \frac{\lVert \nabla_z \mathcal L + \nabla_z \tilde E \rVert}{\lVert \nabla_z \mathcal L \rVert},$$

    over all hidden layers and samples. At an inference equilibrium $\nabla_z \mathcal F = 0$, so
    $r = 0$: every decrease of $\mathcal L$ would cost exactly as much $\tilde E$. $r = 1$ at the
    feedforward pass, where $\nabla_z\tilde E = 0$.

    Raises ``ValueError`` if $\nabla_z\mathcal L = 0$ (the output already fits its target), where
    the ratio is undefined.
    """

    gL, gE = energy_gradient_split(params, activities, act=act, out_act=out_act, precisions=precisions)
    num = jnp.sqrt(sum(jnp.sum((a + b) ** 2) for a, b in zip(gL, gE)))
    den = jnp.sqrt(_tree_dot(gL, gL))
    if not isinstance(den, jax.core.Tracer) and float(den) == 0.0:
        raise ValueError(
            "marginal_residual is undefined where dL/dz = 0 (the output already matches its target, or "
            "the output layer ignores z_{L-1}); measure the raw force with pclib.energy_gradient_split"
        )
    return num / den


def loss_descent_rate(
    params: Params,
    activities: Sequence[Array],
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
) -> Array:
    r"""$-\mathrm d\mathcal L_i/\mathrm dt$ for each sample $i$ under its inference flow $\dot z = -\nabla_z F_i$:

    $$-\frac{\mathrm d\mathcal L}{\mathrm dt} = \nabla_z\mathcal L^\top\nabla_z\mathcal F
    = \lVert\nabla_z\mathcal L\rVert^2 + \nabla_z\mathcal L^\top\nabla_z\tilde E .$$

    It is positive (the loss falls) exactly when the *energy gradient bound*
    $-\nabla_z\mathcal L^\top\nabla_z\tilde E < \lVert\nabla_z\mathcal L\rVert^2$ of
    Millidge et al. (2022, Eq. 47) holds. Shape ``(N,)``: one value per sample, since each sample
    follows its own flow; the batch loss $\mathcal L = \frac1N\sum_i \mathcal L_i$ falls at the mean rate.
    At the feedforward pass $\nabla_z\tilde E = 0$ and the rate is $\lVert\nabla_z\mathcal L\rVert^2 \ge 0$.
    """

    gL, gE = energy_gradient_split(params, activities, act=act, out_act=out_act, precisions=precisions)
    return sum(jnp.sum(a * (a + b), axis=1) for a, b in zip(gL, gE))


def linear_equilibrated_energy(params: Params, x: Array, y: Array, *, precisions: Any = None) -> Array:
    r"""$\mathcal F^*(\theta) = \min_z \mathcal F(z;\theta)$ for a *linear* PCN, via :func:`linear_equilibrium`.

    Differentiable in ``params``: by the envelope theorem (chapter 2),
    $\nabla_\theta\mathcal F^* = \partial_\theta\mathcal F(z^*;\theta)$, PC's weight gradient at the
    exact equilibrium. $\mathcal F^* \le \mathcal L(\theta)$, the feedforward loss.
    """

    z = linear_equilibrium(params, x, y, precisions=precisions)
    return energy(params, z, act="linear", out_act="linear", precisions=precisions)


# --- chapter 3: target propagation ---

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
        if pinv:
            ts.insert(0, a @ jnp.linalg.pinv(W).T)
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
        ts.insert(0, jnp.linalg.solve(W, a.T).T)
    return [None] * lowest + ts


def cosine(a: Any, b: Any) -> Array:
    r"""Cosine similarity $\langle a, b\rangle / (\lVert a\rVert\,\lVert b\rVert)$ of two pytrees, flattened whole
    (e.g. lists of activities or errors, all samples together)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    if len(la) != len(lb):
        raise ValueError(f"cosine needs two pytrees with the same leaves; got {len(la)} and {len(lb)} arrays")
    dot = sum(jnp.sum(u * v) for u, v in zip(la, lb))
    na = jnp.sqrt(sum(jnp.sum(u**2) for u in la))
    nb = jnp.sqrt(sum(jnp.sum(v**2) for v in lb))
    return dot / (na * nb)


def angle(a: Any, b: Any) -> Array:
    """The angle between two pytrees in degrees, from :func:`cosine` (clipped to [-1, 1])."""
    return jnp.degrees(jnp.arccos(jnp.clip(cosine(a, b), -1.0, 1.0)))


RATIO_SCHEMES = ("output", "geometric")


def ratio_precisions(ratio: float, n_layers: int, *, scheme: str = "geometric") -> Array:
    r"""Per-layer precisions for a feedback-to-feedforward precision ratio $\rho$, shape ``(L,)``.

    ``"output"``: $\pi = (1, \dots, 1, \rho)$, the output layer against the rest (Millidge et al.
    2022, App. A.7). ``"geometric"``: $\pi_l = \rho^{\,l-1}$, so every ratio $\pi_{l+1}/\pi_l = \rho$
    (their Sec. 3.2). Both agree for one hidden layer. The result is divided by its largest
    entry: a common factor rescales time and moves no equilibrium, and it keeps $\mathrm dt$ stable.
    """
    if scheme not in RATIO_SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}: use one of {', '.join(map(repr, RATIO_SCHEMES))}")
    if not float(ratio) > 0:
        raise ValueError(f"the precision ratio must be positive; got {ratio!r}")
    r = jnp.asarray(float(ratio))
    if scheme == "output":
        pi = jnp.ones((n_layers,)).at[-1].set(r)
    else:
        pi = r ** jnp.arange(n_layers, dtype=r.dtype)
    return pi / jnp.max(pi)


def lambda_precisions(lam: float, n_layers: int) -> Array:
    r"""Precisions that turn the energy into $\mathcal F_\lambda = \lambda\,\mathcal L(z) + (1-\lambda)\,\tilde E$.

    $\mathcal L(z)$ is the output layer's term and $\tilde E$ the hidden layers' terms (Millidge et al.
    2022, Eq. 48), so $\mathcal F_\lambda$ is the energy with $\pi = (1-\lambda, \dots, 1-\lambda, \lambda)$:
    the ``"output"`` ratio $\rho = \lambda / (1 - \lambda)$ up to a common factor.
    """
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1]; got {lam!r}")
    return jnp.full((n_layers,), 1.0 - float(lam)).at[-1].set(float(lam))


def equilibrium(
    params: Params,
    x: Array,
    y: Array,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    steps: int = 2000,
    dt: float | None = None,
    init: Any = "ffwd",
) -> list[Array]:
    r"""The inference equilibrium with both ends clamped: the closed form for linear networks
    (:func:`linear_equilibrium`), otherwise ``steps`` steps of :func:`pclib.infer`.

    ``dt=None`` takes $\mathrm dt = 0.5 / \max_l (\pi_l + \pi_{l+1}\lVert W_{l+1}\rVert_2^2)$ for the iterative
    case, a bound on the largest curvature of a Gauss-Newton energy (tanh' <= 1).
    """
    if act == "linear" and out_act == "linear":
        return linear_equilibrium(params, x, y, precisions=precisions)

    pi = as_precisions(precisions, len(params), params[0]["W"].dtype)
    if dt is None:
        norms = [float(jnp.linalg.norm(p["W"], 2)) ** 2 for p in params[1:]] + [0.0]
        dt = 0.5 / max(float(pi[l]) + (float(pi[l + 1]) if l + 1 < len(params) else 0.0) * norms[l]
                       for l in range(len(params)))
    return infer(params, x, y, act=act, out_act=out_act, precisions=pi, steps=steps, dt=dt, init=init).activities


def interpolation_sweep(
    params: Params,
    x: Array,
    y: Array,
    ratios: Sequence[float],
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    scheme: str = "geometric",
    steps: int = 2000,
    pinv: bool = False,
) -> dict[str, Any]:
    r"""Where the clamped equilibrium sits between backprop and target propagation, per precision ratio.

    For each ratio $\rho$ (precisions from :func:`ratio_precisions`) it finds the equilibrium $z^*$
    (closed form if linear, else inference warm-started from the previous ratio's equilibrium; sort
    ``ratios`` ascending) and measures, over the hidden layers $1..L-1$:

    * ``dist_ff``, ``dist_tp``: $\lVert z^* - \hat z\rVert / \lVert \hat z\rVert$ and $\lVert z^* - t\rVert / \lVert t\rVert$,
      with $\hat z$ the feedforward pass and $t$ the TP targets (:func:`tp_targets`);
    * ``angle_bp``: the angle between the precision-weighted equilibrium errors $\pi_l\varepsilon^*_l$
      and backprop's $\delta_l$ (:func:`backprop_errors` at the feedforward pass);
    * ``angle_tp``: the angle between the move $z^* - \hat z$ and the move that TP asks for, $t - \hat z$.

    ``pinv`` is passed to :func:`tp_targets` (for non-square weights). Returns a dict of NumPy
    arrays of shape ``(len(ratios),)`` plus ``"ratios"``.
    """
    L = len(params)
    if L < 2:
        raise ValueError("the interpolation needs at least one hidden layer (two weight layers)")
    ff = forward(params, x, act=act, out_act=out_act)
    ts = tp_targets(params, y, act=act, out_act=out_act, lowest=1, pinv=pinv)
    delta = backprop_errors(params, ff, y - ff[-1], act=act, out_act=out_act)
    hid = slice(1, L)
    out = {k: [] for k in ("dist_ff", "dist_tp", "angle_bp", "angle_tp")}
    init: Any = "ffwd"
    for r in ratios:
        pi = ratio_precisions(r, L, scheme=scheme)
        zs = equilibrium(params, x, y, act=act, out_act=out_act, precisions=pi, steps=steps, init=init)
        init = zs
        eps = errors(params, zs, act=act, out_act=out_act)
        out["dist_ff"].append(relative_error(zs[hid], ff[hid]))
        out["dist_tp"].append(relative_error(zs[hid], ts[hid]))
        out["angle_bp"].append(angle([p * e for p, e in zip(pi[:-1], eps[:-1])], delta[:-1]))
        out["angle_tp"].append(angle([z - f for z, f in zip(zs[hid], ff[hid])], [t - f for t, f in zip(ts[hid], ff[hid])]))
    res = {k: np.asarray([float(v) for v in vs]) for k, vs in out.items()}
    res["ratios"] = np.asarray(ratios, dtype=float)
    return res


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


def generalised_energy(
    params: Params,
    activities: Sequence[Array],
    *,
    h: Any,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
) -> Array:
    r"""An energy with another penalty $h$ on each prediction error (Millidge et al. 2022, App. A.8):

    $$\mathcal F_h = \frac1N \sum_i \sum_l \pi_l \sum_k h(\varepsilon_{l,i,k}).$$

    $h(e) = e^2/2$ gives the usual energy. ``h`` is an elementwise JAX function, e.g.
    ``lambda e: 0.5 * jnp.log1p(e**2)`` (Cauchy errors, whose gradient $e/(1+e^2)$ is a divisive error).
    """

    eps = errors(params, activities, act=act, out_act=out_act)
    pi = as_precisions(precisions, len(params), eps[0].dtype)
    return sum(p * jnp.sum(h(e)) for p, e in zip(pi, eps)) / eps[0].shape[0]


def generalised_infer(
    params: Params,
    x: Array,
    y: Array,
    *,
    h: Any,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    precisions: Any = None,
    steps: int = 1000,
    dt: float = 0.1,
) -> list[Array]:
    r"""Inference on :func:`generalised_energy`: ``steps`` Euler steps of gradient descent on each
    sample's $F_{h,i}$ in the hidden activities, from the feedforward pass, both ends clamped.

    Returns the activities ``[x, z_1, ..., z_{L-1}, y]``; the energy is checked to have fallen.
    """

    check_params(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    zs = forward(params, x, act=act, out_act=out_act)
    n = x.shape[0]

    def total(hidden):
        return n * generalised_energy(params, [x, *hidden, y], h=h, act=act, out_act=out_act, precisions=precisions)

    @jax.jit
    def run(hidden):
        def step(hd, _):
            g = jax.grad(total)(hd)
            return [z - dt * gz for z, gz in zip(hd, g)], None
        return jax.lax.scan(step, hidden, None, length=int(steps))[0]

    hidden = run(zs[1:-1])
    f0, f1 = float(total(zs[1:-1])), float(total(hidden))
    if not f1 <= f0 + 1e-12 * abs(f0) or not jnp.isfinite(f1):
        raise FloatingPointError(
            f"generalised inference diverged: the energy went from {f0:.3g} to {f1:.3g}; use a smaller dt"
        )
    return [x, *hidden, y]


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
