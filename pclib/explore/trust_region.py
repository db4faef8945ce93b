"""Explorable figures of chapter 4 (trust regions), computed with ``pclib`` over a small grid.

Each figure function returns a :class:`pclib.explore.Figure`; each ``*_data`` function returns the raw
numbers of one grid point, which the tests compare with direct ``pclib`` computations.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from .. import theory
from ..energy import mse_loss
from ..inference import infer
from ..learning import pc_grads
from ..model import random_problem
from . import COLORS, Control, Figure, figure, line, panels
from ._common import STEP, _cap

TOY_X, TOY_Y, TOY_DT = jnp.array([1.0]), jnp.array([1.0]), 0.2
STEPS = (0, 1, 2, 3, 5, 10, 20, 40)
W_GRID = np.linspace(-2, 2, 41)


@lru_cache(maxsize=1)
def toy_landscape_data(iters: int = 60, lr: float = 0.1, w0: tuple[float, float] = (0.3, -0.28)):
    """The toy energy after k inference steps on a 41 × 41 weight grid, ``(41, 41, 41)`` for k = 0..40, and the
    weight paths of PC (each update after k steps, for k in :data:`STEPS`) and of BP from ``w0``."""
    kmax = max(STEPS)

    def energies(w):
        res = infer(theory.toy_params(w[0], w[1]), TOY_X[:, None], TOY_Y[:, None], act="linear", steps=kmax,
                    dt=TOY_DT, check=False)
        return res.energies

    W1, W2 = np.meshgrid(W_GRID, W_GRID)  # rows: w2, columns: w1
    grid = jax.jit(jax.vmap(energies))(jnp.stack([W1.ravel(), W2.ravel()], 1)).reshape(41, 41, kmax + 1)

    def pc_path(k):
        def update(w, _):
            params = theory.toy_params(w[0], w[1])
            traj = infer(params, TOY_X[:, None], TOY_Y[:, None], act="linear", steps=kmax, dt=TOY_DT, record=True,
                         check=False).trajectory
            g = pc_grads(params, [z[k] for z in traj], act="linear")
            w = w - lr * jnp.array([g[0]["W"][0, 0], g[1]["W"][0, 0]])
            return w, w
        return jnp.concatenate([jnp.asarray(w0)[None], jax.lax.scan(update, jnp.asarray(w0), None, length=iters)[1]])

    pcs = jax.jit(jax.vmap(pc_path))(jnp.asarray(STEPS))
    bp = theory.gd_path(lambda w: theory.toy_loss(w, TOY_X, TOY_Y), jnp.asarray(w0), lr=lr, steps=iters)
    return np.asarray(grid), np.asarray(pcs), np.asarray(bp)


def toy_landscape() -> Figure:
    """The toy landscape deforms from the loss (k = 0) to the equilibrated energy, and PC's path with it."""
    grid, pcs, bp = toy_landscape_data()

    def compute(k):
        pc = pcs[STEPS.index(k)]
        return [{"type": "contour", "x": W_GRID, "y": W_GRID, "z": grid[:, :, k], "zmin": 0, "zmax": 2.5,
                 "contours": {"start": 0, "end": 2.5, "size": 0.1}, "colorscale": "Viridis", "showscale": False,
                 "name": "energy", "showlegend": False},
                line(bp[:, 0], bp[:, 1], "BP", mode="lines+markers", color=COLORS["bp"], marker={"size": 4}),
                line(pc[:, 0], pc[:, 1], f"PC, {k} inference steps", mode="lines+markers", color="crimson",
                     marker={"size": 4})]

    layout = panels({"x": {"title": {"text": "w₁"}, "range": [-2, 2]},
                     "y": {"title": {"text": "w₂"}, "range": [-2, 2]}}, legend_y=0.02)
    layout["legend"]["yanchor"] = "bottom"
    return figure("ch04-landscape", compute, {"k": Control("inference steps k", STEPS, default=5, fmt="{}")},
                  layout, height=420)


LRS = (0.1, 0.3, 0.6, 1.0, 1.5, 2.0, 3.0)


@lru_cache(maxsize=1)
def lr_data(iters: int = 40, w0: tuple[float, float] = (1.2, 1.6), steps: int = 40):
    """Toy-network losses ``(lrs, iters + 1)`` of BP and of PC (updates after ``steps`` inference steps)."""
    def run(lr, method):
        def update(w, _):
            params = theory.toy_params(w[0], w[1])
            if method == "bp":
                g = jax.grad(theory.toy_loss)(w, TOY_X, TOY_Y)
            else:
                res = infer(params, TOY_X[:, None], TOY_Y[:, None], act="linear", steps=steps, dt=TOY_DT, check=False)
                gp = pc_grads(params, res.activities, act="linear")
                g = jnp.array([gp[0]["W"][0, 0], gp[1]["W"][0, 0]])
            w = w - lr * g
            return w, theory.toy_loss(w, TOY_X, TOY_Y)
        first = theory.toy_loss(jnp.asarray(w0), TOY_X, TOY_Y)
        return jnp.concatenate([first[None], jax.lax.scan(update, jnp.asarray(w0), None, length=iters)[1]])

    lrs = jnp.asarray(LRS)
    return np.asarray(jax.jit(jax.vmap(lambda lr: run(lr, "bp")))(lrs)), np.asarray(jax.jit(jax.vmap(lambda lr: run(lr, "pc")))(lrs))


def learning_rate() -> Figure:
    """PC's update is a trust-region step: it stays stable at learning rates where BP's diverges."""
    bp, pc = lr_data()

    def compute(lr):
        k = LRS.index(lr)
        t = np.arange(bp.shape[1])
        return [line(t, _cap(np.clip(bp[k], 1e-12, None), 1e3), "BP", color=COLORS["bp"]),
                line(t, _cap(np.clip(pc[k], 1e-12, None), 1e3), "PC (40 inference steps)", color=COLORS["pc"])]

    layout = panels({"x": {"title": {"text": "weight update"}}, "y": {"title": {"text": "loss ℒ"}, "type": "log",
                                                                       "range": [-12, 3]}})
    return figure("ch04-lr", compute, {"lr": Control("learning rate", LRS, default=2)}, layout)


PRECISIONS = (0.01, 0.1, 0.3, 1.0, 3.0)


@lru_cache(maxsize=1)
def direction_data(steps: int = 60, every: int = 3) -> np.ndarray:
    """Per layer, the cosine between PC's weight gradient after k inference steps (k = 0, every, ..., steps) and
    backprop's, on a random tanh net, for each output precision in :data:`PRECISIONS`: ``(pis, ks, L)``."""
    params, x, y = random_problem(3, [8, 16, 16, 16, 4])
    bp = jax.tree_util.tree_map(lambda g: -g, jax.grad(lambda p: mse_loss(p, x, y))(params))

    def one(pi_out):
        pi = jnp.array([1.0, 1.0, 1.0, pi_out]) / jnp.maximum(1.0, pi_out)
        traj = infer(params, x, y, steps=steps, dt=0.1, precisions=pi, record=True, check=False).trajectory
        def at(k):
            g = pc_grads(params, [z[k] for z in traj], precisions=pi)
            return jnp.stack([theory.cosine(jax.tree_util.tree_map(lambda a: -a, gl), bl) for gl, bl in zip(g, bp)])
        return jax.vmap(at)(jnp.arange(every, steps + 1, every))  # k = 0: only the top layer has a gradient

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(PRECISIONS)))


def direction() -> Figure:
    """How PC's weight update turns away from backprop's as inference proceeds, layer by layer."""
    cos = direction_data()
    ks = np.arange(1, cos.shape[1] + 1) * 3
    colors = ("#440154", "#31688e", "#35b779", "#b5a300")

    def compute(pi_out):
        c = cos[PRECISIONS.index(pi_out)]
        return [line(ks, c[:, l], f"layer {l + 1}", mode="lines+markers", color=colors[l]) for l in range(c.shape[1])]

    layout = panels({**STEP, "y": {"title": {"text": "cosine(PC update, BP update)"}, "range": [-0.05, 1.05]}},
                    legend_y=0.02)
    layout["legend"]["yanchor"] = "bottom"
    return figure("ch04-direction", compute, {"pi_out": Control("output precision π_L", PRECISIONS, default=3)}, layout)
