"""Explorable figures of chapter 5 (strict saddles), computed with ``pclib`` over a small grid.

Each figure function returns a :class:`pclib.explore.Figure`; each ``*_data`` function returns the raw
numbers of one grid point, which the tests compare with direct ``pclib`` computations.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import theory
from ..energy import mse_loss
from ..learning import make_step
from ..model import init_mlp
from . import COLORS, Control, Figure, figure, line, panels
from ._common import _num

def _ch05_data(n: int = 64, seed: int = 0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(k1, (n, 4))
    return x, x @ jax.random.normal(k2, (4, 3)) / 2.0


def _ch05_widths(depth: int) -> list[int]:
    return [4] + [5] * depth + [3]


def origin_data(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted Hessian eigenvalues of ℒ and of ℱ* at the origin (:func:`pclib.theory.origin_spectra`)."""
    x, y = _ch05_data()
    hl, hf = theory.origin_spectra(_ch05_widths(depth), x, y)
    return np.asarray(hl), np.asarray(hf)


def origin() -> Figure:
    """At the origin ℒ's Hessian vanishes (two or more hidden layers) while ℱ*'s has negative eigenvalues."""
    def compute(depth):
        hl, hf = origin_data(depth)
        i = np.arange(1, len(hl) + 1)
        return {"data": [line(i, hl, "∇²ℒ(0)", mode="markers", color=COLORS["bp"], marker={"size": 7}),
                         line(i, hf, "∇²ℱ*(0)", mode="markers", color=COLORS["pc"], marker={"size": 5})],
                "layout": {"title": {"text": f"{depth} hidden layer(s): smallest eigenvalue of ∇²ℒ {_num(hl.min())}, "
                                             f"of ∇²ℱ* {_num(hf.min())}", "font": {"size": 13}}}}

    layout = panels({"x": {"title": {"text": "eigenvalue index (sorted)"}}, "y": {"title": {"text": "eigenvalue"}}},
                    title=" ", legend_y=0.5)
    return figure("ch05-origin", compute, {"depth": Control("hidden layers", (1, 2, 3), default=1)}, layout)


T = np.linspace(-1.5, 1.5, 31)


def origin_slice_data(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """ℒ and ℱ* along the line t·θ through the origin in a random direction θ of unit norm per layer."""
    x, y = _ch05_data()
    rng = np.random.default_rng(depth)
    widths = _ch05_widths(depth)
    theta = [rng.standard_normal((b, a)) for a, b in zip(widths[:-1], widths[1:])]
    theta = [jnp.asarray(w / np.linalg.norm(w), x.dtype) for w in theta]
    at = lambda t: [{"W": t * w} for w in theta]
    both = jax.jit(jax.vmap(lambda t: (mse_loss(at(t), x, y, act="linear"), theory.equilibrated_energy(at(t), x, y))))
    L, F = both(jnp.asarray(T))
    return np.asarray(L), np.asarray(F)


def origin_slice() -> Figure:
    """Through the origin, ℒ is flat to order H + 1 while ℱ* curves down: the saddle becomes strict."""
    def compute(depth):
        L, F = origin_slice_data(depth)
        return [line(T, L, "loss ℒ", color=COLORS["bp"]), line(T, F, "equilibrated energy ℱ*", color=COLORS["pc"])]

    layout = panels({"x": {"title": {"text": "t (weights t·θ, θ random)"}}, "y": {"title": {"text": "value"}}},
                    legend_y=0.02)
    layout["legend"]["yanchor"] = "bottom"
    return figure("ch05-slice", compute, {"depth": Control("hidden layers", (1, 2, 3), default=1)}, layout)


SCALES = (1e-3, 1e-2, 3e-2, 1e-1)


@lru_cache(maxsize=1)
def escape_data(iters: int = 200, lr: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch losses ``(scales, iters + 1)`` of BP and PC (50 inference steps of 0.1 per update) on a linear
    net with three hidden layers, from weights of std ``scale`` (:data:`SCALES`)."""
    x, y = _ch05_data()
    widths = _ch05_widths(3)
    opt = optax.sgd(lr)

    def run(scale, method):
        step = make_step(opt, method=method, act="linear", steps=50, dt=0.1)
        p0 = init_mlp(jax.random.key(0), widths, bias=False, scale=1.0)
        p0 = [{"W": scale * p["W"]} for p in p0]
        def body(carry, _):
            p, state, _info = step(*carry, x, y)
            return (p, state), mse_loss(p, x, y, act="linear")

        ls = jax.lax.scan(body, (p0, opt.init(p0)), None, length=iters)[1]
        return jnp.concatenate([mse_loss(p0, x, y, act="linear")[None], ls])

    scales = jnp.asarray(SCALES)
    return tuple(np.asarray(jax.jit(jax.vmap(lambda s: run(s, m)))(scales)) for m in ("bp", "pc"))


def escape() -> Figure:
    """From near the origin, PC leaves the plateau long before BP; the smaller the start, the larger the gap."""
    bp, pc = escape_data()

    def compute(scale):
        k = SCALES.index(scale)
        t = np.arange(bp.shape[1])
        return [line(t, bp[k], "BP", color=COLORS["bp"]), line(t, pc[k], "PC", color=COLORS["pc"])]

    layout = panels({"x": {"title": {"text": "gradient-descent iteration"}}, "y": {"title": {"text": "training loss"},
                                                                                  "rangemode": "tozero"}})
    return figure("ch05-escape", compute, {"scale": Control("initial weight std", SCALES, default=2, fmt="{:.0e}")},
                  layout)
