"""Fast tests of the benchmark datasets and the synthetic generator."""

import gzip
import struct

import numpy as np
import pytest

from label_audit.benchmarks import datasets as ds


def test_synthetic_shapes_nonneg_and_deterministic():
    X, y, meta = ds.make_synthetic_features(
        n=3000, d=64, n_classes=20, n_superclasses=5, random_state=3
    )
    assert X.shape == (3000, 64) and X.dtype == np.float32
    assert y.shape == (3000,) and y.min() >= 0 and y.max() < 20
    assert (X >= 0).all(), "pooled-ReLU-like features must be non-negative"
    assert (X == 0).mean() > 0.2, "features should be sparse-ish"
    X2, y2, _ = ds.make_synthetic_features(
        n=3000, d=64, n_classes=20, n_superclasses=5, random_state=3
    )
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    X3, _, _ = ds.make_synthetic_features(
        n=3000, d=64, n_classes=20, n_superclasses=5, random_state=4
    )
    assert not np.array_equal(X, X3)


def test_synthetic_chunked_generation_matches_in_memory():
    spec = ds.SyntheticSpec(2500, d=32, n_classes=10, n_superclasses=2, random_state=1)
    chunks = np.concatenate([c for _, _, c in spec.iter_chunks(chunk_size=700)])
    X, y, _ = ds.make_synthetic_features(
        n=2500, d=32, n_classes=10, n_superclasses=2, random_state=1
    )
    np.testing.assert_array_equal(chunks, X)


def test_synthetic_zipf_sizes_and_special_fractions():
    X, y, meta = ds.make_synthetic_features(
        n=20000, d=16, n_classes=40, n_superclasses=8, zipf=1.0,
        ambiguous_frac=0.05, outlier_frac=0.02, random_state=0,
    )
    sizes = np.sort(np.bincount(y, minlength=40))[::-1]
    # Zipf(1): the largest class is ~ 40x the smallest in expectation
    assert sizes[0] > 10 * max(sizes[-1], 1)
    assert abs(meta["is_ambiguous"].mean() - 0.05) < 0.005
    assert abs(meta["is_outlier"].mean() - 0.02) < 0.005
    assert not (meta["is_ambiguous"] & meta["is_outlier"]).any()


def test_synthetic_superclasses_are_confusable_and_pairs_stay_inside():
    X, y, meta = ds.make_synthetic_features(
        n=4000, d=128, n_classes=24, n_superclasses=6, random_state=0
    )
    sup = meta["superclass_of_class"]
    assert np.bincount(sup).min() == 4  # balanced 24 / 6
    means = meta["spec"].class_means
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
    same = sup[:, None] == sup[None]
    off = ~np.eye(24, dtype=bool)
    assert dist[same & off].mean() < 0.6 * dist[~same].mean()
    pairs = meta["pairs"]
    assert set(pairs) == set(range(24))
    for k, v in pairs.items():
        assert v != k and sup[v] == sup[k]


def test_synthetic_outliers_are_far():
    X, y, meta = ds.make_synthetic_features(
        n=5000, d=64, n_classes=10, n_superclasses=2, outlier_frac=0.02, random_state=0
    )
    centroids = np.stack([X[(y == k) & ~meta["is_outlier"]].mean(0) for k in range(10)])
    d_min = np.linalg.norm(X[:, None] - centroids[None], axis=-1).min(1)
    assert np.median(d_min[meta["is_outlier"]]) > 1.5 * np.median(d_min[~meta["is_outlier"]])


def test_digits_loader():
    X, y, meta = ds.load_digits_dataset()
    assert X.shape == (1797, 64) and y.shape == (1797,)
    assert meta["n_classes"] == 10
    np.testing.assert_allclose(X.mean(0), 0, atol=1e-5)
    # the pairing is an involution without fixed points
    p = meta["pairs"]
    assert all(p[p[k]] == k and p[k] != k for k in range(10))


def _write_idx(path, arr):
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_reader_and_subsample(tmp_path):
    rng = np.random.default_rng(0)
    for split, m in (("train", 60), ("test", 20)):
        img_f, lab_f = ds.FASHION_MNIST_FILES[split]
        _write_idx(tmp_path / img_f, rng.integers(0, 256, size=(m, 28, 28)))
        _write_idx(tmp_path / lab_f, np.arange(m) % 10)
    images, labels = ds.load_fashion_mnist_raw(str(tmp_path))
    assert images.shape == (80, 28, 28) and labels.shape == (80,)
    X, y, meta = ds.load_fashion_mnist_dataset(n=50, pca=8, root=str(tmp_path))
    assert X.shape == (50, 8) and meta["pairs"][0] == 6


def test_fashion_mnist_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        ds.load_fashion_mnist_raw(str(tmp_path))
