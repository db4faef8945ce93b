"""Downloaded datasets: MNIST, Fashion-MNIST and CIFAR-10.

Each file is fetched once with :func:`pooch.retrieve`, checked against its
known MD5 hash and cached in a data directory (the ``data_dir`` argument, else
the ``PCLIB_DATA`` environment variable, else ``pooch.os_cache("pclib")``).
When a download is impossible, :class:`~pclib.data.DatasetUnavailableError`
says so and names the offline datasets to use instead; a file whose hash does
not match raises :class:`~pclib.data.DatasetCorruptError`.
"""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .core import DatasetCorruptError, DatasetUnavailableError, one_hot
from .offline import OFFLINE

__all__ = ["DOWNLOADABLE", "RemoteFile", "Split", "cache_dir", "load"]


# --------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------


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
#: python pickle batches).  :func:`load` and :func:`pclib.data.get` both read
#: this one dict; tests replace its entries in place (or pass ``registry=``).
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


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"Unknown dataset {name!r}. Valid names are: offline "
        f"{', '.join(repr(n) for n in OFFLINE)}; downloadable "
        f"{', '.join(repr(n) for n in _REGISTRY)}."
    )


# --------------------------------------------------------------------------
# Download, cache and read
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
