r"""Hessians, Hessian-vector products and extreme eigenvalues of functions of the weights.

Exact Hessians of any scalar
function of the parameters (the loss $\mathcal L$, the equilibrated energy $\mathcal F^*$)
with respect to the flattened parameters, their eigenspectra, and, for networks too large for a
dense Hessian, the extreme eigenvalues from Hessian-vector products and Lanczos iteration
(ARPACK's implicitly restarted Lanczos, :func:`scipy.sparse.linalg.eigsh`).
A function ``fn(params, *args, **kwargs) -> scalar`` is differentiated in ``params``; ``args``
(e.g. ``x, y``) are passed through. Parameters are flattened with
:func:`jax.flatten_util.ravel_pytree`: layer by layer, inside a layer ``"W"`` then ``"b"``
(sorted keys), each matrix row-major.

The two-weight toy chain and its landscapes are in :mod:`pclib.theory.toy`.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .model import Array


def flatten(params: Any) -> tuple[Array, Callable[[Array], Any]]:
    """Flatten a parameter pytree to one vector; returns ``(flat, unflatten)``."""
    return ravel_pytree(params)


def _flat_fn(fn: Callable, params: Any, kwargs: dict) -> tuple[Array, Callable]:
    if not callable(fn):
        raise TypeError(f"fn must be a function fn(params, *args) -> scalar; got {type(fn).__name__}")
    flat, unflatten = flatten(params)
    if flat.size == 0:
        raise ValueError("params has no array leaves to differentiate")

    def f(w, *args):
        out = fn(unflatten(w), *args, **kwargs)
        if jnp.ndim(out) != 0:
            raise ValueError(f"fn must return a scalar; got shape {jnp.shape(out)}")
        return out

    return flat, f


@partial(jax.jit, static_argnums=0)
def _tree_hessian(fn: Callable, params: Any, *args: Any) -> Any:
    return jax.hessian(fn)(params, *args)


def hessian(fn: Callable, params: Any, *args: Any, **kwargs: Any) -> Array:
    r"""The dense Hessian $\nabla^2_\theta\, \mathrm{fn}(\theta, \ldots)$ in the flattened parameters, ``(P, P)``.

    Exact (``jax.hessian``, forward-over-reverse), compiled once per ``fn`` and parameter shapes
    (pass the same function object to reuse the compilation; ``kwargs`` are bound with
    :func:`functools.partial`, which compiles anew on every call). Rows and columns follow
    :func:`flatten`. Memory grows as $P^2$: for large networks use :func:`hvp` and
    :func:`extreme_eigenvalues`.
    """
    flat, _ = _flat_fn(fn, params, kwargs)
    f = partial(fn, **kwargs) if kwargs else fn
    out = jax.eval_shape(f, params, *args)
    if out.shape != ():
        raise ValueError(f"fn must return a scalar; got shape {out.shape}")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    H = _tree_hessian(f, params, *args)
    rows = []
    for leaf_i, inner in zip(leaves, treedef.flatten_up_to(H)):
        blocks = treedef.flatten_up_to(inner)
        rows.append(jnp.concatenate([b.reshape(leaf_i.size, leaf_j.size) for b, leaf_j in zip(blocks, leaves)], axis=1))
    return jnp.concatenate(rows, axis=0)


def spectrum(fn: Callable, params: Any, *args: Any, **kwargs: Any) -> np.ndarray:
    """All eigenvalues of :func:`hessian`, ascending (a NumPy array)."""
    H = np.asarray(hessian(fn, params, *args, **kwargs))
    return np.linalg.eigvalsh(0.5 * (H + H.T))


def hvp(fn: Callable, params: Any, *args: Any, **kwargs: Any) -> Callable[[Array], Array]:
    r"""A compiled Hessian-vector product $v \mapsto \nabla^2_\theta \mathrm{fn}\; v$ at ``params``.

    Forward-over-reverse, ``jax.jvp`` of ``jax.grad``: one call costs a few gradient evaluations
    and never forms the Hessian. ``v`` is a flat vector of length $P$ (see :func:`flatten`).
    """
    flat, f = _flat_fn(fn, params, kwargs)
    grad_f = jax.grad(f)

    @jax.jit
    def _hvp(w, v, *a):
        return jax.jvp(lambda u: grad_f(u, *a), (w,), (v,))[1]

    def apply(v: Array) -> Array:
        v = jnp.asarray(v, flat.dtype)
        if v.shape != flat.shape:
            raise ValueError(f"v must be a flat vector of shape {flat.shape} (see landscape.flatten); got {v.shape}")
        return _hvp(flat, v, *args)

    return apply


def extreme_eigenvalues(
    fn: Callable,
    params: Any,
    *args: Any,
    k: int = 1,
    which: str = "SA",
    tol: float = 1e-8,
    maxiter: int | None = None,
    seed: int = 0,
    return_eigenvectors: bool = False,
    **kwargs: Any,
) -> Any:
    r"""The ``k`` extreme eigenvalues of the Hessian of ``fn`` by Lanczos on Hessian-vector products.

    ``which``: ``"SA"`` smallest (most negative), ``"LA"`` largest, ``"LM"`` largest in magnitude
    (as in :func:`scipy.sparse.linalg.eigsh`, which runs ARPACK's implicitly restarted Lanczos
    on a ``LinearOperator`` whose matvec is the compiled :func:`hvp`). Needs no $P\times P$ matrix, so it
    scales to networks with millions of weights. The starting vector is drawn from ``seed``, so
    results are reproducible. If the Hessian is exactly zero (e.g. $\mathcal L$ at the origin of a
    deep linear net), Lanczos breaks down at once; this returns zeros, which is then exact.

    Returns the eigenvalues ascending (and the eigenvectors as columns if ``return_eigenvectors``).
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    if which not in ("SA", "LA", "LM", "SM"):
        raise ValueError(f"which must be 'SA' (smallest), 'LA' (largest), 'LM' or 'SM'; got {which!r}")
    flat, _ = flatten(params)
    P = int(flat.size)
    if not (isinstance(k, (int, np.integer)) and 1 <= k < P):
        raise ValueError(f"k must be an int with 1 <= k < {P} (the number of parameters); got {k!r}")
    matvec = hvp(fn, params, *args, **kwargs)
    dtype = np.dtype(flat.dtype)
    v0 = np.random.default_rng(seed).standard_normal(P).astype(dtype)
    Hv0 = np.asarray(matvec(v0))
    if not np.any(Hv0):  # the Krylov space is {v0}: for a random v0 this means H = 0
        vals = np.zeros(k, dtype)
        return (vals, np.zeros((P, k), dtype)) if return_eigenvectors else vals
    op = LinearOperator((P, P), matvec=lambda v: np.asarray(matvec(np.asarray(v, dtype).ravel()), dtype), dtype=dtype)
    out = eigsh(op, k=k, which=which, tol=tol, maxiter=maxiter, v0=v0, return_eigenvectors=return_eigenvectors)
    if return_eigenvectors:
        vals, vecs = out
        order = np.argsort(vals)
        return vals[order], vecs[:, order]
    return np.sort(out)
