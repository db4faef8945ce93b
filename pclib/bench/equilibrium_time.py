r"""Benchmark item: wall time to reach the inference equilibrium.

On tanh MLPs (float32, random standard-normal inputs, one-hot targets clamped at the output, the
input clamped, from the feedforward pass) each solver runs until every sample's activity gradient
satisfies $\max_{l,k} |\partial F_i/\partial z_{l,k}| < 10^{-4}$:

* Euler (:func:`pclib.infer`, the dynamics of Millidge et al. 2022, Eq. 1) at its best constant step:
  the fewest steps over a small grid of $\mathrm dt$, stopping the grid at the first step size that
  diverges or gets slower;
* diffrax's Heun solver with a PID step-size controller on the gradient flow
  $\dot z = -\nabla F(z)$ (the default of the JPC library), integrated to a time $t_1$. Its tolerances
  start at ``rtol = atol = 1e-3`` and tighten tenfold until the residual is reached; for each, $t_1$
  doubles (from a power of two near a quarter of Euler's flow time $T\,\mathrm dt$) until the residual at
  $t_1$ is below the target. The row reports the first such run;
* pclib's line-search Newton–CG (``pclib.infer(..., method="newton")``).

Each row is timed after compilation (the median of a few calls of the compiled program). ``grad evals``
counts gradient evaluations (Heun: two per accepted or rejected step; Newton: one per iteration, plus one
Hessian-vector product per CG step, listed separately).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..energy import sample_energies
from ..inference import infer
from ..model import forward, init_mlp
from .core import CONFIGS, QUICK_CONFIGS, Options, Section, register

TOL = 1e-4
DTS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)


def equilibrium_configs(quick: bool) -> dict[str, tuple[tuple[int, ...], int]]:
    """Widths and batch of each network: configs A and B of :mod:`pclib.bench`, and a deep narrow one."""
    if quick:
        return {"A": (QUICK_CONFIGS["A"].widths, QUICK_CONFIGS["A"].batch),
                "deep": ((32,) + (8,) * 4 + (4,), 8)}
    return {"A": (CONFIGS["A"].widths, CONFIGS["A"].batch), "deep": ((784,) + (64,) * 10 + (10,), 64),
            "B": (CONFIGS["B"].widths, CONFIGS["B"].batch)}


def _selected(opts: Options) -> dict[str, tuple[tuple[int, ...], int]]:
    """The networks to time: configs A and B where ``--configs`` names them, and always the deep one."""
    nets = equilibrium_configs(opts.quick)
    return {k: v for k, v in nets.items() if k == "deep" or k in opts.configs}


def _problem(widths, batch, seed: int = 0):
    kp, kx, ky = jax.random.split(jax.random.key(seed), 3)
    params = init_mlp(kp, widths, act="tanh", dtype=jnp.float32)
    x = jax.random.normal(kx, (batch, widths[0]), jnp.float32)
    y = jax.nn.one_hot(jax.random.randint(ky, (batch,), 0, widths[-1]), widths[-1], dtype=jnp.float32)
    return params, x, y


def _time(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls, after one untimed call (compilation)."""
    jax.block_until_ready(fn())
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _residual(params, x, y, hidden) -> float:
    def total(h):
        return jnp.sum(sample_energies(params, [x, *h, y], act="tanh"))

    return float(max(jnp.max(jnp.abs(g)) for g in jax.grad(total)(list(hidden))))


def euler_row(params, x, y, *, max_steps: int, repeats: int) -> dict:
    best = None
    for dt in DTS:
        res = infer(params, x, y, tol=TOL, max_steps=max_steps, dt=dt, check=False)
        ok = bool(res.converged) and bool(jnp.all(jnp.isfinite(res.energies)))
        if not ok or (best is not None and int(res.steps) >= best[1]):
            break
        best = (dt, int(res.steps))
    if best is None:
        return {"method": "Euler", "setting": f"no dt in {DTS} converged within {max_steps} steps"}
    dt, steps = best
    res = infer(params, x, y, tol=TOL, max_steps=max_steps, dt=dt, check=False)
    seconds = _time(lambda: infer(params, x, y, tol=TOL, max_steps=max_steps, dt=dt, check=False).activities, repeats)
    return {"method": "Euler (pclib.infer)", "setting": f"dt = {dt:g}", "steps": steps, "grad_evals": steps + 1,
            "flow_time": dt * steps,
            "hvps": 0, "residual": _residual(params, x, y, res.activities[1:-1]), "ms": 1e3 * seconds}


def diffrax_row(params, x, y, *, max_steps: int, repeats: int, flow_time: float | None = None) -> dict:
    """``flow_time``: Euler's steps times its dt, where the doubling of t1 starts (a quarter of it), so
    that the search skips the times at which the flow cannot have settled yet."""
    try:
        import diffrax
    except ImportError:
        return {"method": "diffrax Heun + PID", "setting": "skipped: diffrax is not installed (pip install diffrax)"}
    ff = forward(params, x, act="tanh")

    def total(h):
        return jnp.sum(sample_energies(params, [x, *h, y], act="tanh"))

    term = diffrax.ODETerm(lambda t, h, args: jax.tree_util.tree_map(jnp.negative, jax.grad(total)(h)))

    def make(tol_ode: float):
        @jax.jit
        def solve(h0, t1):
            sol = diffrax.diffeqsolve(
                term, diffrax.Heun(), t0=0.0, t1=t1, dt0=0.1, y0=h0,
                stepsize_controller=diffrax.PIDController(rtol=tol_ode, atol=tol_ode),
                max_steps=max_steps, throw=False, saveat=diffrax.SaveAt(t1=True),
            )
            return [a[-1] for a in sol.ys], sol.stats["num_steps"], sol.stats["num_rejected_steps"], sol.result

        return solve

    h0 = list(ff[1:-1])
    found = None
    for tol_ode in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8):
        solve = make(tol_ode)
        t1 = 2.0 ** max(0, int(np.floor(np.log2(flow_time / 4)))) if flow_time else 1.0
        prev = None
        while t1 <= 2.0**16:
            h, steps, rejected, result = solve(h0, jnp.float32(t1))
            r = _residual(params, x, y, h)
            if result == diffrax.RESULTS.successful and np.isfinite(r) and r < TOL:
                found = (tol_ode, t1, int(steps), int(rejected), r, solve)
                break
            if result != diffrax.RESULTS.successful:
                break
            if flow_time and t1 >= flow_time and prev is not None and not r < 0.5 * prev:
                break  # the residual stagnates at this tolerance (steps hover around the equilibrium)
            prev = r
            t1 *= 2.0
        if found is not None:
            break
    if found is None:
        return {"method": "diffrax Heun + PID", "setting": "did not reach the residual (rtol down to 1e-8)"}
    tol_ode, t1, steps, rejected, r, solve = found
    seconds = _time(lambda: solve(h0, jnp.float32(t1))[0], repeats)
    return {"method": "diffrax Heun + PID", "setting": f"rtol = atol = {tol_ode:g}, t1 = {t1:g}",
            "steps": steps, "grad_evals": 2 * (steps + rejected), "hvps": 0, "residual": r, "ms": 1e3 * seconds}


def newton_row(params, x, y, *, repeats: int) -> dict:
    res = infer(params, x, y, tol=TOL, method="newton", check=False)
    if not bool(res.converged):
        return {"method": "Newton-CG (pclib)", "setting": f"did not converge: residual {float(res.residual):.3g}"}
    seconds = _time(lambda: infer(params, x, y, tol=TOL, method="newton", check=False).activities, repeats)
    return {"method": "Newton-CG (pclib)", "setting": "method = 'newton'", "steps": int(res.steps),
            "grad_evals": int(res.steps) + 1, "hvps": int(res.inner_steps),
            "residual": _residual(params, x, y, res.activities[1:-1]), "ms": 1e3 * seconds}


@register("time_to_equilibrium")
def time_to_equilibrium_item(opts: Options) -> Section:
    """Wall time to max |dF_i/dz| < 1e-4 (float32): Euler at its best dt, diffrax Heun + PID, Newton-CG."""
    rows = []
    repeats = 1 if opts.quick else 3
    max_steps = 2000 if opts.quick else 50_000
    for name, (widths, batch) in _selected(opts).items():
        print(f"  time to equilibrium, {name} ...", flush=True)
        params, x, y = _problem(widths, batch)
        net = "-".join(map(str, widths)) if len(widths) < 8 else f"{widths[0]}-{widths[1]}x{len(widths) - 2}-{widths[-1]}"
        euler = euler_row(params, x, y, max_steps=max_steps, repeats=repeats)
        flow = euler.get("flow_time")
        group = [euler,
                 diffrax_row(params, x, y, max_steps=max(1000, 20 * euler["steps"]) if flow else max_steps,
                             repeats=repeats, flow_time=flow),
                 newton_row(params, x, y, repeats=repeats)]
        base = group[1].get("ms")
        for row in group:
            row.update(config=name, network=net, batch=batch)
            row["speedup"] = base / row["ms"] if base and row.get("ms") else None
            print("    " + ", ".join(f"{k}={row.get(k)}" for k in ("method", "setting", "steps", "residual", "ms")),
                  flush=True)
        rows += group
    return Section(
        title=f"Time to equilibrium: max |dF_i/dz| < {TOL:g} (tanh MLP, float32)",
        rows=rows,
        columns=[
            ("config", "config", "{}"), ("network", "network", "{}"), ("batch", "batch", "{}"),
            ("method", "method", "{}"), ("setting", "setting", "{}"), ("steps", "steps", "{}"),
            ("grad_evals", "grad evals", "{}"), ("hvps", "HVPs", "{}"), ("residual", "residual", "{:.1e}"),
            ("ms", "ms", "{:.1f}"), ("speedup", "vs diffrax", "{:.1f}x"),
        ],
        note=(
            "Each solver stops at max_i max_{l,k} |dF_i/dz_{l,k}| < 1e-4 (Euler and Newton-CG per sample; "
            "diffrax at the first t1 = 2^k where the residual is reached). 'residual' is recomputed by "
            "jax.grad of the energy at the returned activities. Times are medians of compiled calls; "
            "'vs diffrax' is the diffrax time over the row's time."
        ),
    )
