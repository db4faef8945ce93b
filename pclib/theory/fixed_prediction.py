r"""Inference under the *fixed-prediction assumption* (Millidge, Tschantz & Buckley 2020).

The predictions are frozen at their feedforward values, $\mu_l = \hat z_l$, and so are the Jacobians
$J_{l+1} = J_{l+1}(\hat z_l)$, while the activities descend the energy:

$$\dot z_l = -\pi_l(z_l - \hat z_l) + \pi_{l+1} J_{l+1}(\hat z_l)^\top (z_{l+1} - \hat z_{l+1}).$$

With the output clamped, $\varepsilon_L = y - \hat y$ never changes, and at equilibrium
$\pi_l\varepsilon_l = \pi_{l+1}J_{l+1}(\hat z_l)^\top\varepsilon_{l+1}$: backprop's recursion from backprop's
start, so for unit precisions the equilibrium errors *are* backprop's errors $\delta_l$
(Millidge et al. 2022, App. A.2, the first of its three routes from PC to backprop).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..energy import as_precisions
from ..model import Activation, Array, Params, check_data, check_params, forward, layer_activations, preactivation


def fixed_prediction_errors(
    params: Params,
    x: Array,
    y: Array,
    *,
    act: Activation = "tanh",
    out_act: Activation = "linear",
    steps: int = 200,
    dt: float = 0.2,
    precisions: Any = None,
) -> list[Array]:
    r"""Errors $[\varepsilon_1, \dots, \varepsilon_L]$ after ``steps`` Euler steps of fixed-prediction inference.

    Starts at the feedforward pass with the output clamped to ``y``. The dynamics are linear in the
    errors with a block-triangular matrix whose diagonal blocks are $\pi_l I$, so they converge for
    $0 < \mathrm dt < 2/\max_l \pi_l$, and each layer's error settles at rate $|1 - \mathrm dt\,\pi_l|$ per step
    once the layer above has settled. See the module docstring.
    """
    check_params(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    L = len(params)
    pi = as_precisions(precisions, L, params[0]["W"].dtype)
    if not dt > 0 or not steps >= 0:
        raise ValueError(f"dt must be positive and steps non-negative; got dt={dt}, steps={steps}")
    if float(dt) * float(jnp.max(pi)) >= 2:
        raise ValueError(f"dt = {dt} is unstable for precisions up to {float(jnp.max(pi))}: use dt < 2 / max(precisions)")
    fs = layer_activations(L, act=act, out_act=out_act)
    ff = forward(params, x, act=act, out_act=out_act)
    vjps = [jax.vjp(lambda z, l=l: fs[l](preactivation(params[l], z)), ff[l])[1] for l in range(1, L)]
    e_out = y - ff[-1]

    def step(eps, _):  # eps: hidden errors [eps_1, ..., eps_{L-1}] = z_l - hat z_l
        above = eps[1:] + [e_out]
        new = [e - dt * (pi[l] * e - pi[l + 1] * vjps[l](a)[0]) for l, (e, a) in enumerate(zip(eps, above))]
        return new, None

    eps0 = [jnp.zeros_like(z) for z in ff[1:-1]]
    eps, _ = jax.lax.scan(step, eps0, None, length=steps)
    return list(eps) + [e_out]
