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
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .model import Array


def flatten(params: Any) -> tuple[Array, Callable[[Array], Any]]:
    """Flatten a parameter pytree to one vector; returns ``(flat, unflatten)``."""
    return ravel_pytree(params)


def _flat_spec(params: Any) -> jax.ShapeDtypeStruct:
    """Shape and dtype of the flattened parameters, without flattening them (nothing is compiled)."""
    spec = jax.eval_shape(lambda p: ravel_pytree(p)[0], params)
    if spec.size == 0:
        raise ValueError("params has no array leaves to differentiate")
    return spec


@partial(jax.jit, static_argnums=0)
def _dense_hessians(fns: tuple, params: Any, *args: Any) -> tuple:
    flat, unflatten = ravel_pytree(params)
    grads = [jax.grad(lambda w, fn=fn: fn(unflatten(w), *args)) for fn in fns]
    # column j is the Hessian-vector product with e_j (the Hessian is symmetric). lax.map runs the P
    # products one after another in one compiled loop, which compiles and runs faster on CPU than
    # jax.hessian's vmap over all P directions (batched small linear algebra is slow there).
    hess = jax.lax.map(lambda v: tuple(jax.jvp(g, (flat,), (v,))[1] for g in grads),
                       jnp.eye(flat.size, dtype=flat.dtype))
    return hess, tuple(g(flat) for g in grads)


def _bind(fn: Callable, params: Any, args: tuple, kwargs: dict) -> Callable:
    """``fn`` with ``kwargs`` bound, after checking that it is a scalar function of ``params``."""
    if not callable(fn):
        raise TypeError(f"fn must be a function fn(params, *args) -> scalar; got {type(fn).__name__}")
    _flat_spec(params)
    f = partial(fn, **kwargs) if kwargs else fn
    out = jax.eval_shape(f, params, *args)
    if out.shape != ():
        raise ValueError(f"fn must return a scalar; got shape {out.shape}")
    return f


def hessian(fn: Callable, params: Any, *args: Any, **kwargs: Any) -> Array:
    r"""The dense Hessian $\nabla^2_\theta\, \mathrm{fn}(\theta, \ldots)$ in the flattened parameters, ``(P, P)``.

    Exact: column $j$ is the forward-over-reverse Hessian-vector product $\nabla^2_\theta\mathrm{fn}\; e_j$
    (see :func:`hvp`), the $P$ columns computed in one compiled loop. Compiled once per ``fn`` and
    parameter shapes (pass the same function object to reuse the compilation; ``kwargs`` are bound
    with :func:`functools.partial`, which compiles anew on every call). Rows and columns follow
    :func:`flatten`. Memory grows as $P^2$: for large networks use :func:`hvp` and
    :func:`extreme_eigenvalues`.
    """
    return _dense_hessians((_bind(fn, params, args, kwargs),), params, *args)[0][0]


def hessians(fns: Sequence[Callable], params: Any, *args: Any, gradients: bool = False) -> tuple:
    """The dense Hessians of several functions at the same point (e.g. ``(loss, energy)``), as :func:`hessian`
    returns them, computed in one compiled program: one compilation per tuple of functions and shapes.
    With ``gradients=True`` returns ``(hessians, gradients)``, adding the flat gradients to the same program."""
    if callable(fns) or not len(fns):
        raise TypeError("fns must be a non-empty sequence of functions fn(params, *args) -> scalar")
    hess, grads = _dense_hessians(tuple(_bind(fn, params, args, {}) for fn in fns), params, *args)
    return (hess, grads) if gradients else hess


def spectrum(fn: Callable, params: Any, *args: Any, **kwargs: Any) -> np.ndarray:
    """All eigenvalues of :func:`hessian`, ascending (a NumPy array)."""
    H = np.asarray(hessian(fn, params, *args, **kwargs))
    return np.linalg.eigvalsh(0.5 * (H + H.T))


@partial(jax.jit, static_argnums=0)
def _hvp(fn: Callable, params: Any, v: Array, *args: Any) -> Array:
    flat, unflatten = ravel_pytree(params)
    grad = jax.grad(lambda w: fn(unflatten(w), *args))
    return jax.jvp(grad, (flat,), (v,))[1]


def hvp(fn: Callable, params: Any, *args: Any, **kwargs: Any) -> Callable[[Array], Array]:
    r"""A compiled Hessian-vector product $v \mapsto \nabla^2_\theta \mathrm{fn}\; v$ at ``params``.

    Forward-over-reverse, ``jax.jvp`` of ``jax.grad``: one call costs a few gradient evaluations
    and never forms the Hessian. ``v`` is a flat vector of length $P$ (see :func:`flatten`).
    Compiled once per ``fn`` and shapes, shared by every point and by :func:`extreme_eigenvalues`
    (``kwargs`` are bound with :func:`functools.partial`, which compiles anew on every call).
    """
    f = _bind(fn, params, args, kwargs)
    flat = _flat_spec(params)

    def apply(v: Array) -> Array:
        v = jnp.asarray(v, flat.dtype)
        if v.shape != flat.shape:
            raise ValueError(f"v must be a flat vector of shape {flat.shape} (see landscape.flatten); got {v.shape}")
        return _hvp(f, params, v, *args)

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
    flat = _flat_spec(params)
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
