"""Explorable figures of chapter 1 (PC inference), computed with ``pclib`` over a small grid.

Each figure function returns a :class:`pclib.explore.Figure`; each ``*_data`` function returns the raw
numbers of one grid point, which the tests compare with direct ``pclib`` computations.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import theory
from ..energy import errors, layer_energy_trace
from ..inference import infer
from ..model import forward, random_problem
from . import COLORS, Control, Figure, figure, line, panels
from ._common import STEP, _ax, _cap, _energy_lines, _floor

DTS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def step_size_data(dt: float, seed: int = 0, steps: int = 60) -> np.ndarray:
    """Layer energies ``(steps + 1, L)`` of one inference run on a random tanh net with step ``dt``."""
    params, x, y = random_problem(seed, [6, 12, 12, 12, 3])
    res = infer(params, x, y, steps=steps, dt=dt, record=True, check=False)
    return np.asarray(layer_energy_trace(params, res.trajectory))


def step_size() -> Figure:
    """ℱ = ℒ(z) + Ẽ during inference, for a step size dt chosen by the reader (large dt diverges)."""
    F0 = float(step_size_data(0.1)[0].sum())

    def compute(dt):
        E = step_size_data(dt)
        ok = np.all(np.isfinite(E)) and np.all(np.diff(E.sum(1)) <= 1e-12)
        verdict = "ℱ falls at every step" if ok else "ℱ does not fall at every step: dt is too large"
        return {"data": _energy_lines(_cap(E, 2 * F0)), "layout": {"title": {"text": f"dt = {dt:g}: {verdict}", "font": {"size": 13}}}}

    layout = panels({**STEP, "y": {"title": {"text": "energy"}, "range": [-0.03 * F0, 1.1 * F0]}}, title=" ")
    return figure("ch01-step-size", compute, {"dt": Control("step size dt", DTS, default=2)}, layout)


PRECISIONS = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)


def precision_data(pi_out: float, seed: int = 0, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Backprop's hidden errors δ and PC's ε*/π_L at equilibrium, flattened, for output precision π_L."""
    params, x, y = random_problem(seed, [6, 16, 16, 4], n=n)
    ff = forward(params, x)
    delta = theory.backprop_errors(params, ff, y - ff[-1])
    pi = jnp.array([1.0, 1.0, pi_out]) / max(1.0, pi_out)  # a common factor moves no equilibrium; keeps dt stable
    eps = errors(params, infer(params, x, y, steps=1500, dt=0.1, precisions=pi).activities)
    flat = lambda a: np.concatenate([np.ravel(v) for v in a[:-1]])
    return flat(delta), flat([e / pi_out for e in eps])


def precision() -> Figure:
    """Equilibrium errors ε*/π_L against backprop's δ: they agree as the output precision π_L → 0."""
    def compute(pi_out):
        d, e = precision_data(pi_out)
        rel = np.linalg.norm(e - d) / np.linalg.norm(d)
        lim = float(np.abs(d).max()) * 1.1
        return {"data": [line([-lim, lim], [-lim, lim], "ε*/π_L = δ", color=COLORS["theory"], dash="dash"),
                         line(d, e, "hidden units", mode="markers", color=COLORS["pc"])],
                "layout": {"title": {"text": f"π_L = {pi_out:g}: |ε*/π_L − δ| / |δ| = {rel:.2g}", "font": {"size": 13}}}}

    layout = panels(_ax("backprop's δ_l (hidden layers)", "PC's ε*_l / π_L"), title=" ", legend_y=0.05)
    layout["legend"]["yanchor"] = "bottom"
    return figure("ch01-precision", compute, {"pi_out": Control("output precision π_L", PRECISIONS, default=2)}, layout)


def linear_rate_data(depth: int, steps: int = 300) -> tuple[np.ndarray, np.ndarray, float]:
    """For a linear net with ``depth`` hidden layers and dt = 1/λ_max: the relative distance to the closed-form
    equilibrium per step, the bound (1 − dt λ_min)^k times the first distance, and λ_min/λ_max."""
    params, x, y = random_problem(depth, [10] + [20] * depth + [5], act="linear")
    lam = np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(params)))
    dt = 1.0 / lam[-1]
    traj = infer(params, x, y, act="linear", steps=steps, dt=dt, record=True).trajectory[1:-1]
    dist = theory.relative_error_trace(traj, theory.linear_equilibrium(params, x, y)[1:-1])
    return dist, dist[0] * (1 - dt * lam[0]) ** np.arange(steps + 1), float(lam[0] / lam[-1])


def linear_rate() -> Figure:
    """Linear nets: inference converges to the closed form at the rate of the slowest eigendirection."""
    def compute(depth):
        d, bound, ratio = linear_rate_data(depth)
        t = np.arange(len(d))
        return {"data": [line(t, _floor(d), "inference", color=COLORS["pc"]),
                         line(t, _floor(bound), "(1 − dt λ_min)^k", color=COLORS["theory"], dash="dash")],
                "layout": {"title": {"text": f"{depth} hidden layer(s): λ_min/λ_max = {ratio:.2g}", "font": {"size": 13}}}}

    layout = panels({**STEP, "y": {"title": {"text": "relative distance to z*"}, "type": "log", "range": [-10, 0.3]}},
                    title=" ")
    return figure("ch01-linear-rate", compute, {"depth": Control("hidden layers", (1, 2, 3, 4, 5), default=1)}, layout)
