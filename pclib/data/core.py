"""Containers, errors, one-hot labels, train/test splits and minibatches.

Everything here is shared by the offline datasets (:mod:`pclib.data.offline`)
and the downloaded ones (:mod:`pclib.data.download`); nothing here reads a file
or touches the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "NUM_CLASSES",
    "Dataset",
    "DatasetCorruptError",
    "DatasetUnavailableError",
    "batches",
    "one_hot",
]

#: Number of classes of every classification dataset of the book.
NUM_CLASSES = 10


# --------------------------------------------------------------------------
# Containers and errors
# --------------------------------------------------------------------------


class Dataset(NamedTuple):
    """A train/test dataset of NumPy ``float32`` arrays.

    Attributes
    ----------
    x_train, x_test : np.ndarray
        Inputs, shape ``(N, features)``, ``float32``.
    y_train, y_test : np.ndarray
        Targets, shape ``(N, outputs)``, ``float32`` (one-hot for
        classification).
    labels_train, labels_test : np.ndarray or None
        Integer class labels, shape ``(N,)``, ``int32``; ``None`` for
        regression.
    name : str
        The dataset's name.
    meta : dict or None
        Extra information (e.g. the teacher weights of
        :func:`~pclib.data.gaussian`).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels_train: np.ndarray | None = None
    labels_test: np.ndarray | None = None
    name: str = ""
    meta: dict[str, Any] | None = None


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be obtained.

    Raised when a downloadable dataset is neither cached nor downloadable (no
    network), or when the package that ships an offline dataset is not
    installed.  The message names the fix.
    """


class DatasetCorruptError(DatasetUnavailableError, ValueError):
    """A data file is corrupt.

    Raised when a cached or downloaded file does not match its known hash, or
    when a file shipped with a package does not have the expected layout.
    """


# --------------------------------------------------------------------------
# Labels and splits
# --------------------------------------------------------------------------


def one_hot(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """One-hot encode integer labels.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels, shape ``(N,)``, values in ``[0, num_classes)``.
    num_classes : int
        Number of classes.

    Returns
    -------
    np.ndarray
        ``float32`` array of shape ``(N, num_classes)`` with rows summing to 1.
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range "
                         f"[{labels.min()}, {labels.max()}]")
    return np.eye(num_classes, dtype=np.float32)[labels.astype(np.int64)]


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")


def _split(
    x: np.ndarray, labels: np.ndarray, *, seed: int, test_fraction: float, name: str
) -> Dataset:
    """Shuffle and split a labelled classification set.

    Parameters
    ----------
    x : np.ndarray
        Inputs, shape ``(N, features)``.
    labels : np.ndarray
        Integer labels, shape ``(N,)``.
    seed : int
        Seed of the permutation; the same seed gives the same split.
    test_fraction : float
        Fraction of the samples put in the test set, in ``(0, 1)``.
    name : str
        The dataset's name.

    Returns
    -------
    Dataset
        ``float32`` inputs, one-hot targets and ``int32`` labels.
    """
    _check_fraction(test_fraction)
    n = len(x)
    n_test = int(round(n * test_fraction))
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction={test_fraction} leaves an empty split of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    test, train = perm[:n_test], perm[n_test:]
    labels = labels.astype(np.int32)
    return Dataset(
        x_train=np.ascontiguousarray(x[train], dtype=np.float32),
        y_train=one_hot(labels[train]),
        x_test=np.ascontiguousarray(x[test], dtype=np.float32),
        y_test=one_hot(labels[test]),
        labels_train=labels[train],
        labels_test=labels[test],
        name=name,
    )


# --------------------------------------------------------------------------
# Minibatches
# --------------------------------------------------------------------------


def batches(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield minibatches ``(x_batch, y_batch)`` of NumPy arrays.

    Parameters
    ----------
    x, y : np.ndarray
        Arrays with the same leading dimension ``N``.
    batch_size : int
        Number of samples per batch.
    seed : int
        Seed of the shuffle (use e.g. the epoch number for a new order each
        epoch).
    shuffle : bool
        Shuffle the samples before batching.
    drop_last : bool
        Drop the final incomplete batch (keeps shapes static under ``jit``).

    Yields
    ------
    tuple of np.ndarray
        ``(x[idx], y[idx])`` for consecutive index blocks.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x and y have different lengths: {n} and {len(y)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]
