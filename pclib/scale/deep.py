r"""Chapter 4's deep-network experiments (Innocenti, Singh & Buckley 2023): PC against BP on deep tanh
MLPs under the fair-comparison protocol of :func:`pclib.compare.compare`, and the escape from the
saddle at the origin after a small initialisation, across depth."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from .. import data
from ..compare import DivergedEverywhereError, compare
from ..model import init_mlp
from . import check_size, register

PLATEAU = 0.43  # the loss level below which a run has left the plateau (it sits near 0.45 on MNIST)

COMPARISON = {  # size: (dataset, samples (None: all), hidden widths, epochs)
    "smoke": ("mnist5k", 128, [8] * 3, 1),
    "chapter": ("mnist5k", 512, [64] * 9, 5),
    "medium": ("mnist5k", 4000, [128] * 9, 2),
    "paper": ("mnist", None, [128] * 9, 1),
}
SADDLE = {  # size: (dataset, samples, width, hidden-layer counts, epochs, step lengths)
    "smoke": ("mnist5k", 128, 8, (1, 2), 2, (0.03, 0.1, 0.3)),
    "chapter": ("mnist5k", 512, 32, (3, 5, 7), 25, (0.1, 0.3)),
    "medium": ("mnist5k", 4000, 32, (3, 5, 7, 9), 16, (0.03, 0.1, 0.3)),
    "paper": ("mnist", None, 128, (3, 5, 7, 9), 2, (0.03, 0.1, 0.3)),
}


def _digits(name: str, samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    ds = data.get(name, seed=0)
    end = ds.x_train.shape[0] if samples is None else samples
    return np.asarray(ds.x_train[:end], np.float32), np.asarray(ds.y_train[:end], np.float32)


def _draw_bands(fig: Any, panels: dict[str, Any]) -> None:
    from ..plotting import COLORS

    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (title, c) in zip(axes, panels.items()):
        for m in ("bp", "pc"):
            mean, lo, hi = c.band(m)
            what = "step length" if c.mode == "matched" else "rate"
            ax.plot(mean, color=COLORS[m], label=f"{m.upper()}, {what} {c.best_lr[c.methods.index(m), 0]:g}")
            ax.fill_between(np.arange(len(mean)), lo, hi, color=COLORS[m], alpha=0.25)
        ax.set(title=title, xlabel="iteration")
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"training loss (batch; band: {panels[next(iter(panels))].losses.shape[1]} inits)")


def draw_comparison(result: dict, fig: Any) -> None:
    """The three protocols' loss curves, mean and range over initialisations."""
    _draw_bands(fig, {"tuned learning rates, T = 50": result["tuned"], "matched step length, T = 50": result["matched"],
                      "matched step length, PC at equilibrium": result["near"]})


@register("ch04_deep_comparison", chapter="ch04", title="PC vs BP on deep tanh MLPs: tuned, matched, at equilibrium",
          draw=draw_comparison)
def deep_comparison(size: str = "chapter") -> dict:
    r"""PC (T = 50 Euler steps of dt = 0.2, the paper's truncation) against BP on a deep tanh MLP, over 3
    initialisations: each at its own best learning rate (``"tuned"``), at matched step length
    (``"matched"``), and PC trained at equilibrium (Newton-CG to $\max|\partial F/\partial z| < 10^{-4}$ at
    every update) at the step length both chose in the matched run (``"near"``)."""
    name, samples, hidden, epochs = COMPARISON[check_size(size)]
    x, y = _digits(name, samples)
    widths = [x.shape[1]] + hidden + [y.shape[1]]

    def init(k):
        return init_mlp(k, widths, dtype=jnp.float32)

    opts = dict(seeds=(0, 1, 2), epochs=epochs, batch_size=64, batch_seed=0)
    tuned = compare(init, x, y, lrs=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0], mode="tuned", steps=50, dt=0.2, **opts)
    matched = compare(init, x, y, lrs=[0.03, 0.1, 0.3], mode="matched", steps=50, dt=0.2, **opts)
    step = float(matched.best_lr[0, 0])
    near = compare(init, x, y, lrs=[step], mode="matched", solver="newton", tol=1e-4, steps=50, **opts)
    return {"size": size, "widths": widths, "samples": int(x.shape[0]), "tuned": tuned, "matched": matched, "near": near}


def draw_saddle(result: dict, fig: Any) -> None:
    """Each depth's loss curves from the small initialisation, with the plateau threshold."""
    _draw_bands(fig, {f"{H} hidden layers": c for H, c in result["runs"].items() if c is not None})
    for ax in fig.axes:
        ax.axhline(PLATEAU, color="0.5", lw=0.8, ls=":")


def summarize_saddle(result: dict) -> str:
    """Escape iterations per depth, method and initialisation: at each method's chosen step length, and at
    every step length of the grid (``*``: that run was scored as diverged)."""
    def times(v: Any, bad: Any = None) -> str:
        bad = np.zeros(np.shape(v), bool) if bad is None else bad
        return ", ".join(("never" if t < 0 else str(int(t))) + ("*" if b else "") for t, b in zip(np.ravel(v), np.ravel(bad)))

    rows, grid = [], []
    for H, c in result["runs"].items():
        if c is None:
            rows.append(f"| {H} | {result['failed'][H]} | | | |")
            continue
        esc = np.asarray(result["escape"][H])
        steps = "/".join(f"{float(c.best_lr[i, 0]):g}" for i in range(2))
        rows.append(f"| {H} | {times(esc[0])} | {times(esc[1])} | {c.losses.shape[-1]} | {steps} |")
        below = np.asarray(c.grid_losses, float) < PLATEAU  # (method, seed, rate, iteration)
        at = np.where(below.any(axis=3), below.argmax(axis=3), -1)
        bad = ~np.isfinite(np.asarray(c.scores, float))
        for k, lr in enumerate(c.lrs):
            grid.append(f"| {H} | {float(lr):g} | {times(at[0, :, k], bad[0, :, k])} | {times(at[1, :, k], bad[1, :, k])} |")
    return (f"First iteration with the batch loss below {PLATEAU} (width {result['width']}, {result['samples']} digits, "
            "normalised updates, each method at its best step length, one entry per initialisation):\n\n"
            "| hidden layers | PC | BP | iterations | step length PC/BP |\n|---|---|---|---|---|\n" + "\n".join(rows) +
            "\n\nThe same at every step length of the grid (`*`: the run was scored as diverged: its inference or "
            "its loss blew up at some update):\n\n| hidden layers | step length | PC | BP |\n|---|---|---|---|\n"
            + "\n".join(grid) + "\n")


@register("ch04_deep_saddle", chapter="ch04", title="Escape from the saddle at the origin across depth",
          draw=draw_saddle, summarize=summarize_saddle)
def deep_saddle(size: str = "chapter") -> dict:
    r"""Tanh MLPs from ``init_mlp(scale=0.05)`` (next to the saddle at the origin), PC (T = 50) against BP at
    matched step length, each at its best step length of the size's grid (chapter: 0.1, 0.3), over 3
    initialisations, for each hidden-layer count. ``escape[H]`` is ``(2, 3)``: the first iteration with the
    batch loss below :data:`PLATEAU` for PC and BP per initialisation, ``-1`` where it never fell below.
    Where a method diverged at every step length for some initialisation, ``runs[H]`` and ``escape[H]`` are
    ``None`` and ``failed[H]`` says so."""
    name, samples, width, depths, epochs, steps = SADDLE[check_size(size)]
    x, y = _digits(name, samples)
    runs, escape, failed = {}, {}, {}
    for H in depths:
        widths = [x.shape[1]] + [width] * H + [y.shape[1]]
        try:
            runs[H] = compare(lambda k, w=widths: init_mlp(k, w, dtype=jnp.float32, scale=0.05), x, y, lrs=list(steps),
                              mode="matched", steps=50, dt=0.2, seeds=(0, 1, 2), epochs=epochs, batch_size=64,
                              batch_seed=0)
        except DivergedEverywhereError as err:
            runs[H] = escape[H] = None
            failed[H] = str(err).split(";")[0]
            continue
        below = runs[H].losses < PLATEAU
        escape[H] = np.where(below.any(axis=2), below.argmax(axis=2), -1)
    return {"size": size, "width": width, "samples": int(x.shape[0]), "runs": runs, "escape": escape,
            "failed": failed}
