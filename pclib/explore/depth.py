"""Explorable figures of chapter 6 (depth), computed with ``pclib`` over a small grid.

Each figure function returns a :class:`pclib.explore.Figure`; each ``*_data`` function returns the raw
numbers of one grid point, which the tests compare with direct ``pclib`` computations. The networks are
linear and drawn with NumPy, so a new width or depth compiles nothing.
"""

from __future__ import annotations

from functools import lru_cache

import jax.numpy as jnp
import numpy as np

from .. import theory
from ..energy import errors
from ..inference import infer
from ..model import mupc_scales
from . import COLORS, Control, Figure, figure, line, panels
from ._common import _floor

D_IN, D_OUT = 10, 5


def nets(seed: int, width: int, depth: int) -> tuple[list, list]:
    """A standard linear network ($W_l \\sim \\mathcal N(0, 1/d_{l-1})$) and the effective weights of the μPC
    network with the same draws $W_l \\sim \\mathcal N(0, 1)$; ``depth`` weight layers, hidden layers of ``width``."""
    rng = np.random.default_rng(seed)
    widths = [D_IN] + [width] * (depth - 1) + [D_OUT]
    Ws = [rng.standard_normal((b, a)) for a, b in zip(widths[:-1], widths[1:])]
    std = [{"W": jnp.asarray(W / np.sqrt(W.shape[1]))} for W in Ws]
    return std, theory.mupc_effective_weights([{"W": jnp.asarray(W)} for W in Ws])


# --- the error wave ---

WAVE_DEPTH, WAVE_STEPS = 16, 24
DTS, STEPS = (0.1, 0.3, 0.5, 1.0), (4, 8, 16, 24)


@lru_cache(maxsize=8)
def wavefront_data(dt: float) -> tuple[np.ndarray, np.ndarray]:
    """``(measured, leading)``, each ``(WAVE_STEPS + 1, WAVE_DEPTH)``: after $k$ Euler steps of ``dt`` from the
    feedforward pass of a standard linear network (width 8, 16 layers), $\\lVert\\varepsilon_{L-j}\\rVert /
    \\lVert\\delta_{L-j}\\rVert$ at distance $j$ from the output (column $j$), measured with :func:`pclib.infer`, and
    the leading order $\\binom kj\\mathrm dt^j$."""
    params, _ = nets(0, 8, WAVE_DEPTH)
    rng = np.random.default_rng(1)
    x, y = jnp.asarray(rng.standard_normal((16, D_IN))), jnp.asarray(rng.standard_normal((16, D_OUT)))
    delta_L = y - _output(params, x)
    res = infer(params, x, y, act="linear", steps=WAVE_STEPS, dt=dt, record=True, check=False)
    traj = [np.asarray(z) for z in res.trajectory]
    lead = theory.leading_order_errors(params, delta_L, steps=WAVE_STEPS, dt=dt)
    delta = np.array([np.linalg.norm(np.asarray(d)) for d in _deltas(params, delta_L)])[::-1]  # by distance j
    measured = np.array([[np.linalg.norm(np.asarray(e)) for e in errors(params, [z[k] for z in traj], act="linear")]
                         for k in range(WAVE_STEPS + 1)])
    leading = np.array([[np.linalg.norm(np.asarray(l[k])) for l in lead] for k in range(WAVE_STEPS + 1)])
    return measured[:, ::-1] / delta, leading[:, ::-1] / delta


def _output(params: list, x):
    z = x
    for p in params:
        z = z @ p["W"].T
    return z


def _deltas(params: list, delta_L) -> list:
    out = [delta_L]
    for p in params[:0:-1]:
        out.insert(0, out[0] @ p["W"])
    return out


def wavefront() -> Figure:
    """The error that reaches each layer after T inference steps, against the binomial leading order."""
    def compute(dt, steps):
        measured, leading = wavefront_data(dt)
        j = np.arange(WAVE_DEPTH)
        return {"data": [line(j, _floor(measured[steps], 1e-300), "measured (pclib.infer)", mode="lines+markers",
                              color=COLORS["pc"]),
                         line(j, _floor(leading[steps], 1e-300), "C(T, j) dtʲ", color=COLORS["theory"], dash="dash")],
                "layout": {"title": {"text": f"T = {steps} steps of dt = {dt}: no error beyond distance {steps}",
                                     "font": {"size": 13}}}}

    layout = panels({"x": {"title": {"text": "distance j from the output"}},
                     "y": {"title": {"text": "|ε_{L−j}| / |δ_{L−j}|"}, "type": "log", "range": [-20, 1]}}, title=" ")
    return figure("ch06-wavefront", compute, {"dt": Control("dt", DTS, default=1),
                                              "steps": Control("steps T", STEPS, default=2, fmt="{:d}")}, layout)


# --- the spectrum of the activity Hessian ---

DEPTHS, WIDTHS = (4, 8, 16, 32), (8, 16, 32)


@lru_cache(maxsize=32)
def spectrum_data(depth: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The activity Hessian's eigenvalues (ascending) of the standard and of the μPC linear network of :func:`nets`."""
    std, mupc = nets(0, width, depth)
    return theory.activity_spectrum(std), theory.activity_spectrum(mupc)


def spectrum() -> Figure:
    """Depth spreads the activity Hessian's spectrum for both parameterisations; width only the standard one's."""
    def compute(depth, width):
        s, m = spectrum_data(depth, width)
        q_s, q_m = np.linspace(0, 1, len(s)), np.linspace(0, 1, len(m))
        return {"data": [line(q_s, s, f"standard, κ = {s[-1] / s[0]:.3g}", color=COLORS["bp"]),
                         line(q_m, m, f"μPC, κ = {m[-1] / m[0]:.3g}", color=COLORS["pc"])],
                "layout": {"title": {"text": f"{depth} layers of width {width}: ({depth - 1} × {width} activities)",
                                     "font": {"size": 13}}}}

    layout = panels({"x": {"title": {"text": "eigenvalue rank (fraction)"}},
                     "y": {"title": {"text": "eigenvalue of the activity Hessian"}, "type": "log", "range": [-4, 1]}},
                    title=" ", legend_y=0.05)
    layout["legend"]["yanchor"] = "bottom"
    return figure("ch06-spectrum", compute, {"depth": Control("layers L", DEPTHS, default=2, fmt="{:d}"),
                                             "width": Control("width N", WIDTHS, default=1, fmt="{:d}")}, layout)


# --- the width limit ---

LIMIT_DEPTHS, LIMIT_WIDTHS = (4, 8, 16, 32, 64), (8, 16, 32, 64, 128, 256)


@lru_cache(maxsize=8)
def width_limit_data(depth: int) -> dict[str, np.ndarray]:
    """$\\mathcal F^*/\\mathcal L$ of the standard and μPC networks of :func:`nets` over :data:`LIMIT_WIDTHS`
    (random inputs and targets, 64 samples), and the predictions $1/c$ of
    :func:`pclib.theory.expected_output_covariance`."""
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((64, D_IN)), rng.standard_normal((64, D_OUT))
    out = {k: [] for k in ("std", "mupc", "std_pred", "mupc_pred")}
    for N in LIMIT_WIDTHS:
        std, mupc = nets(0, N, depth)
        w = [D_IN] + [N] * (depth - 1) + [D_OUT]
        out["std"].append(theory.energy_loss_ratio(std, x, y))
        out["mupc"].append(theory.energy_loss_ratio(mupc, x, y))
        out["std_pred"].append(1 / theory.expected_output_covariance(w, theory.standard_scales(w), residual=False))
        out["mupc_pred"].append(1 / theory.expected_output_covariance(w, mupc_scales(w), residual=True))
    return {k: np.asarray(v) for k, v in out.items()}


def width_limit() -> Figure:
    """Under μPC the equilibrated energy tends to the loss once the width is much larger than the depth."""
    def compute(depth):
        d = width_limit_data(depth)
        w = np.asarray(LIMIT_WIDTHS)
        return [line(w, d["mupc"], "μPC", mode="lines+markers", color=COLORS["pc"]),
                line(w, d["mupc_pred"], "μPC, 1/c", color=COLORS["pc"], dash="dash"),
                line(w, d["std"], "standard", mode="lines+markers", color=COLORS["bp"]),
                line(w, d["std_pred"], "standard, 1/c = 1/L", color=COLORS["bp"], dash="dash")]

    layout = panels({"x": {"title": {"text": "width N"}, "type": "log"},
                     "y": {"title": {"text": "ℱ* / ℒ"}, "range": [0, 1.05]}}, legend_y=0.6)
    return figure("ch06-width-limit", compute, {"depth": Control("layers L", LIMIT_DEPTHS, default=2, fmt="{:d}")},
                  layout)
