r"""Batched solvers for the inference equilibrium: each sample minimises its own energy.

Every solver here works on a function ``fs(z) -> (N,)`` that returns each sample's energy $F_i$ for
the free activities ``z`` (a list of arrays of shape ``(N, d_l)``). Sample $i$'s energy depends only on
row $i$ of every array, so the gradient of $\sum_i F_i$ holds every sample's own gradient
$\partial F_i / \partial z_i$, and its Hessian is block diagonal over samples. All scalars of the
iterations (step sizes, CG coefficients, line-search lengths) are therefore kept per sample: the
iterates of one sample do not depend on the others, and a sample stops moving once its own gradient
meets the tolerance,

$$r_i = \max_{l,k} \Big|\frac{\partial F_i}{\partial z_{l,k}}\Big| < \text{tol}.$$

* :func:`euler_until`: the forward-Euler dynamics $z \leftarrow z - \mathrm dt\,\nabla F_i$ of
  Millidge et al. (2022, Eq. 1), run until every sample meets the tolerance.
* :func:`newton_until`: line-search Newton–CG (Nocedal & Wright 2006, Alg. 7.1). Each iteration
  solves $H_i p_i = -g_i$ inexactly by conjugate gradients on Hessian-vector products
  ($H_i$ is the block-tridiagonal activity Hessian, never formed: ``jax.linearize`` of the gradient),
  stopping CG at $\lVert H_i p_i + g_i\rVert \le \eta_i \lVert g_i\rVert$ with
  $\eta_i = \min(\tfrac12, \lVert g_i\rVert^{1/2})$ (superlinear convergence), or at a direction of
  non-positive curvature, where the true Hessian of a tanh energy is indefinite (then the last CG
  iterate, or $-g_i$ on the first CG step, which are descent directions). A backtracking (Armijo) line
  search then halves the step until $F_i(z + \alpha p) \le F_i(z) + 10^{-4}\alpha\, g_i^\top p$, so the
  energy never rises (up to rounding: a slack of $16\,\epsilon\,|F_i|$ lets the full Newton step through
  once the decrease is below the resolution of $F_i$).

Both are one ``lax.while_loop`` (nested loops for CG and the line search) and return
:class:`SolveResult`. The energy trace has a fixed shape ``(max_steps + 1,)`` so that it compiles
once: ``energies[k]`` is $\frac1N\sum_i F_i$ after ``k`` iterations for ``k <= steps``, and the entries
after ``steps`` repeat the final energy.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array
SampleEnergy = Callable[[list], Array]

CG_MAX = 100  # conjugate-gradient iterations per Newton step, at most
LINE_SEARCH_MAX = 60  # halvings of the Newton step, at most
ARMIJO = 1e-4


class SolveResult(NamedTuple):
    """What a solver returns: the free activities, the energy trace (see the module docstring),
    every sample's final residual ``(N,)``, the iterations taken, and the inner iterations (CG
    steps of Newton–CG; 0 for Euler)."""

    z: list
    energies: Array
    residuals: Array
    steps: Array
    inner_steps: Array


def sample_max_abs(g: Sequence[Array]) -> Array:
    r"""$\max_{l,k} |g_{l,i,k}|$ for every sample $i$: shape ``(N,)``."""
    return jnp.max(jnp.stack([jnp.max(jnp.abs(a), axis=1) for a in g]), axis=0)


def _dot(a: Sequence[Array], b: Sequence[Array]) -> Array:
    return sum(jnp.sum(u * v, axis=1) for u, v in zip(a, b))


def _axpy(alpha: Array, x: Sequence[Array], y: Sequence[Array]) -> list:
    """``y + alpha * x`` with one ``alpha`` per sample."""
    return [v + alpha[:, None] * u for u, v in zip(x, y)]


def _where(mask: Array, a: Sequence[Array], b: Sequence[Array]) -> list:
    return [jnp.where(mask[:, None], u, v) for u, v in zip(a, b)]


def _pad_trace(trace: Array, k: Array) -> Array:
    """Repeat ``trace[k]`` after position ``k``."""
    return jnp.where(jnp.arange(trace.shape[0]) > k, trace[k], trace)


def _value_and_grads(fs: SampleEnergy, z: list) -> tuple[Array, list]:
    """Each sample's energy ``(N,)`` and its gradient (the gradient of the sum)."""
    f, vjp = jax.vjp(fs, z)
    return f, vjp(jnp.ones_like(f))[0]


def _diverged(total: Array, total0: Array) -> Array:
    """The stopping rule of :func:`pclib.inference.check_energies`: non-finite, or above twice the start."""
    return ~jnp.isfinite(total) | (total > 2.0 * total0 + 1e-8)


def euler_until(fs: SampleEnergy, z0: list, *, dt: Array, tol: Array, max_steps: int) -> SolveResult:
    r"""Euler steps $z_i \leftarrow z_i - \mathrm dt\,\partial F_i/\partial z_i$ until every sample's
    residual is below ``tol``, at most ``max_steps`` steps (Millidge et al. 2022, Eq. 1).

    A sample that meets the tolerance stops moving, so its final point does not depend on the rest of
    the batch. The loop also stops at the first non-finite energy or one above twice the initial energy
    (divergence), which then shows in the energy trace.
    """
    n = z0[0].shape[0]
    f, g = _value_and_grads(fs, z0)
    res = sample_max_abs(g)
    total0 = jnp.sum(f)
    trace = jnp.zeros((max_steps + 1,), total0.dtype).at[0].set(total0 / n)

    def cond(s):
        k, _, _, res, trace = s
        total = trace[k] * n
        return (k < max_steps) & jnp.any(res >= tol) & ~_diverged(total, total0)

    def body(s):
        k, z, g, res, trace = s
        active = res >= tol
        z = _where(active, [a - dt * b for a, b in zip(z, g)], z)
        f, g = _value_and_grads(fs, z)
        return k + 1, z, g, sample_max_abs(g), trace.at[k + 1].set(jnp.sum(f) / n)

    k, z, g, res, trace = jax.lax.while_loop(cond, body, (jnp.asarray(0), list(z0), g, res, trace))
    return SolveResult(z, _pad_trace(trace, k), res, k, jnp.asarray(0))


def _truncated_cg(hvp: Callable, g: list, active: Array, *, cg_max: int, inv_diag: list | None) -> tuple[list, Array]:
    """Per-sample preconditioned CG on ``H p = -g`` from ``p = 0`` (preconditioner ``diag(1 / inv_diag)``,
    i.e. ``inv_diag`` multiplies the residual), stopped by the forcing term or by non-positive curvature."""
    prec = (lambda r: r) if inv_diag is None else (lambda r: [a * m for a, m in zip(r, inv_diag)])
    gnorm = jnp.sqrt(_dot(g, g))
    target = jnp.minimum(0.5, jnp.sqrt(gnorm)) * gnorm
    zeros = [jnp.zeros_like(a) for a in g]
    r = [-a for a in g]
    s = prec(r)
    rs = _dot(r, s)
    running = active & (gnorm > 0)

    def cond(state):
        j, *_, running = state
        return (j < cg_max) & jnp.any(running)

    def body(state):
        j, p, r, d, rs, running = state
        hd = hvp(d)
        dhd = _dot(d, hd)
        curved = dhd > 0
        # non-positive curvature: stop; on the first CG step take d = -M^{-1} g, a descent direction
        first_neg = running & ~curved & (j == 0)
        p = _where(first_neg, d, p)
        step = running & curved
        alpha = jnp.where(step, rs / jnp.where(curved, dhd, 1.0), 0.0)
        p = _axpy(alpha, d, p)
        r_new = _axpy(-alpha, hd, r)
        s_new = prec(r_new)
        rs_new = _dot(r_new, s_new)
        beta = jnp.where(step, rs_new / jnp.where(rs > 0, rs, 1.0), 0.0)
        d = _where(step, _axpy(beta, d, s_new), d)
        r = _where(step, r_new, r)
        rs = jnp.where(step, rs_new, rs)
        running = step & (jnp.sqrt(_dot(r_new, r_new)) > target)
        return j + 1, p, r, d, rs, running

    j, p, *_ = jax.lax.while_loop(cond, body, (jnp.asarray(0), zeros, r, s, rs, running))
    return p, j


def newton_until(fs: SampleEnergy, z0: list, *, tol: Array, max_steps: int, cg_max: int = CG_MAX,
                 diagonal: Callable[[list], list] | None = None) -> SolveResult:
    r"""Line-search Newton–CG on every sample's energy until every residual is below ``tol``, at most
    ``max_steps`` Newton iterations (see the module docstring for the iteration).

    ``inner_steps`` counts the CG iterations, one Hessian-vector product each (about the cost of
    two Euler steps). The loop stops early when no unconverged sample can lower its energy any more
    (the line search failed for all of them) or the energy is not finite.

    ``diagonal(z)``, if given, returns a positive approximation of the Hessian's diagonal (arrays shaped
    like ``z``), used as a Jacobi preconditioner of CG: it removes the scale differences between layers
    (precisions $\pi_l$ that differ by orders of magnitude) and between units.
    """
    n = z0[0].shape[0]
    grad_total = jax.grad(lambda z: jnp.sum(fs(z)))
    f, g = _value_and_grads(fs, z0)
    res = sample_max_abs(g)
    total0 = jnp.sum(f)
    trace = jnp.zeros((max_steps + 1,), total0.dtype).at[0].set(total0 / n)
    eps = jnp.finfo(total0.dtype).eps

    def cond(s):
        k, _, f, _, res, trace, _, stalled = s
        return (k < max_steps) & jnp.any(res >= tol) & jnp.isfinite(trace[k]) & ~stalled

    def body(s):
        k, z, f, g, res, trace, inner, _ = s
        active = res >= tol
        _, hvp = jax.linearize(grad_total, z)
        inv_diag = None if diagonal is None else [1.0 / m for m in diagonal(z)]
        p, j = _truncated_cg(hvp, g, active, cg_max=cg_max, inv_diag=inv_diag)
        slope = _dot(g, p)
        bad = ~(slope < 0)  # rounding can spoil a tiny CG direction: fall back to (scaled) steepest descent
        sd = [-a for a in g] if inv_diag is None else [-a * m for a, m in zip(g, inv_diag)]
        p = _where(bad, sd, p)
        slope = jnp.where(bad, _dot(g, sd), slope)
        slack = 16 * eps * jnp.abs(f)

        def ls_cond(t):
            i, _, _, done = t
            return (i < LINE_SEARCH_MAX) & jnp.any(~done)

        def ls_body(t):
            i, alpha, taken, done = t
            f_try = fs(_axpy(alpha, p, z))
            ok = ~done & jnp.isfinite(f_try) & (f_try <= f + ARMIJO * alpha * slope + slack)
            taken = jnp.where(ok, alpha, taken)
            done = done | ok
            return i + 1, jnp.where(done, alpha, 0.5 * alpha), taken, done

        ones = jnp.ones_like(f)
        _, _, taken, done = jax.lax.while_loop(ls_cond, ls_body, (0, ones, 0 * ones, ~active))
        moved = active & done & (taken > 0)
        z = _where(moved, _axpy(taken, p, z), z)
        f_new, g_new = _value_and_grads(fs, z)
        f = jnp.where(moved, f_new, f)
        g = _where(moved, g_new, g)
        res = jnp.where(moved, sample_max_abs(g_new), res)
        stalled = ~jnp.any(moved)
        return k + 1, z, f, g, res, trace.at[k + 1].set(jnp.sum(f) / n), inner + j, stalled

    state = (jnp.asarray(0), list(z0), f, g, res, trace, jnp.asarray(0), jnp.asarray(False))
    k, z, f, g, res, trace, inner, _ = jax.lax.while_loop(cond, body, state)
    return SolveResult(z, _pad_trace(trace, k), res, k, inner)


METHODS = {"euler": euler_until, "newton": newton_until}
