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

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

import numpy as np

SIZES = ("smoke", "chapter", "medium", "paper")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment: ``run(size)`` computes it, ``draw(result, fig)`` plots it and
    ``summarize(result)`` states its numbers as markdown (default :func:`summarize_comparisons`)."""

    name: str
    chapter: str
    title: str
    run: Callable[[str], dict]
    draw: Callable[[dict, Any], None]
    summarize: Callable[[dict], str] | None = None


REGISTRY: dict[str, Experiment] = {}


def register(name: str, *, chapter: str, title: str, draw: Callable[[dict, Any], None],
             summarize: Callable[[dict], str] | None = None):
    """Decorator: add ``run(size)`` to :data:`REGISTRY` under ``name``."""

    def wrap(run: Callable[[str], dict]) -> Callable[[str], dict]:
        REGISTRY[name] = Experiment(name, chapter, title, run, draw, summarize)
        return run

    return wrap


def check_size(size: str) -> str:
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}: use one of {', '.join(map(repr, SIZES))}")
    return size


def summarize_comparisons(result: dict) -> str:
    """Every :class:`pclib.compare.Comparison` in ``result`` (searched through nested dicts), each as its
    :meth:`~pclib.compare.Comparison.summary` under its key path."""
    from ..compare import Comparison

    parts = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Comparison):
            parts.append(f"**{path}**\n\n```text\n{value.summary()}\n```\n")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path} / {k}" if path else str(k))

    walk(result, "")
    return "\n".join(parts)


@contextlib.contextmanager
def float64(enabled: bool = True) -> Iterator[None]:
    """Run a block with JAX's 64-bit types on (or off), and restore the setting after it.

    It sets the global flag rather than using ``jax.enable_x64`` (thread-local), because
    :func:`pclib.compare.compare` trains its methods in threads."""
    import jax

    before = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def to_json(value: Any) -> Any:
    """A result as JSON-ready data: arrays to lists, dataclasses to dicts, non-finite floats to strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple keeps its field names
        return to_json(value._asdict())
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


def _array(value: list) -> Any:
    """A JSON list back as a NumPy array (``"inf"``/``"nan"`` strings as floats), or as a list if ragged."""
    def fix(v: Any) -> Any:
        if isinstance(v, list):
            return [fix(u) for u in v]
        return float(v) if isinstance(v, str) and v in ("inf", "-inf", "nan") else v
    try:
        return np.asarray(fix(value))
    except ValueError:
        return fix(value)


def from_json(value: Any) -> Any:
    """Inverse of :func:`to_json` as far as the reports need: numeric lists become arrays, and a dict with
    the fields of a :class:`pclib.compare.Comparison` becomes one."""
    from ..compare import Comparison

    if isinstance(value, dict):
        value = {k: from_json(v) for k, v in value.items()}
        names = {f.name for f in dataclasses.fields(Comparison)}
        if {"methods", "best_lr", "losses"} <= set(value) and set(value) <= names:
            value["methods"] = tuple(value["methods"])
            return Comparison(**value)
        return value
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return [from_json(v) for v in value]
        return _array(value) if not any(isinstance(v, str) and v not in ("inf", "-inf", "nan") for v in value) else value
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return value


from . import deep, depth, em, interpolation, saddles  # noqa: E402,F401  (registers the chapters' experiments)
