"""Figures: a house style, inference-trace panels, and kernel-free players for the HTML book.

A *player* turns a drawing function into a sequence of precomputed frames with matplotlib's
``HTMLWriter`` (the JavaScript player of ``FuncAnimation.to_jshtml``): the HTML book then shows a slider and play/step buttons that
work with no kernel, while Jupyter and Colab readers get the live widgets of
:mod:`pclib.widgets` for the same figure.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import HTMLWriter
from matplotlib.figure import Figure

COLORS = {"F": "black", "L": "tab:red", "E": "tab:blue", "pc": "tab:blue", "bp": "tab:orange", "theory": "tab:green"}


def setup() -> None:
    """Apply the book's matplotlib style (sizes, grid, no top/right spines)."""
    matplotlib.rcParams.update({
        "figure.figsize": (7.0, 3.2), "figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3,
        "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
        "font.size": 10, "animation.embed_limit": 30.0,
    })


def inference_panels(
    fig: Figure,
    layer_energy_trace: np.ndarray,
    deviations: np.ndarray,
    *,
    upto: int | None = None,
    title: str = "",
) -> None:
    r"""Two panels of an inference run: the energy split $\mathcal F = \mathcal L + \tilde E$ against
    the step, and each hidden layer's distance $\lVert z_l - \hat z_l\rVert$ from the feedforward pass.

    ``layer_energy_trace`` has shape ``(T, L)`` (see :func:`pclib.energy.layer_energy_trace`) and
    ``deviations`` shape ``(T, L + 1)``. ``upto`` draws only the first ``upto + 1`` steps, on fixed
    axes, so that the frames of a player line up.
    """
    E = np.asarray(layer_energy_trace)
    D = np.asarray(deviations)
    T = E.shape[0]
    k = T if upto is None else upto + 1
    t = np.arange(T)
    ax1, ax2 = fig.subplots(1, 2)
    F, L, R = E.sum(1), E[:, -1], E[:, :-1].sum(1)
    for y, lab, c in ((F, r"$\mathcal{F}$", COLORS["F"]), (L, r"$\mathcal{L}(z)$ (output term)", COLORS["L"]),
                      (R, r"$\tilde E$ (hidden terms)", COLORS["E"])):
        ax1.plot(t[:k], y[:k], color=c, label=lab)
    top = max(float(np.nanmax(np.r_[F, L, R])), 1e-12)
    ax1.set(xlim=(0, T - 1), ylim=(-0.03 * top, 1.05 * top), xlabel="inference step", ylabel="energy")
    ax1.legend(loc="center right")
    cmap = plt.get_cmap("viridis")
    n_layers = D.shape[1]
    for l in range(n_layers):
        ax2.plot(t[:k], D[:k, l], color=cmap(l / max(n_layers - 1, 1)), label=f"$z_{{{l}}}$")
    ax2.set(xlim=(0, T - 1), ylim=(-0.03 * max(D.max(), 1e-12), 1.05 * max(D.max(), 1e-12)),
            xlabel="inference step", ylabel=r"$\|z_l - \hat z_l\|$ (mean over samples)")
    ax2.legend(loc="upper left", ncol=2, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()


def deviations(trajectory: Sequence[Any], reference: Sequence[Any]) -> np.ndarray:
    r"""Each layer's mean distance from ``reference`` (e.g. the feedforward pass) at every recorded step,
    $\frac1N\sum_i\lVert z_{l,i}(t) - \hat z_{l,i}\rVert$: shape ``(T, L + 1)`` for a trajectory of ``(T, N, d_l)``
    arrays (``infer(..., record=True).trajectory``) and ``(N, d_l)`` references. Computed on the host."""
    return np.stack([np.linalg.norm(np.asarray(z) - np.asarray(r), axis=-1).mean(-1)
                     for z, r in zip(trajectory, reference)], axis=1)


def player(
    draw: Callable[[Any, Any], None],
    frames: Sequence[Any],
    *,
    figsize: tuple[float, float] = (8.0, 3.2),
    interval: int = 200,
    dpi: int = 72,
    setup: Callable[[Figure], Any] | None = None,
) -> Any:
    """A kernel-free animation: ``draw(fig, frame)`` for each frame, embedded as JavaScript + PNGs.

    Returns an ``IPython.display.HTML`` object with a slider and play/step buttons; it renders in the
    static HTML book without a kernel. Keep frames few and ``dpi`` low: every frame is stored.

    Without ``setup`` the figure is cleared and redrawn from scratch for every frame. With
    ``setup(fig) -> state``, called once to draw the axes and create the artists, each frame is
    ``draw(state, frame)``, which only updates those artists (e.g. ``line.set_data``): much cheaper
    when the axes, legends and layout stay the same from frame to frame.
    """
    from pathlib import Path
    from tempfile import TemporaryDirectory

    from IPython.display import HTML

    fig = plt.figure(figsize=figsize, dpi=dpi)
    state = None if setup is None else setup(fig)
    # the frames go straight to the writer: one draw per frame (FuncAnimation.to_jshtml draws each twice)
    writer = HTMLWriter(fps=1000 / interval, embed_frames=True, default_mode="once")
    with TemporaryDirectory() as tmp:
        path = Path(tmp, "player.html")
        with writer.saving(fig, str(path), dpi):
            for frame in frames:
                if setup is None:
                    fig.clear()
                    draw(fig, frame)
                else:
                    draw(state, frame)
                writer.grab_frame()
        html = path.read_text()
    plt.close(fig)
    return HTML(html)


def inference_player(
    layer_energy_trace: np.ndarray,
    deviations: np.ndarray,
    frames: Sequence[int],
    *,
    title: str = "",
    figsize: tuple[float, float] = (8.0, 3.2),
    interval: int = 200,
    dpi: int = 72,
) -> Any:
    """A kernel-free :func:`player` of one recorded inference run: frame ``k`` shows the first ``k`` steps of
    :func:`inference_panels`. The panels are drawn once and each frame only cuts the lines, so the frames
    are cheap and every frame has the same axes."""

    def setup(fig: Figure) -> list:
        inference_panels(fig, layer_energy_trace, deviations, title=title)
        return [(ln, ln.get_xdata(), ln.get_ydata()) for ax in fig.axes for ln in ax.lines]

    def cut(lines: list, k: int) -> None:
        for ln, xs, ys in lines:
            ln.set_data(xs[: k + 1], ys[: k + 1])

    return player(cut, frames, figsize=figsize, interval=interval, dpi=dpi, setup=setup)


def pcn_schematic(ax: Any, *, n_layers: int = 3) -> None:
    r"""Draw the units of a PCN and their connections on ``ax``: one value unit $z_l$ and one error unit
    $\varepsilon_l = z_l - \mu_l$ per layer (Rao & Ballard 1999; Millidge et al. 2022, Fig. 1).

    Value units sit on the bottom row, error units on the top row. Each error unit receives its own
    value unit (+) and the prediction $\mu_l = f_l(W_l z_{l-1} + b_l)$ from the layer below (−); each
    hidden value unit is pushed by its own error ($-\pi_l\varepsilon_l$) and by the error above through the
    feedback weights ($+\pi_{l+1}J_{l+1}^\top\varepsilon_{l+1}$). The input and output units are clamped (filled).
    """
    if n_layers < 2:
        raise ValueError(f"n_layers must be at least 2 (input, one hidden layer, output); got {n_layers}")
    from matplotlib.patches import Circle, FancyArrowPatch, Rectangle

    xs = np.arange(n_layers + 1) * 2.2
    y_val, y_err, r = 0.0, 1.6, 0.33

    def arrow(p, q, color, text=None, rad=0.0, offset=(0.0, 0.0)):
        ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=11, color=color, lw=1.3,
                                     connectionstyle=f"arc3,rad={rad}", shrinkA=14, shrinkB=14))
        if text:
            ax.text((p[0] + q[0]) / 2 + offset[0], (p[1] + q[1]) / 2 + offset[1], text, color=color, fontsize=8,
                    ha="center", va="center")

    for l, xl in enumerate(xs):
        clamped = l in (0, n_layers)
        name = "$x$" if l == 0 else ("$y$" if l == n_layers else f"$z_{l}$")
        ax.add_patch(Circle((xl, y_val), r, facecolor="0.75" if clamped else "white", edgecolor="k", lw=1.2))
        ax.text(xl, y_val, name, ha="center", va="center", fontsize=10)
        if l == 0:
            continue
        ax.add_patch(Rectangle((xl - r, y_err - r), 2 * r, 2 * r, facecolor="white", edgecolor=COLORS["L"], lw=1.2))
        ax.text(xl, y_err, rf"$\varepsilon_{l}$", ha="center", va="center", fontsize=10, color=COLORS["L"])
        err = (xl, y_err)
        arrow((xs[l - 1], y_val), err, "0.35", rf"$-\mu_{l}$", offset=(-0.25, 0.25))
        arrow((xl, y_val), err, "0.35", "+", rad=-0.35, offset=(-0.4, 0.0))
        if not clamped:
            arrow(err, (xl, y_val), COLORS["L"], rad=-0.35)
        if l >= 2:
            arrow(err, (xs[l - 1], y_val), COLORS["E"], r"$+J^\top\varepsilon$", rad=0.45, offset=(-0.3, 0.6))
    ax.set(xlim=(xs[0] - 0.8, xs[-1] + 0.8), ylim=(-0.6, 2.6), aspect="equal")
    ax.axis("off")
