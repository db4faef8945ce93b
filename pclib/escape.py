r"""Tools for escape experiments: leaving a saddle by gradient descent.

* :func:`normalized_sgd`: SGD with a fixed global step length, so that methods whose gradients differ
  in size are compared at *matched step length* (only the direction of the update differs); its
  normalisation :func:`normalize_updates` is also the matched mode of :func:`pclib.compare.compare`;
* :func:`escape_time`: the first iteration at which a loss curve falls below a fraction of its start;
* :func:`layer_norms`: the Frobenius norm of each layer's weight gradient (or weights).

Book chapter 5 (strict saddles; cf. Innocenti et al. 2024, Figs. 4-5).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["escape_time", "layer_norms", "normalize_updates", "normalized_sgd"]


def normalize_updates(enabled: Any = True) -> optax.GradientTransformation:
    r"""The direction of the update: $g \mapsto g\cdot(1/\lVert g\rVert)$ (the global norm over all leaves), $0 \mapsto 0$.

    Chained before an optimiser it makes every step's length that optimiser's rate: the *matched*
    mode of :func:`pclib.compare.compare` and :func:`normalized_sgd` both use it. ``enabled`` may be a
    traced boolean (where false the updates pass unchanged), so one compiled program serves both modes.
    """

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        norm = jnp.sqrt(sum(jnp.sum(u**2) for u in jax.tree_util.tree_leaves(updates)))
        scale = jnp.where(enabled & (norm > 0), 1.0 / jnp.where(norm > 0, norm, 1.0), 1.0)
        return jax.tree_util.tree_map(lambda u: u * scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def normalized_sgd(step_length: float) -> optax.GradientTransformation:
    r"""Gradient descent on the direction of the gradient: $\theta \leftarrow \theta - \eta\,g/\lVert g\rVert$.

    Every update has global (all-layer) Euclidean norm ``step_length`` $= \eta$, whatever the size of the
    gradient $g$. Two methods trained with it take steps of the same length and differ only in their
    directions, which removes the advantage a method gets from larger gradients alone. It is
    :func:`normalize_updates` followed by ``optax.sgd(step_length)``, the matched mode of
    :func:`pclib.compare.compare` with SGD.
    """
    if not (isinstance(step_length, (int, float)) and step_length > 0):
        raise ValueError(f"step_length must be a positive number (the norm of every update); got {step_length!r}")
    return optax.chain(normalize_updates(), optax.sgd(step_length))


def escape_time(losses: Any, *, frac: float = 0.9) -> int:
    r"""The first index $k$ with ``losses[k] < frac * losses[0]``, or ``len(losses) - 1`` (the budget) if none.

    ``losses[0]`` is the value at the start. A return value equal to the budget means *no escape
    within the budget*: the true escape time is then only known to be at least that.
    """
    losses = np.asarray(losses)
    if losses.ndim != 1 or losses.size < 2:
        raise ValueError(f"losses must be a 1-D curve with the starting value first; got shape {losses.shape}")
    if not 0 < frac < 1:
        raise ValueError(f"frac must be in (0, 1), e.g. 0.9 for a 10% drop; got {frac}")
    below = losses < frac * losses[0]
    return int(np.argmax(below)) if below.any() else losses.size - 1


def layer_norms(tree: Any) -> np.ndarray:
    """The Frobenius norm of each layer's ``"W"`` in a list of layer dicts (e.g. a gradient), shape ``(L,)``."""
    if not isinstance(tree, (list, tuple)) or not all(isinstance(layer, dict) and "W" in layer for layer in tree):
        raise ValueError("expected a list of layer dicts with a 'W' entry, e.g. pclib.bp_grads(...)")
    return np.array([float(jnp.linalg.norm(layer["W"])) for layer in tree])
