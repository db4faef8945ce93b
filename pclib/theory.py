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
    from .energy import energy_gradient_split

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
    from .energy import energy_gradient_split

    gL, gE = energy_gradient_split(params, activities, act=act, out_act=out_act, precisions=precisions)
    return sum(jnp.sum(a * (a + b), axis=1) for a, b in zip(gL, gE))


def linear_equilibrated_energy(params: Params, x: Array, y: Array, *, precisions: Any = None) -> Array:
    r"""$\mathcal F^*(\theta) = \min_z \mathcal F(z;\theta)$ for a *linear* PCN, via :func:`linear_equilibrium`.

    Differentiable in ``params``: by the envelope theorem (chapter 2),
    $\nabla_\theta\mathcal F^* = \partial_\theta\mathcal F(z^*;\theta)$, PC's weight gradient at the
    exact equilibrium. $\mathcal F^* \le \mathcal L(\theta)$, the feedforward loss.
    """
    from .energy import energy

    z = linear_equilibrium(params, x, y, precisions=precisions)
    return energy(params, z, act="linear", out_act="linear", precisions=precisions)
