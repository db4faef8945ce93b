r"""Small helpers shared by the theory modules: distances and angles between pytrees."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..model import Array


def relative_error(a: Any, b: Any) -> Array:
    r"""$\lVert a - b\rVert / \lVert b\rVert$ over whole pytrees (e.g. lists of activities)."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    num = jnp.sqrt(sum(jnp.sum((u - v) ** 2) for u, v in zip(la, lb)))
    den = jnp.sqrt(sum(jnp.sum(v**2) for v in lb))
    return num / den


def relative_error_trace(trajectory: Any, reference: Any) -> np.ndarray:
    r""":func:`relative_error` of every recorded step: ``trajectory`` is a list of ``(T, ...)`` arrays (e.g.
    ``infer(..., record=True).trajectory``, or a slice of its layers) and ``reference`` the matching list of
    ``(...)`` arrays. Returns ``(T,)`` NumPy values, computed on the host."""
    num = sum(np.sum((np.asarray(z) - np.asarray(r)[None]) ** 2, axis=tuple(range(1, np.ndim(z))))
              for z, r in zip(trajectory, reference))
    return np.sqrt(num / sum(float(np.sum(np.asarray(r) ** 2)) for r in reference))


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


def tree_cosine(a: Any, b: Any) -> Array:
    r"""Cosine of the angle between two pytrees read as flat vectors (the same as :func:`cosine`)."""
    return cosine(a, b)


def _tree_dot(a: Any, b: Any) -> Array:
    return sum(jnp.sum(u * v) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
