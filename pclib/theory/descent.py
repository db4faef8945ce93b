r"""How inference moves the loss: the marginal condition and the energy gradient bound
(Millidge et al. 2022, Lemma 3.1 and Eq. 47), the quantities of the EM view."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from ..energy import energy_gradient_split
from ..model import Activation, Array, Params
from .util import _tree_dot


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
