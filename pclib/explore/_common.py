"""Helpers shared by the chapter figures of :mod:`pclib.explore`."""

from __future__ import annotations

import numpy as np

from . import COLORS, line

STEP = {"x": {"title": {"text": "inference step"}}}


def _ax(x: str, y: str, **kw) -> dict:
    return {"x": {"title": {"text": x}, **kw.get("xk", {})}, "y": {"title": {"text": y}, **kw.get("yk", {})}}


def _energy_lines(E: np.ndarray, axis: int = 1) -> list[dict]:
    t = np.arange(E.shape[0])
    return [line(t, E.sum(1), "ℱ (energy)", color=COLORS["F"], axis=axis),
            line(t, E[:, -1], "ℒ(z) (output term)", color=COLORS["L"], axis=axis),
            line(t, E[:, :-1].sum(1), "Ẽ (hidden terms)", color=COLORS["E"], axis=axis)]


def _floor(v: np.ndarray, tiny: float = 1e-10) -> np.ndarray:
    """Values below ``tiny`` (float noise on a log axis) become NaN, i.e. not drawn."""
    v = np.asarray(v, dtype=float)
    return np.where(v > tiny, v, np.nan)


def _cap(v: np.ndarray, hi: float) -> np.ndarray:
    """Values above ``hi`` (a diverging run, whose digits depend on the machine) become NaN, i.e. not drawn."""
    v = np.asarray(v, dtype=float)
    return np.where(v <= hi, v, np.nan)


def _num(v: float) -> str:
    """A number for a title, with float noise around zero shown as 0."""
    return f"{np.round(v, 9) + 0.0:.3g}"
