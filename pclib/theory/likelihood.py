r"""The exact marginal likelihood of a *linear* PCN, which the point-mass posterior of PC drops.

Under the generative model of chapter 1, $z_l = W_l z_{l-1} + b_l + \xi_l$ with
$\xi_l \sim \mathcal N(0, \pi_l^{-1} I)$ and $z_0 = x$, the output of a linear network given its input is
Gaussian, $y \mid x \sim \mathcal N(\hat y, S)$, with $\hat y$ the feedforward output and

$$S = \sum_{l=1}^{L} \pi_l^{-1} M_l M_l^\top, \qquad M_l = W_L \cdots W_{l+1}, \quad M_L = I$$

(:func:`pclib.theory.equilibrium_covariance`; Innocenti et al. 2024, Thm 1). Hence

$$-\log p(y \mid x) = \tfrac12 (y - \hat y)^\top S^{-1} (y - \hat y) + \tfrac12\log\det(2\pi S)
= F^* + \tfrac12 \log\det(2\pi S),$$

where $F^* = \min_z F$ is the equilibrated energy of the sample. PC's free energy with a point-mass
posterior (Millidge et al. 2022, Sec. 3.4) keeps the first term and drops the second, which is
why inflating the weights can lower $F^*$ without limit while the likelihood gets worse.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import jax.scipy.linalg as jsl

from ..energy import is_matrix_form
from ..model import Array, Params, check_data, check_params
from .linear import _linear_output, equilibrium_covariance


def linear_log_likelihood(params: Params, x: Array, y: Array, *, precisions: Any = None) -> Array:
    r"""Mean over samples of $-\log p(y_i \mid x_i)$ for a *linear* PCN read as a Gaussian generative model.

    $$-\frac1N\sum_i \log p(y_i \mid x_i) = \mathcal F^*(\theta) + \tfrac12\log\det(2\pi S),$$

    with $\mathcal F^*$ the equilibrated energy (:func:`pclib.theory.equilibrated_energy`) and $S$ the
    output covariance (:func:`pclib.theory.equilibrium_covariance`); Innocenti et al. (2024), Thm 1,
    and the EM reading of Millidge et al. (2022), Sec. 3.4. Differentiable in ``params``. The activation
    is the identity throughout; precisions are scalars per layer, all positive, or matrix precisions
    (symmetric positive definite, the inverse noise covariances).
    """
    check_params(params)
    x, y = jnp.asarray(x), jnp.asarray(y)
    check_data(params, x, y)
    if precisions is not None and not is_matrix_form(precisions) and not bool(jnp.all(jnp.asarray(precisions) > 0)):
        raise ValueError("precisions must all be positive: a zero or negative precision has no Gaussian reading")
    S = equilibrium_covariance(params, precisions=precisions)
    r = y - _linear_output(params, x)
    c, low = jsl.cho_factor(S, lower=True)
    quad = jnp.sum(r * jsl.cho_solve((c, low), r.T).T) / r.shape[0]
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(c)))
    d = S.shape[0]
    return 0.5 * quad + 0.5 * (logdet + d * jnp.log(2.0 * jnp.pi))
