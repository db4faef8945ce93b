"""Benchmark items: closed forms against iterated inference, and Lanczos on the Hessians at scale."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import theory
from ..energy import sample_energies
from ..inference import infer
from ..model import init_mlp, random_problem
from .core import Options, Section, interleaved_times, register, repeats_for, summary_ms


# ----------------------------------------------------------------------------- item: closed form vs iteration
@contextlib.contextmanager
def single_threaded_blas():
    """Run LAPACK/BLAS calls (the Cholesky factorisation and solves on CPU) on one thread; yields
    the thread count in force (``1``, or ``"default"`` where threadpoolctl is missing).

    On a machine with more busy processes than cores, OpenBLAS's spinning worker threads make
    a dense solve several times slower and wildly variable; one thread avoids that. XLA's own
    matrix products (and so ``infer``) are not affected.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield "default"
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield 1


def _linear_reference(params, x, y) -> tuple[np.ndarray, float, float]:
    r"""The linear equilibrium by an independent dense solve in numpy (float64), and the extreme
    eigenvalues of the activity Hessian $H$.

    The per-sample energy is $\frac12 z^\top H z - r^\top z + \text{const}$ in the hidden
    activities $z$, so $r = -\nabla_z F$ at $z = 0$ (taken by autodiff of the energy), and
    $z^* = H^{-1} r$.
    """
    L = len(params)
    zero = [x] + [jnp.zeros((x.shape[0], p["W"].shape[0]), x.dtype) for p in params[:-1]] + [y]

    def f(hidden):
        return jnp.sum(sample_energies(params, [x, *hidden, y], act="linear"))

    r = -np.concatenate([np.asarray(g) for g in jax.grad(f)(zero[1:L])], axis=1)
    H = np.asarray(theory.linear_activity_hessian(params), np.float64)
    eig = np.linalg.eigvalsh(H)
    return np.linalg.solve(H, r.T).T, float(eig[0]), float(eig[-1])


def _hidden(zs) -> np.ndarray:
    return np.concatenate([np.asarray(z) for z in zs[1:-1]], axis=1)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def steps_to_accuracy(params, x, y, z_ref: np.ndarray, *, dt: float, tol: float, chunk: int = 100,
                      max_steps: int = 200_000) -> int:
    """Fewest Euler steps of :func:`pclib.infer` (feedforward start) whose hidden activities are
    within relative error ``tol`` of ``z_ref``.

    Runs in chunks of ``chunk`` steps (restarting from the last activities), then replays the
    chunk that crossed ``tol`` step by step. Gradient descent on a convex quadratic with
    ``dt`` $\\le 2/(\\lambda_{\\min} + \\lambda_{\\max})$ never moves away from the minimum, so the
    first step below ``tol`` stays below it.
    """
    zs, done = None, 0
    while done < max_steps:
        start = zs
        res = infer(params, x, y, act="linear", steps=chunk, dt=dt, init=zs or "ffwd", check=False)
        zs = res.activities
        if _rel(_hidden(zs), z_ref) <= tol:
            rec = infer(params, x, y, act="linear", steps=chunk, dt=dt, init=start or "ffwd", record=True, check=False)
            for k in range(1, chunk + 1):
                if _rel(np.concatenate([np.asarray(t[k]) for t in rec.trajectory[1:-1]], axis=1), z_ref) <= tol:
                    return done + k
        done += chunk
    raise RuntimeError(
        f"infer did not reach relative error {tol:g} within {max_steps} steps of dt={dt:g}: "
        f"raise max_steps, or use a larger dt (at most 2/(lambda_min + lambda_max) of the activity Hessian)"
    )


def time_closed_vs_iterate(closed: Callable[[], Any], iterate: Callable[[], Any], *, budget: float,
                           quick: bool) -> tuple[dict, dict, int, int | None]:
    """Time a closed form against iterative inference, interleaved, with LAPACK on one thread.
    Returns (closed ms summary, infer ms summary, repeats, BLAS threads)."""
    fns = {"closed": closed, "infer": iterate}
    with single_threaded_blas() as blas_threads:
        probe = interleaved_times(fns, repeats=1, warmup=1)
        reps = 3 if quick else repeats_for(float(probe["closed"][0] + probe["infer"][0]), budget=budget,
                                           low=7, high=200)
        t = interleaved_times(fns, repeats=reps, warmup=0)
    return summary_ms(t["closed"]), summary_ms(t["infer"]), reps, blas_threads


def closed_form_row(*, function: str, width: int, layers: int, batch: int, tol: float, dt: float, lo: float,
                    hi: float, steps: int, timing: tuple, err_closed: float, err_iter: float) -> dict:
    """One row of the closed-form table; the target is a speed-up of at least 10x at equal accuracy."""
    c_ms, i_ms, reps, blas_threads = timing
    speedup = i_ms["median"] / c_ms["median"]
    met = bool(speedup >= 10.0 and err_closed <= tol and err_iter <= tol)
    return {
        "function": function, "network": f"linear, {layers} layers of width {width}", "batch": batch,
        "tol": tol, "dt": dt, "lambda_min": lo, "lambda_max": hi, "infer_steps": steps,
        "closed_ms": c_ms, "infer_ms": i_ms,
        "closed_ms_text": f"{c_ms['median']:.3g} [{c_ms['min']:.3g}, {c_ms['max']:.3g}]",
        "infer_ms_text": f"{i_ms['median']:.3g} [{i_ms['min']:.3g}, {i_ms['max']:.3g}]",
        "closed_error": err_closed, "infer_error": err_iter, "speedup": speedup, "target": 10.0,
        "meets_target": met, "met_text": "yes" if met else "no", "repeats": reps, "blas_threads": blas_threads,
    }


def bench_linear_equilibrium(*, width: int = 256, layers: int = 5, batch: int = 256, tol: float = 1e-6,
                             budget: float = 10.0, quick: bool = False) -> dict:
    """Time :func:`pclib.theory.linear_equilibrium` against :func:`pclib.infer` run just long
    enough to reach the same relative accuracy ``tol``, in float64, both compiled.

    ``infer`` gets its best constant step size $\\mathrm{d}t = 2/(\\lambda_{\\min} + \\lambda_{\\max})$ of
    the activity Hessian (an oracle choice that favours the iteration). Accuracy is measured
    against an independent dense solve.
    """
    with jax.enable_x64(True):
        params, x, y = random_problem(0, [width] * (layers + 1), act="linear", n=batch)
        z_ref, lo, hi = _linear_reference(params, x, y)
        dt = 2.0 / (lo + hi)
        T = steps_to_accuracy(params, x, y, z_ref, dt=dt, tol=tol)
        closed = jax.jit(lambda p, a, b: theory.linear_equilibrium(p, a, b))
        iterate = jax.jit(lambda p, a, b: infer(p, a, b, act="linear", steps=T, dt=dt, check=False).activities)
        err_closed = _rel(_hidden(closed(params, x, y)), z_ref)  # (also loads the LAPACK library)
        err_iter = _rel(_hidden(iterate(params, x, y)), z_ref)
        timing = time_closed_vs_iterate(lambda: closed(params, x, y), lambda: iterate(params, x, y),
                                        budget=budget, quick=quick)
    return closed_form_row(function="theory.linear_equilibrium", width=width, layers=layers, batch=batch, tol=tol,
                           dt=dt, lo=lo, hi=hi, steps=T, timing=timing, err_closed=err_closed, err_iter=err_iter)


CLOSED_FORM_COLUMNS = [
    ("function", "closed form", "`{}`"), ("network", "network", "{}"), ("batch", "batch", "{}"),
    ("closed_ms_text", "closed form ms: median [min, max]", "{}"), ("closed_error", "its rel. error", "{:.1e}"),
    ("infer_steps", "infer steps to reach tol", "{}"), ("infer_ms_text", "infer ms: median [min, max]", "{}"),
    ("infer_error", "its rel. error", "{:.1e}"), ("speedup", "speed-up", "{:.0f}×"), ("met_text", "≥ 10×", "{}"),
]


@register("linear_equilibrium")
def linear_equilibrium_item(opts: Options) -> Section:
    """Closed-form linear equilibrium vs iterative inference at equal accuracy."""
    print("  closed form vs iteration: theory.linear_equilibrium ...", flush=True)
    kw = dict(width=16, layers=3, batch=8) if opts.quick else {}
    row = bench_linear_equilibrium(budget=opts.budget, quick=opts.quick, **kw)
    return Section(
        title="Closed forms against iteration (float64, both compiled)",
        rows=[row],
        columns=CLOSED_FORM_COLUMNS,
        note=(
            f"Both reach relative error ≤ {row['tol']:g} against an independent dense solve. infer starts at "
            f"the feedforward pass with its best constant step dt = 2/(λmin + λmax) = {row['dt']:.3g} of the "
            f"activity Hessian (λmin = {row['lambda_min']:.3g}, λmax = {row['lambda_max']:.3g}), an oracle "
            f"choice that favours the iteration. LAPACK ran on {row['blas_threads']} thread(s) "
            f"(OpenBLAS's spinning threads collapse on an oversubscribed machine). "
            f"Target: speed-up ≥ {row['target']:g}×."
        ),
    )


def energy_steps_to_accuracy(params, x, y, f_ref: float, *, dt: float, tol: float, chunk: int = 200,
                            max_steps: int = 200_000) -> int:
    """Fewest Euler steps of :func:`pclib.infer` (feedforward start) whose energy is within
    relative error ``tol`` of ``f_ref``. The energy of gradient descent on a convex quadratic with
    ``dt`` $< 2/\\lambda_{\\max}$ falls at every step, so the first step below ``tol`` stays below it."""
    zs, done = "ffwd", 0
    while done < max_steps:
        res = infer(params, x, y, act="linear", steps=chunk, dt=dt, init=zs, check=False)
        gaps = np.abs(np.asarray(res.energies, np.float64) - f_ref) / abs(f_ref)
        hit = np.flatnonzero(gaps[1:] <= tol)
        if hit.size:
            return done + int(hit[0]) + 1
        zs, done = res.activities, done + chunk
    raise RuntimeError(
        f"infer's energy did not reach relative error {tol:g} within {max_steps} steps of dt={dt:g}: "
        f"raise max_steps, or use a larger dt (below 2/lambda_max of the activity Hessian)"
    )


def bench_equilibrated_energy(*, width: int = 256, layers: int = 5, batch: int = 256, tol: float = 1e-6,
                              budget: float = 10.0, quick: bool = False) -> dict:
    """Time :func:`pclib.theory.equilibrated_energy` (closed form, Innocenti et al. 2024, Thm 1)
    against the energy after :func:`pclib.infer` run just long enough to be within ``tol`` of it.

    The reference $\\mathcal F^*$ is the energy at an independent dense numpy solve of the
    equilibrium; ``infer`` gets the oracle step $\\mathrm{d}t = 2/(\\lambda_{\\min} + \\lambda_{\\max})$.
    """
    from ..energy import energy as total_energy

    with jax.enable_x64(True):
        params, x, y = random_problem(1, [width] * (layers + 1), act="linear", n=batch)
        z_ref, lo, hi = _linear_reference(params, x, y)
        hidden, k = [], 0
        for p in params[:-1]:
            d = p["W"].shape[0]
            hidden.append(jnp.asarray(z_ref[:, k:k + d]))
            k += d
        f_ref = float(total_energy(params, [x, *hidden, y], act="linear"))
        dt = 2.0 / (lo + hi)
        T = energy_steps_to_accuracy(params, x, y, f_ref, dt=dt, tol=tol)
        closed = jax.jit(lambda p, a, b: theory.equilibrated_energy(p, a, b))
        iterate = jax.jit(lambda p, a, b: infer(p, a, b, act="linear", steps=T, dt=dt, check=False).energies[-1])
        err_closed = abs(float(closed(params, x, y)) - f_ref) / abs(f_ref)
        err_iter = abs(float(iterate(params, x, y)) - f_ref) / abs(f_ref)
        timing = time_closed_vs_iterate(lambda: closed(params, x, y), lambda: iterate(params, x, y),
                                        budget=budget, quick=quick)
    return closed_form_row(function="theory.equilibrated_energy", width=width, layers=layers, batch=batch, tol=tol,
                           dt=dt, lo=lo, hi=hi, steps=T, timing=timing, err_closed=err_closed, err_iter=err_iter)


@register("equilibrated_energy")
def equilibrated_energy_item(opts: Options) -> Section:
    """Closed-form equilibrated energy vs the energy after iterative inference, at equal accuracy."""
    print("  closed form vs iteration: theory.equilibrated_energy ...", flush=True)
    kw = dict(width=16, layers=3, batch=8) if opts.quick else {}
    row = bench_equilibrated_energy(budget=opts.budget, quick=opts.quick, **kw)
    return Section(
        title="The equilibrated energy: closed form against iteration (float64, both compiled)",
        rows=[row],
        columns=CLOSED_FORM_COLUMNS,
        note=(
            f"Both energies are within relative error {row['tol']:g} of the energy at an independent dense "
            f"solve of the equilibrium. infer starts at the feedforward pass with dt = 2/(λmin + λmax) = "
            f"{row['dt']:.3g}; LAPACK ran on {row['blas_threads']} thread(s). Target: speed-up ≥ {row['target']:g}×."
        ),
    )


def lanczos_width(quick: bool) -> int:
    """Hidden width of the curvature item: 500 (about 0.8 million weights), 16 if quick."""
    return 16 if quick else 500


def bench_lanczos(*, width: int, depth: int = 4, d_in: int = 64, d_out: int = 10, batch: int = 256,
                  seed: int = 0) -> list[dict]:
    r"""Wall-clock for the smallest and largest Hessian eigenvalues of $\mathcal L$ and $\mathcal F^*$
    (float64) by :func:`pclib.landscape.extreme_eigenvalues` (Hessian-vector products + Lanczos) on a
    linear net ``d_in``-``width``x``depth``-``d_out`` without biases at a random initialisation.
    Each time includes compiling the Hessian-vector product."""
    from .. import landscape
    from ..energy import mse_loss

    rows = []
    with jax.enable_x64(True):
        widths = [d_in] + [width] * depth + [d_out]
        params = init_mlp(jax.random.key(seed), widths, bias=False)
        kx, kw = jax.random.split(jax.random.key(seed + 1))
        x = jax.random.normal(kx, (batch, d_in))
        y = x @ jax.random.normal(kw, (d_in, d_out)) / np.sqrt(d_in)
        n_weights = int(landscape.flatten(params)[0].size)
        fns = {
            "L (MSE)": lambda p, a, b: mse_loss(p, a, b, act="linear"),
            "F* (equilibrated energy)": lambda p, a, b: theory.equilibrated_energy(p, a, b),
        }
        for name, fn in fns.items():
            for which in ("SA", "LA"):
                t0 = time.perf_counter()
                lam = float(landscape.extreme_eigenvalues(fn, params, x, y, k=1, which=which)[0])
                rows.append({"function": name, "which": "smallest" if which == "SA" else "largest",
                             "eigenvalue": lam, "seconds": time.perf_counter() - t0,
                             "network": f"linear {'-'.join(map(str, widths))}", "weights": n_weights})
    return rows


@register("lanczos")
def lanczos_item(opts: Options) -> Section:
    """Extreme Hessian eigenvalues of L and F* at scale, by Hessian-vector products and Lanczos."""
    width = opts.lanczos_width or lanczos_width(opts.quick)
    print(f"  curvature: Lanczos on 4 hidden layers of width {width} ...", flush=True)
    rows = bench_lanczos(width=width, batch=32 if opts.quick else 256)
    return Section(
        title="Curvature at scale: extreme Hessian eigenvalues by Lanczos (float64)",
        rows=rows,
        columns=[("network", "network", "{}"), ("weights", "weights", "{}"), ("function", "function", "{}"),
                 ("which", "eigenvalue", "{}"), ("eigenvalue", "value", "{:.4g}"), ("seconds", "seconds", "{:.1f}")],
        note=(
            "landscape.extreme_eigenvalues: scipy's eigsh (ARPACK, implicitly restarted Lanczos) on a compiled "
            "forward-over-reverse Hessian-vector product; no dense Hessian. Times include compilation. "
            "The target for width 500 is under 60 s on a GPU; --lanczos-width chooses another width."
        ),
    )


