"""Figures: a house style, inference-trace panels, and kernel-free players for the HTML book.

A *player* turns a drawing function into a sequence of precomputed frames with matplotlib's
``FuncAnimation.to_jshtml``: the HTML book then shows a slider and play/step buttons that
work with no kernel, while Jupyter and Colab readers get the live widgets of
:mod:`pclib.widgets` for the same figure.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation
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


def player(
    draw: Callable[[Figure, Any], None],
    frames: Sequence[Any],
    *,
    figsize: tuple[float, float] = (8.0, 3.2),
    interval: int = 200,
    dpi: int = 72,
) -> Any:
    """A kernel-free animation: ``draw(fig, frame)`` for each frame, embedded as JavaScript + PNGs.

    Returns an ``IPython.display.HTML`` object with a slider and play/step buttons; it renders in the
    static HTML book without a kernel. Keep frames few and ``dpi`` low: every frame is stored.
    """
    from IPython.display import HTML

    fig = plt.figure(figsize=figsize, dpi=dpi)

    def update(i: int):
        fig.clear()
        draw(fig, frames[i])
        return []

    anim = FuncAnimation(fig, update, frames=len(frames), interval=interval)
    html = anim.to_jshtml(default_mode="once")
    plt.close(fig)
    return HTML(html)
