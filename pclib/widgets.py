"""Live controls for Jupyter and Colab (ipywidgets).

In the static HTML book these widgets would be dead, so chapters tag a live-widget cell
``remove-output`` and show the same figure as a kernel-free :func:`pclib.plotting.player`.
"""

from __future__ import annotations

from typing import Any, Callable

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def live(draw: Callable[..., None], *, figsize: tuple[float, float] = (8.0, 3.2), **controls: Any) -> Any:
    """An interactive figure: ``draw(fig, **values)`` is re-run whenever a control changes.

    ``controls`` maps each keyword of ``draw`` to an ipywidgets control (or anything
    ``ipywidgets.interactive`` accepts, e.g. a tuple ``(lo, hi, step)`` or a list of options).
    Sliders update on release, so a slow ``draw`` does not queue up redraws.
    """
    import ipywidgets as widgets

    for c in controls.values():
        if hasattr(c, "continuous_update"):
            c.continuous_update = False

    def update(**values: Any) -> None:
        fig: Figure = plt.figure(figsize=figsize)
        draw(fig, **values)
        plt.show()

    return widgets.interactive(update, **controls)
