r"""Precisions and generalised energies: the per-layer weights $\pi_l$ that move the equilibrium
between backprop and target propagation, and energies with other error penalties (Millidge et al. 2022, App. A.7-A.8)."""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from ..energy import as_precisions, errors
from ..model import Activation, Array, Params


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


def random_precision_matrix(seed: int, d: int, *, diag: float = 1.0, off_var: float = 0.1) -> Array:
    r"""A non-diagonal precision matrix as in Millidge et al. (2022), App. A.9.1: the inverse $\Pi = C^{-1}$ of a
    "mostly diagonal" covariance $C$ with every diagonal entry equal to ``diag`` and symmetric off-diagonal
    entries $C_{jk} = C_{kj} \sim \mathcal N(0, \text{off\_var})$, drawn by NumPy from the integer ``seed``
    (no compilation).

    Returns a symmetric positive definite ``(d, d)`` array.

    Raises
    ------
    ValueError
        If this $C$ is not positive definite (off-diagonal entries too large for ``diag``).
    """
    g = np.sqrt(off_var) * np.random.default_rng(seed).normal(size=(d, d))
    off = np.triu(g, 1)
    C = diag * np.eye(d) + off + off.T
    lam = float(np.linalg.eigvalsh(C)[0])
    if not lam > 0:
        raise ValueError(
            f"the covariance drawn is not positive definite (smallest eigenvalue {lam:.3g}): raise diag above "
            f"{diag - lam:.3g} or lower off_var"
        )
    P = np.linalg.inv(C)
    return jnp.asarray(0.5 * (P + P.T))


def lambda_precisions(lam: float, n_layers: int) -> Array:
    r"""Precisions that turn the energy into $\mathcal F_\lambda = \lambda\,\mathcal L(z) + (1-\lambda)\,\tilde E$.

    $\mathcal L(z)$ is the output layer's term and $\tilde E$ the hidden layers' terms (Millidge et al.
    2022, Eq. 48), so $\mathcal F_\lambda$ is the energy with $\pi = (1-\lambda, \dots, 1-\lambda, \lambda)$:
    the ``"output"`` ratio $\rho = \lambda / (1 - \lambda)$ up to a common factor.
    """
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1]; got {lam!r}")
    return jnp.full((n_layers,), 1.0 - float(lam)).at[-1].set(float(lam))


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
