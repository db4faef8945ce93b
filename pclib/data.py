"""Datasets for the textbook, offline by default.

Every chapter of the book must build and run without a network connection, so
the datasets come in two kinds:

*Offline* datasets (``"gaussian"``, ``"digits"``, ``"mnist1d"``) are generated
or shipped locally and never touch the network:

- :func:`gaussian` -- a toy linear-Gaussian teacher/student regression task;
- :func:`digits` -- scikit-learn's 8x8 handwritten digits (ships with
  scikit-learn);
- :func:`mnist1d` -- MNIST-1D, generated locally by the ``mnist1d`` package.

*Downloadable* datasets (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``) are
fetched once with :func:`pooch.retrieve`, checked against known MD5 hashes and
cached in a data directory (the ``data_dir`` argument, else the ``PCLIB_DATA``
environment variable, else ``pooch.os_cache("pclib")``).  When a download is
impossible, :class:`DatasetUnavailableError` says so and names the offline
datasets to use instead.

All arrays are plain NumPy ``float32`` arrays with layout ``(N, features)``;
classification targets are one-hot ``(N, 10)`` and integer labels are
returned alongside.  The caller converts to JAX arrays.

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

import gzip
import os
import pickle
import random
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DOWNLOADABLE",
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
    "one_hot",
]

NUM_CLASSES = 10

#: Names of the datasets that never need the network.
OFFLINE: tuple[str, ...] = ("gaussian", "digits", "mnist1d")


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
        Extra information (e.g. the teacher weights of :func:`gaussian`).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels_train: np.ndarray | None = None
    labels_test: np.ndarray | None = None
    name: str = ""
    meta: dict[str, Any] | None = None


class Split(NamedTuple):
    """One split of a downloaded dataset (see :func:`load`).

    Attributes
    ----------
    x : np.ndarray
        Flattened images in ``[0, 1]``, ``float32``, shape ``(N, features)``.
    y : np.ndarray
        One-hot targets, ``float32``, shape ``(N, 10)``.
    labels : np.ndarray
        Integer labels, ``int32``, shape ``(N,)``.
    """

    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray


class RemoteFile(NamedTuple):
    """A file to download: its cache file name, URL and known hash.

    ``known_hash`` is in :mod:`pooch` format, e.g. ``"md5:<hex digest>"``.
    """

    fname: str
    url: str
    known_hash: str


class DatasetUnavailableError(RuntimeError):
    """A downloadable dataset could not be obtained (no network, no cache)."""


class DatasetCorruptError(DatasetUnavailableError, ValueError):
    """A cached or downloaded file does not match its known hash."""


# --------------------------------------------------------------------------
# Registry of downloadable datasets
# --------------------------------------------------------------------------

_MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def _idx_files(base_url: str, hashes: Mapping[str, str]) -> dict[str, RemoteFile]:
    names = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    return {
        role: RemoteFile(fname, base_url + fname, "md5:" + hashes[role])
        for role, fname in names.items()
    }


#: Downloadable datasets: name -> {role: RemoteFile}.  IDX datasets have the
#: roles ``train_images``, ``train_labels``, ``test_images``, ``test_labels``;
#: CIFAR-style datasets have the single role ``archive`` (a ``.tar.gz`` of
#: python pickle batches).  Tests substitute this dict (or pass ``registry=``).
_REGISTRY: dict[str, dict[str, RemoteFile]] = {
    "mnist": _idx_files(
        _MNIST_URL,
        {
            "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": _idx_files(
        _FASHION_URL,
        {
            "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": {
        "archive": RemoteFile(
            "cifar-10-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "md5:c58f30108f718f92721af3b95e74349a",
        )
    },
}

#: Names of the datasets fetched (once) from the network.
DOWNLOADABLE: tuple[str, ...] = tuple(_REGISTRY)


def available() -> tuple[str, ...]:
    """Names of all datasets known to :func:`get`, offline ones first."""
    return OFFLINE + tuple(_REGISTRY)


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"Unknown dataset {name!r}. Valid names are: offline "
        f"{', '.join(repr(n) for n in OFFLINE)}; downloadable "
        f"{', '.join(repr(n) for n in _REGISTRY)}."
    )


# --------------------------------------------------------------------------
# Small helpers
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
    """Shuffle and split a labelled classification set."""
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
# Offline datasets
# --------------------------------------------------------------------------


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
# Downloaded datasets
# --------------------------------------------------------------------------


def cache_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory of downloaded datasets.

    Parameters
    ----------
    data_dir : path, optional
        Explicit directory; else the ``PCLIB_DATA`` environment variable; else
        ``pooch.os_cache("pclib")``.

    Returns
    -------
    Path
        The directory (each dataset lives in a subdirectory named after it).
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("PCLIB_DATA")
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("pclib"))


def _hash_matches(path: Path, known_hash: str) -> bool:
    import pooch

    alg, _, digest = known_hash.rpartition(":")
    return pooch.file_hash(str(path), alg=alg or "sha256") == digest.lower()


def _fetch(name: str, remote: RemoteFile, directory: Path, *, progressbar: bool) -> Path:
    """Return the local path of ``remote``, downloading it if not cached."""
    path = directory / remote.fname
    if path.exists() and not _hash_matches(path, remote.known_hash):
        raise DatasetCorruptError(
            f"The cached file {str(path)!r} of dataset {name!r} is corrupt or "
            f"incomplete: its hash does not match {remote.known_hash}. Delete "
            f"it to re-download it."
        )
    import pooch
    import requests

    try:
        return Path(
            pooch.retrieve(
                remote.url,
                known_hash=remote.known_hash,
                fname=remote.fname,
                path=directory,
                progressbar=progressbar,
            )
        )
    except ValueError as err:  # pooch: downloaded file's hash does not match
        raise DatasetCorruptError(
            f"The download of {remote.url!r} for dataset {name!r} is corrupt: "
            f"its hash does not match {remote.known_hash} ({err}). Try again; if "
            f"a partial file remains at {str(path)!r}, delete it to re-download."
        ) from err
    except (OSError, EOFError, requests.RequestException) as err:
        raise DatasetUnavailableError(
            f"Could not download dataset {name!r} from {remote.url!r} ({err}). "
            f"It needs a network connection once; then it is cached in "
            f"{str(directory)!r} (set data_dir= or the PCLIB_DATA environment "
            f"variable to use another cache). To work offline, use one of the "
            f"offline datasets instead: "
            f"{', '.join(repr(n) for n in OFFLINE)} (e.g. pclib.data.get('digits'))."
        ) from err


_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a (gzipped) IDX file as used by MNIST into a NumPy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(
            f"{str(path)!r}: IDX header says shape {shape} but the file holds "
            f"{len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)


def _images(raw: np.ndarray) -> np.ndarray:
    x = raw.reshape(len(raw), -1).astype(np.float32)
    return x / np.float32(255.0)


def _load_idx(name: str, files: Mapping[str, RemoteFile], directory: Path,
              split: str, progressbar: bool) -> Split:
    images = _read_idx(_fetch(name, files[f"{split}_images"], directory,
                              progressbar=progressbar))
    labels = _read_idx(_fetch(name, files[f"{split}_labels"], directory,
                              progressbar=progressbar)).astype(np.int32)
    if len(images) != len(labels):
        raise ValueError(f"dataset {name!r}: {len(images)} images but "
                         f"{len(labels)} labels in the {split} split")
    return Split(_images(images), one_hot(labels), labels)


def _load_cifar(name: str, files: Mapping[str, RemoteFile], directory: Path,
                split: str, progressbar: bool) -> Split:
    archive = _fetch(name, files["archive"], directory, progressbar=progressbar)
    wanted = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    batches_: dict[str, dict[bytes, Any]] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile() and base in wanted:
                f = tar.extractfile(member)
                assert f is not None
                # The archive's hash was verified, so unpickling it is safe.
                batches_[base] = pickle.load(f, encoding="bytes")
    missing = [b for b in wanted if b not in batches_]
    if missing:
        raise DatasetCorruptError(
            f"The archive {str(archive)!r} of dataset {name!r} lacks {missing}; "
            f"delete it to re-download it."
        )
    x = np.concatenate([np.asarray(batches_[b][b"data"], dtype=np.uint8) for b in wanted])
    labels = np.concatenate([np.asarray(batches_[b][b"labels"]) for b in wanted])
    labels = labels.astype(np.int32)
    return Split(_images(x), one_hot(labels), labels)


def load(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    split: str = "train",
    registry: Mapping[str, Mapping[str, RemoteFile]] | None = None,
    progressbar: bool = False,
) -> Split:
    """Load one split of a downloadable dataset, downloading it once.

    Parameters
    ----------
    name : str
        ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
    data_dir : path, optional
        Cache directory (see :func:`cache_dir`); files go in ``data_dir/name/``.
    split : {"train", "test"}
        Which split to return.
    registry : mapping, optional
        Replaces the module's registry of files (for tests).
    progressbar : bool
        Show a download progress bar.

    Returns
    -------
    Split
        Images flattened to ``(N, 784)`` or ``(N, 3072)`` in ``[0, 1]``
        (``float32``), one-hot targets and ``int32`` labels.

    Raises
    ------
    ValueError
        For an unknown name or split.
    DatasetUnavailableError
        When the files are not cached and cannot be downloaded.
    DatasetCorruptError
        When a cached or downloaded file does not match its known hash.
    """
    reg = _REGISTRY if registry is None else registry
    if name not in reg:
        if name in OFFLINE:
            raise ValueError(f"{name!r} is an offline dataset; use get({name!r}) "
                             f"or pclib.data.{name}() instead of load().")
        raise _unknown(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    files = reg[name]
    directory = cache_dir(data_dir) / name
    loader = _load_cifar if "archive" in files else _load_idx
    return loader(name, files, directory, split, progressbar)


def get(name: str, **kwargs: Any) -> Dataset:
    """Get any dataset by name.

    Parameters
    ----------
    name : str
        An offline dataset (``"gaussian"``, ``"digits"``, ``"mnist1d"``) or a
        downloadable one (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``).
    **kwargs
        Passed on to :func:`gaussian`, :func:`digits`, :func:`mnist1d`, or to
        :func:`load` (``data_dir``, ``registry``, ``progressbar``).

    Returns
    -------
    Dataset
    """
    offline = {"gaussian": gaussian, "digits": digits, "mnist1d": mnist1d}
    if name in offline:
        return offline[name](**kwargs)
    registry = kwargs.get("registry")
    if name not in (_REGISTRY if registry is None else registry):
        raise _unknown(name)
    train = load(name, split="train", **kwargs)
    test = load(name, split="test", **kwargs)
    return Dataset(train.x, train.y, test.x, test.y, train.labels, test.labels, name)


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
