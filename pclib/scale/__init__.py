r"""The chapters' larger experiments, outside the notebooks, at four sizes.

Each experiment is one function ``run(size) -> dict`` that both its chapter and the command
``python -m pclib.scale`` call, so running the command at ``size="paper"`` is running the chapter's
``PAPER_SCALE`` branch, and the small sizes keep that code exercised:

- ``"smoke"``: tiny sizes, every code path, seconds on a CPU (run by the test suite);
- ``"chapter"``: what the chapter runs by default (within its time budget on 2 CPU cores);
- ``"medium"``: real MNIST (the offline 5k set) at the depths and widths where a conclusion could
  change, about an hour for every experiment together on a 2-core CPU;
- ``"paper"``: the papers' own settings (full MNIST through the cached download), for a GPU.

An experiment returns plain data (NumPy arrays, :class:`pclib.compare.Comparison` objects, numbers);
:func:`to_json` turns it into JSON for the command's report.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

SIZES = ("smoke", "chapter", "medium", "paper")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment: ``run(size)`` computes it, ``draw(result, fig)`` plots it."""

    name: str
    chapter: str
    title: str
    run: Callable[[str], dict]
    draw: Callable[[dict, Any], None]


REGISTRY: dict[str, Experiment] = {}


def register(name: str, *, chapter: str, title: str, draw: Callable[[dict, Any], None]):
    """Decorator: add ``run(size)`` to :data:`REGISTRY` under ``name``."""

    def wrap(run: Callable[[str], dict]) -> Callable[[str], dict]:
        REGISTRY[name] = Experiment(name, chapter, title, run, draw)
        return run

    return wrap


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: use one of {', '.join(map(repr, SIZES))}")
    return size


def to_json(value: Any) -> Any:
    """A result as JSON-ready data: arrays to lists, dataclasses to dicts, non-finite floats to strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        return to_json(np.asarray(value).tolist())
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else str(v)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


from . import deep  # noqa: E402,F401  (registers chapter 4's experiments)
from . import saddles  # noqa: E402,F401  (registers chapter 5's experiments)
