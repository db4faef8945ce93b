r"""Robust, printable checks for the chapters.

A chapter prints each claim as a line such as
``max rel. gap (infer vs closed form) = 3.1e-09 < 1e-06: True``. The measured value may differ
in its last digits between machines (CPU vs GPU, BLAS builds), so the book's nbval sanitize
file (``nbval_sanitize.cfg``) masks the number in ``= <value> <`` and keeps the verdict, which
is what the regression test compares. The functions print and return nothing, so a check as the
last line of a cell displays no extra value.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _bound(bound: float) -> str:
    """The bound as written in the check: one significant digit (``1e-06``) where that is exact, else
    enough digits to show it (``1.5``, ``0.25``)."""
    short = f"{bound:.0e}"
    return short if float(short) == float(bound) else f"{bound:.6g}"


def check_below(label: str, value: Any, bound: float) -> None:
    """Print ``"{label} = {value:.1e} < {bound}: {ok}"`` for the maximum of ``value``."""
    v = float(np.max(np.asarray(value, dtype=np.float64)))
    ok = bool(v < bound)
    print(f"{label} = {v:.1e} < {_bound(bound)}: {ok}")


def check_above(label: str, value: Any, bound: float) -> None:
    """Print ``"{label} = {value:.1e} > {bound}: {ok}"`` for the minimum of ``value``."""
    v = float(np.min(np.asarray(value, dtype=np.float64)))
    ok = bool(v > bound)
    print(f"{label} = {v:.1e} > {_bound(bound)}: {ok}")


def check_all(label: str, flags: Any) -> None:
    """Print ``"{label}: {k}/{n} -> {all}"`` for a sequence of booleans."""
    f = np.asarray(flags, dtype=bool).ravel()
    ok = bool(f.all())
    print(f"{label}: {int(f.sum())}/{f.size} -> {ok}")
