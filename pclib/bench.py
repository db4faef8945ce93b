r"""Benchmark: what a PC training step costs against backprop, and against its arithmetic floor.

    python -m pclib.bench                        # every item, configs A, B, C; writes bench_out/
    python -m pclib.bench --configs A,C --out book/bench
    python -m pclib.bench --quick                # tiny sizes and few repeats: a smoke test

It writes ``bench.json`` (every number, with the device, date and machine load) and ``bench.md``
(the same as markdown tables) into ``--out``.

**The floor.** Count multiply-adds per sample in matrix products, with $c_l = d_{l-1} d_l$ for
layer $l$. A backprop step runs the forward pass ($\sum_l c_l$), the weight gradients
($\sum_l c_l$) and the activity gradients of layers $2..L$ ($\sum_{l \ge 2} c_l$). A PC step with
$T$ Euler inference steps from the feedforward pass runs the forward pass and the weight
gradients too, and in each inference step the predictions and the transposed errors of layers
$2..L$; layer 1's prediction is constant while the input is clamped. So

$$\mathrm{BP} = 2\sum_l c_l + \sum_{l\ge2} c_l, \qquad
\mathrm{PC} = 2\sum_l c_l + 2T\sum_{l\ge2} c_l,$$

and $\mathrm{PC}/\mathrm{BP}$ is the floor of the measured time ratio: time above it is
overhead (dispatch, recompilation, copies), time below it means the backprop step itself runs
above its own floor (small matrices, fixed per-call costs).

**Adding an item.** Write a function ``item(opts: Options) -> Section`` and decorate it with
``@register("name")``: it then runs with the others, lands in the JSON under its name and in
the markdown as a table. ``Section.columns`` says which row keys become table columns.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import theory
from .energy import sample_energies
from .inference import infer
from .learning import make_step
from .model import init_mlp, random_problem


# ----------------------------------------------------------------------------- configurations
@dataclasses.dataclass(frozen=True)
class Config:
    """One training-step benchmark: a tanh MLP with these widths, a batch size, ``steps`` = $T$,
    and the largest allowed (measured ratio) / (floor ratio), if the issue sets one."""

    name: str
    widths: tuple[int, ...]
    batch: int
    steps: int
    target: float | None = None


CONFIGS = {
    "A": Config("A", (784, 128, 128, 128, 10), 64, 20, target=1.5),
    "B": Config("B", (784, 512, 512, 512, 512, 10), 256, 20, target=1.25),
    "C": Config("C", (784, 128, 128, 128, 10), 64, 5),
}
QUICK_CONFIGS = {  # same shapes of problem, tiny sizes: for the smoke test
    "A": Config("A", (32, 16, 16, 16, 4), 8, 20, target=1.5),
    "B": Config("B", (32, 24, 24, 24, 24, 4), 16, 20, target=1.25),
    "C": Config("C", (32, 16, 16, 16, 4), 8, 5),
}


# ----------------------------------------------------------------------------- the floor
def layer_costs(widths: Sequence[int]) -> list[int]:
    r"""Multiply-adds per sample of each layer's matrix product, $c_l = d_{l-1} d_l$."""
    return [int(a) * int(b) for a, b in zip(widths[:-1], widths[1:])]


def bp_step_cost(widths: Sequence[int]) -> int:
    r"""Multiply-adds per sample of a backprop step: $2\sum_l c_l + \sum_{l\ge2} c_l$."""
    c = layer_costs(widths)
    return 2 * sum(c) + sum(c[1:])


def pc_step_cost(widths: Sequence[int], steps: int) -> int:
    r"""Multiply-adds per sample of a PC step with ``steps`` $= T$ inference steps:
    $2\sum_l c_l + 2T\sum_{l\ge2} c_l$."""
    c = layer_costs(widths)
    return 2 * sum(c) + 2 * int(steps) * sum(c[1:])


def floor_ratio(widths: Sequence[int], steps: int) -> float:
    """The floor of (PC step time) / (BP step time): the quotient of their matrix-product work."""
    if len(widths) < 2:
        raise ValueError(f"widths must list at least an input and an output width; got {list(widths)}")
    return pc_step_cost(widths, steps) / bp_step_cost(widths)


# ----------------------------------------------------------------------------- timing
def interleaved_times(fns: dict[str, Callable[[], Any]], *, repeats: int, warmup: int = 2) -> dict[str, np.ndarray]:
    """Seconds per call of each zero-argument function, calling them in turn (reversing the order
    every round) so that a change in machine load hits all of them alike.

    Each call is waited for with ``jax.block_until_ready``; the first ``warmup`` rounds (which
    include compilation) are not kept.
    """
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(warmup + repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[k]())
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
    return {k: np.asarray(v) for k, v in times.items()}


def summary_ms(seconds: np.ndarray) -> dict[str, float]:
    """Median, min and max in milliseconds."""
    ms = 1e3 * np.asarray(seconds)
    return {"median": float(np.median(ms)), "min": float(ms.min()), "max": float(ms.max())}


def repeats_for(seconds_per_round: float, *, budget: float, low: int, high: int) -> int:
    """How many rounds fit in ``budget`` seconds, clipped to ``[low, high]``."""
    return int(min(high, max(low, budget / max(seconds_per_round, 1e-9))))


# ----------------------------------------------------------------------------- the registry
@dataclasses.dataclass
class Options:
    """What every item is told: ``quick`` (tiny sizes, few repeats), the training ``configs`` to
    run, and a time ``budget`` in seconds per measurement."""

    quick: bool = False
    configs: tuple[str, ...] = ("A", "B", "C")
    budget: float = 10.0
    lanczos_width: int | None = None


@dataclasses.dataclass
class Section:
    """An item's result: a title, rows of numbers, which row keys to show as table columns
    (key, header, format), and a note printed under the table."""

    title: str
    rows: list[dict]
    columns: list[tuple[str, str, str]]
    note: str = ""


ITEMS: dict[str, Callable[[Options], Section]] = {}


def register(name: str) -> Callable:
    """Decorator: add a benchmark item ``fn(opts: Options) -> Section`` under ``name``."""

    def deco(fn: Callable[[Options], Section]) -> Callable[[Options], Section]:
        ITEMS[name] = fn
        return fn

    return deco


# ----------------------------------------------------------------------------- item: training step
def random_batches(config: Config, *, count: int, seed: int = 0) -> list[tuple[jax.Array, jax.Array]]:
    """``count`` batches of standard-normal inputs and one-hot targets, float32."""
    d_in, d_out = config.widths[0], config.widths[-1]
    out = []
    for k in jax.random.split(jax.random.key(seed), count):
        kx, ky = jax.random.split(k)
        x = jax.random.normal(kx, (config.batch, d_in), jnp.float32)
        y = jax.nn.one_hot(jax.random.randint(ky, (config.batch,), 0, d_out), d_out, dtype=jnp.float32)
        out.append((x, y))
    return out


def bench_training_step(config: Config, *, budget: float = 10.0, quick: bool = False) -> dict:
    """Time compiled PC and BP training steps (``pclib.make_step``, SGD) on one configuration.

    Both steps get the same parameters and cycle through the same few batches; their outputs
    are discarded, so every call does the same work. Reports per-step times, the ratio of
    median times, the median of the per-round ratios, the floor, and how many times the PC
    step was compiled (1 means new data never triggered recompilation).
    """
    params = init_mlp(jax.random.key(0), config.widths, act="tanh", dtype=jnp.float32)
    opt = optax.sgd(0.01)
    state = opt.init(params)
    pc = make_step(opt, method="pc", act="tanh", steps=config.steps, dt=0.1)
    bp = make_step(opt, method="bp", act="tanh")
    data = random_batches(config, count=4)
    calls = {"pc": 0, "bp": 0}

    def run(name: str, step: Callable) -> Callable[[], Any]:
        def call():
            x, y = data[calls[name] % len(data)]
            calls[name] += 1
            return step(params, state, x, y)

        return call

    fns = {"pc": run("pc", pc), "bp": run("bp", bp)}
    probe = interleaved_times(fns, repeats=1, warmup=2)
    per_round = float(probe["pc"][0] + probe["bp"][0])
    reps = 5 if quick else repeats_for(per_round, budget=budget, low=21, high=1000)
    t = interleaved_times(fns, repeats=reps, warmup=0)
    pc_ms, bp_ms = summary_ms(t["pc"]), summary_ms(t["bp"])
    ratio = pc_ms["median"] / bp_ms["median"]
    floor = floor_ratio(config.widths, config.steps)
    flops = lambda macs, ms: 2.0 * macs * config.batch / (ms * 1e-3) / 1e9  # noqa: E731
    return {
        "config": config.name,
        "network": "-".join(map(str, config.widths)),
        "batch": config.batch,
        "T": config.steps,
        "repeats": reps,
        "pc_ms": pc_ms,
        "bp_ms": bp_ms,
        "pc_ms_text": f"{pc_ms['median']:.3g} [{pc_ms['min']:.3g}, {pc_ms['max']:.3g}]",
        "bp_ms_text": f"{bp_ms['median']:.3g} [{bp_ms['min']:.3g}, {bp_ms['max']:.3g}]",
        "ratio": ratio,
        "paired_ratio": float(np.median(t["pc"] / t["bp"])),
        "floor": floor,
        "ratio_over_floor": ratio / floor,
        "target": config.target,
        "target_text": "—" if config.target is None else f"≤ {config.target:g}",
        "meets_target": None if config.target is None else bool(ratio / floor <= config.target),
        "met_text": "—" if config.target is None else ("yes" if ratio / floor <= config.target else "no"),
        "pc_gflops": flops(pc_step_cost(config.widths, config.steps), pc_ms["median"]),
        "bp_gflops": flops(bp_step_cost(config.widths), bp_ms["median"]),
        "pc_compilations": int(pc._cache_size()),
    }


@register("training_step")
def training_step_item(opts: Options) -> Section:
    """PC vs BP training step, configs A/B/C of issue 7."""
    table = QUICK_CONFIGS if opts.quick else CONFIGS
    unknown = [c for c in opts.configs if c not in table]
    if unknown:
        raise ValueError(f"unknown config(s) {unknown}: choose from {', '.join(table)}")
    rows = []
    for name in opts.configs:
        print(f"  training step, config {name} ...", flush=True)
        rows.append(bench_training_step(table[name], budget=opts.budget, quick=opts.quick))
    return Section(
        title="Training step: PC against backprop (tanh MLP, float32, SGD)",
        rows=rows,
        columns=[
            ("config", "config", "{}"), ("network", "network", "{}"), ("batch", "batch", "{}"), ("T", "T", "{}"),
            ("pc_ms_text", "PC ms: median [min, max]", "{}"), ("bp_ms_text", "BP ms: median [min, max]", "{}"),
            ("ratio", "PC/BP", "{:.2f}"), ("paired_ratio", "PC/BP paired", "{:.2f}"), ("floor", "floor", "{:.1f}"),
            ("ratio_over_floor", "ratio/floor", "{:.2f}"), ("target_text", "target", "{}"),
            ("met_text", "met", "{}"),
            ("pc_gflops", "PC GFLOP/s", "{:.0f}"), ("bp_gflops", "BP GFLOP/s", "{:.0f}"),
        ],
        note=(
            "PC/BP is the ratio of median step times; 'paired' is the median over rounds of the ratio of "
            "the PC and BP steps timed back to back. GFLOP/s counts only the matrix products of the floor. "
            "Each step is a compiled (jitted) call, timed with block_until_ready after compilation."
        ),
    )


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
    from .energy import energy as total_energy

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
    """Hidden width of the curvature item: 500 (the issue's size, about 0.8 million weights), 16 if quick."""
    return 16 if quick else 500


def bench_lanczos(*, width: int, depth: int = 4, d_in: int = 64, d_out: int = 10, batch: int = 256,
                  seed: int = 0) -> list[dict]:
    r"""Wall-clock for the smallest and largest Hessian eigenvalues of $\mathcal L$ and $\mathcal F^*$
    (float64) by :func:`pclib.landscape.extreme_eigenvalues` (Hessian-vector products + Lanczos) on a
    linear net ``d_in``-``width``x``depth``-``d_out`` without biases at a random initialisation.
    Each time includes compiling the Hessian-vector product."""
    from . import landscape
    from .energy import mse_loss

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
            "The issue's target for width 500 is under 60 s on a GPU; --lanczos-width chooses another width."
        ),
    )


# ----------------------------------------------------------------------------- running and writing
def device_description() -> str:
    """The device JAX runs on, in words, e.g. ``"cpu: AMD EPYC, 2 cores"`` or a GPU's name."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        return f"{dev.platform}: {dev.device_kind}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model}, {os.cpu_count()} cores"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``uptime``), or ``None`` where unavailable."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run(items: Sequence[str] | None = None, opts: Options | None = None) -> dict:
    """Run the named items (default: all registered) and return the JSON-ready report."""
    opts = opts or Options()
    items = list(ITEMS) if items is None else list(items)
    unknown = [i for i in items if i not in ITEMS]
    if unknown:
        raise ValueError(f"unknown benchmark item(s) {unknown}: choose from {', '.join(ITEMS)}")
    report: dict[str, Any] = {
        "device": device_description(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "jax": jax.__version__,
        "quick": opts.quick,
        "load_before": load_average(),
        "sections": {},
    }
    for name in items:
        report["sections"][name] = dataclasses.asdict(ITEMS[name](opts))
    report["load_after"] = load_average()
    return report


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return fmt.format(value)


def to_markdown(report: dict) -> str:
    """The report as markdown: a header line (device, date, load) and one table per section."""
    lines = [
        f"Device: {report['device']}. Date: {report['date']}. JAX {report['jax']}. "
        f"Load average (1, 5, 15 min) before: {report['load_before']}, after: {report['load_after']}."
        + (" Quick run (tiny sizes)." if report.get("quick") else ""),
        "",
    ]
    for sec in report["sections"].values():
        cols = sec["columns"]
        lines += [f"**{sec['title']}**", ""]
        lines.append("| " + " | ".join(h for _, h, _ in cols) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        for row in sec["rows"]:
            lines.append("| " + " | ".join(_cell(row.get(k), f) for k, _, f in cols) + " |")
        if sec.get("note"):
            lines += ["", sec["note"]]
        lines.append("")
    return "\n".join(lines)


def write(report: dict, out: Path | str) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.md`` into the folder ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "bench.json", out / "bench.md"
    js.write_text(json.dumps(report, indent=2) + "\n")
    md.write_text(to_markdown(report))
    return js, md


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m pclib.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_out", help="folder for bench.json and bench.md (default: bench_out)")
    parser.add_argument("--configs", default="A,B,C", help="training-step configs, comma-separated (default: A,B,C)")
    parser.add_argument("--items", default=",".join(ITEMS), help=f"items to run (default: {','.join(ITEMS)})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (smoke test)")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of timing per measurement (default: 10)")
    parser.add_argument("--lanczos-width", type=int, default=None,
                        help="hidden width of the curvature item (default: 500)")
    args = parser.parse_args(argv)
    opts = Options(quick=args.quick, configs=tuple(c.strip() for c in args.configs.split(",") if c.strip()),
                   budget=args.budget, lanczos_width=args.lanczos_width)
    print(f"pclib.bench on {device_description()}", flush=True)
    report = run([i.strip() for i in args.items.split(",") if i.strip()], opts)
    js, md = write(report, args.out)
    print(to_markdown(report))
    print(f"wrote {js} and {md}")
    return report


if __name__ == "__main__":
    main()
