"""Explorable figures of chapter 2 (the EM view), computed with ``pclib`` over a small grid.

Each figure function returns a :class:`pclib.explore.Figure`; each ``*_data`` function returns the raw
numbers of one grid point, which the tests compare with direct ``pclib`` computations.
"""

from __future__ import annotations

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from .. import theory
from ..energy import layer_energy_trace, mse_loss
from ..inference import infer, initial_activities
from ..learning import pc_grads
from ..model import forward, random_problem
from . import COLORS, Control, Figure, figure, line, panels
from ._common import STEP, _cap, _energy_lines

@lru_cache(maxsize=1)
def _ch02_net():
    params, x, y = random_problem(4, [8, 12, 12, 12, 4])
    return params, x, y


@partial(jax.jit, static_argnames=("steps",))
def _loss_rate_run(params, x, y, z0, dt, pi, *, steps):
    """Inference from ``z0``: layer energies and −dℒ/dt per sample at every step (one program for every start)."""
    res = infer(params, x, y, steps=steps, dt=dt, init=z0, precisions=pi, record=True, check=False)
    rate = jax.vmap(lambda zs: theory.loss_descent_rate(params, zs, precisions=pi))(res.trajectory)
    return layer_energy_trace(params, res.trajectory, precisions=pi), rate


def loss_rate_data(pi_out: float, init: str, steps: int = 80, dt: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Layer energies and −dℒ/dt (mean over samples) along one inference run on chapter 2's tanh net
    (8-12-12-12-4, seed 4) from ``init`` ("ffwd", "normal" or "zeros")."""
    params, x, y = _ch02_net()
    pi = jnp.array([1.0, 1.0, 1.0, pi_out])
    z0 = initial_activities(params, x, y, init=init, key=jax.random.key(4))
    E, rate = _loss_rate_run(params, x, y, z0, dt, pi, steps=steps)
    return np.asarray(E), np.asarray(rate).mean(1)


def loss_rate() -> Figure:
    """The energy gradient bound: where −dℒ/dt < 0, the loss rises during inference."""
    def compute(pi_out, init):
        E, r = loss_rate_data(pi_out, init)
        t = np.arange(len(r))
        return _energy_lines(E) + [line(t, r, "−dℒ/dt", color="gray", axis=2),
                                   line(t, np.minimum(r, 0), "−dℒ/dt < 0: ℒ rises", color=COLORS["L"], axis=2,
                                        fill="tozeroy")]

    layout = panels({**STEP, "y": {"title": {"text": "energy"}}}, {**STEP, "y": {"title": {"text": "−dℒ/dt"}}})
    controls = {"pi_out": Control("output precision π_L", (0.01, 0.03, 0.1, 0.3, 1.0, 2.0), default=4),
                "init": Control("start", ("ffwd", "normal", "zeros"))}
    return figure("ch02-loss-rate", compute, controls, layout, height=360)


DT_FRACTIONS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 1.95)


def one_layer_data(frac: float, steps: int = 30) -> np.ndarray:
    """Squared output errors per component ``(steps + 1, 2)`` for the chapter's example (W_2 = diag(1, 3),
    e = (1, 1)) with dt = ``frac`` / λ_max."""
    params = [{"W": jnp.array([[0.3, 0.1], [-0.2, 0.4]]), "b": jnp.zeros(2)},
              {"W": jnp.diag(jnp.array([1.0, 3.0])), "b": jnp.zeros(2)}]
    x = jnp.array([[1.0, -0.5]])
    y = forward(params, x, act="linear")[-1] + 1.0
    lam_max = float(np.linalg.eigvalsh(np.asarray(theory.linear_activity_hessian(params)))[-1])
    z1 = infer(params, x, y, act="linear", steps=steps, dt=frac / lam_max, record=True).trajectory[1][:, 0]
    return np.asarray(y[0] - z1 @ params[1]["W"].T) ** 2


def one_layer() -> Figure:
    """One linear hidden layer: ℒ falls at every step for dt ≤ 1/λ_max, though one component may rise."""
    def compute(frac):
        e2 = one_layer_data(frac)
        t = np.arange(len(e2))
        L = 0.5 * e2.sum(1)
        rises = bool(np.any(np.diff(L) > 1e-12))
        return {"data": [line(t, 0.5 * e2[:, 0], "½ e₁² (slow)", color=COLORS["E"], dash="dot"),
                         line(t, 0.5 * e2[:, 1], "½ e₂² (fast)", color=COLORS["bp"], dash="dot"),
                         line(t, L, "ℒ(z)", color=COLORS["L"])],
                "layout": {"title": {"text": f"dt = {frac:g}/λ_max: ℒ {'rises at some step' if rises else 'never rises'}",
                                     "font": {"size": 13}}}}

    layout = panels({**STEP, "y": {"title": {"text": "output loss"}, "range": [0, 1.05]}}, title=" ")
    return figure("ch02-one-layer", compute, {"frac": Control("dt × λ_max", DT_FRACTIONS, default=5)}, layout)


LRS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0)


@lru_cache(maxsize=1)
def learning_data(iters: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch PC learning (inference run to near equilibrium, 100 steps of 0.2) on a small tanh net, one
    run per learning rate in :data:`LRS`: the loss ℒ and the energy ℱ at inference's end, ``(lrs, iters)``."""
    params, x, y = random_problem(2, [4, 8, 2], n=32)

    def run(lr):
        def body(p, _):
            res = infer(p, x, y, steps=100, dt=0.2, check=False)
            g = pc_grads(p, res.activities)
            return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), (mse_loss(p, x, y), res.energies[-1])
        return jax.lax.scan(body, params, None, length=iters)[1]

    L, F = jax.jit(jax.vmap(run))(jnp.asarray(LRS))
    return np.asarray(L), np.asarray(F)


def learning() -> Figure:
    """PC learning descends the equilibrated energy ℱ*, for a small enough learning rate."""
    L, F = learning_data()

    def compute(lr):
        k = LRS.index(lr)
        t = np.arange(L.shape[1])
        verdict = ("diverges" if not np.all(np.isfinite(F[k])) else "rises at some update"
                   if np.any(np.diff(F[k]) > 1e-9 * F[k, 0]) else "falls at every update")
        return {"data": [line(t, _cap(F[k], 10), "ℱ at equilibrium", color=COLORS["F"]),
                         line(t, _cap(L[k], 10), "loss ℒ", color=COLORS["L"])],
                "layout": {"title": {"text": f"learning rate {lr:g}: ℱ* {verdict}",
                                     "font": {"size": 13}}}}

    layout = panels({"x": {"title": {"text": "weight update"}},
                     "y": {"title": {"text": "energy, loss"}, "type": "log"}}, title=" ")
    return figure("ch02-learning", compute, {"lr": Control("learning rate", LRS, default=3)}, layout)
