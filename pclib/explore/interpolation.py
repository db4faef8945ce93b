"""Explorable figures of chapter 3 (target propagation interpolation), computed with ``pclib`` over a small grid.

Each figure function returns a :class:`pclib.explore.Figure`; each ``*_data`` function returns the raw
numbers of one grid point, which the tests compare with direct ``pclib`` computations.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import numpy as np

from .. import theory
from ..model import forward
from . import COLORS, Control, Figure, figure, line, panels

RATIOS = tuple(float(r) for r in np.logspace(-4, 4, 9))
RHO = {"x": {"title": {"text": "precision ratio ρ"}, "type": "log"}}


def paper_net(seed: int, widths: list[int], n: int = 16):
    """Millidge et al. (2022), App. A.9.1: W ~ N(0, 0.05), x ~ N(1, 1), y ~ N(-1, 1), no biases."""
    ks = jax.random.split(jax.random.key(seed), len(widths) + 1)
    params = [{"W": np.sqrt(0.05) * jax.random.normal(ks[i], (widths[i + 1], widths[i]))} for i in range(len(widths) - 1)]
    return params, 1.0 + jax.random.normal(ks[-2], (n, widths[0])), -1.0 + jax.random.normal(ks[-1], (n, widths[-1]))


@lru_cache(maxsize=2)
def units_data(act: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample 0's hidden units at the feedforward pass, at the TP target, and at the equilibrium for every
    ratio in :data:`RATIOS` (rows), on a 5-5-5 network of the paper's kind."""
    params, x, y = paper_net(0, [5, 5, 5], n=4)
    ff = forward(params, x, act=act)
    ts = theory.tp_targets(params, y, act=act, out_act="linear", lowest=1)
    zs, init = [], "ffwd"
    for rho in RATIOS:
        z = theory.equilibrium(params, x, y, act=act, precisions=theory.ratio_precisions(rho, 2), steps=3000, init=init)
        zs.append(np.asarray(z[1][0]))
        init = z
    return np.asarray(ff[1][0]), np.asarray(ts[1][0]), np.asarray(zs)


def units() -> Figure:
    """The hidden units move from the feedforward pass (ρ → 0) to the TP targets (ρ → ∞)."""
    def compute(rho, act):
        ff, t, zs = units_data(act)
        u = np.arange(1, len(ff) + 1)
        return [line(u, ff, "feedforward pass", mode="markers", color=COLORS["bp"], marker={"size": 10}),
                line(u, t, "TP target", mode="markers", color=COLORS["theory"], marker={"size": 13, "symbol": "star"}),
                line(u, zs[RATIOS.index(rho)], "equilibrium", mode="markers", color=COLORS["pc"],
                     marker={"size": 9, "symbol": "square"})]

    layout = panels({"x": {"title": {"text": "hidden unit"}, "dtick": 1}, "y": {"title": {"text": "activity"}}})
    controls = {"rho": Control("precision ratio ρ", RATIOS, default=4, fmt="{:.0e}"),
                "act": Control("activation", ("tanh", "linear"))}
    return figure("ch03-units", compute, controls, layout)


def angles_data(depth: int, scheme: str) -> dict:
    """:func:`pclib.theory.interpolation_sweep` for a linear paper-style net with ``depth`` hidden layers."""
    params, x, y = paper_net(depth, [5] * (depth + 2))
    return theory.interpolation_sweep(params, x, y, RATIOS, act="linear", out_act="linear", scheme=scheme)


def angles() -> Figure:
    """Deeper linear nets: the angles to backprop and to TP along ρ, for either way of setting the ratio."""
    def compute(depth, scheme):
        r = angles_data(depth, scheme)
        return [line(r["ratios"], r["angle_bp"], "angle to BP's δ", mode="lines+markers", color=COLORS["bp"]),
                line(r["ratios"], r["angle_tp"], "angle to TP's move", mode="lines+markers", color=COLORS["theory"])]

    layout = panels({**RHO, "y": {"title": {"text": "angle (degrees)"}, "range": [0, 95]}}, legend_y=0.6)
    controls = {"depth": Control("hidden layers", (1, 2, 3), default=1),
                "scheme": Control("ratio applied", ("geometric", "output"))}
    return figure("ch03-angles", compute, controls, layout)


SCALES = (0.5, 1.0, 2.0, 4.0)


@lru_cache(maxsize=1)
def tanh_data() -> dict:
    """Tanh sweeps (every other ratio of :data:`RATIOS`) with the weights scaled by each of
    :data:`SCALES`: a larger scale drives tanh further from linear."""
    params, x, y = paper_net(0, [5, 5, 5])
    out = {}
    for s in SCALES:
        p = [{"W": s * layer["W"]} for layer in params]
        out[s] = theory.interpolation_sweep(p, x, y, RATIOS[::2], act="tanh", out_act="linear", steps=3000)
    return out


def tanh_distances() -> Figure:
    """Tanh: the distances of the equilibrium to the feedforward pass and to the TP targets along ρ."""
    sweeps = tanh_data()

    def compute(scale):
        r = sweeps[scale]
        return [line(r["ratios"], r["dist_ff"], "to feedforward pass", mode="lines+markers", color=COLORS["bp"]),
                line(r["ratios"], r["dist_tp"], "to TP targets", mode="lines+markers", color=COLORS["theory"])]

    layout = panels({**RHO, "y": {"title": {"text": "relative distance"}, "rangemode": "tozero"}}, legend_y=0.6)
    return figure("ch03-tanh", compute, {"scale": Control("weight scale", SCALES, default=1)}, layout)
