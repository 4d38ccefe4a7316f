"""Fast tests of the seeded label-noise injection."""

import numpy as np
import pytest

from label_audit.benchmarks import noise


@pytest.fixture
def labels():
    return np.random.default_rng(0).integers(0, 10, size=2000)


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.1, 0.333])
def test_uniform_exact_count(labels, rate):
    noisy = noise.uniform_noise(labels, rate, n_classes=10, random_state=1)
    assert (noisy != labels).sum() == round(rate * len(labels))
    assert noisy.min() >= 0 and noisy.max() < 10


def test_uniform_targets_cover_other_classes(labels):
    noisy = noise.uniform_noise(labels, 0.5, n_classes=10, random_state=1)
    flipped = noisy != labels
    offsets = (noisy[flipped] - labels[flipped]) % 10
    counts = np.bincount(offsets, minlength=10)
    assert counts[0] == 0 and (counts[1:] > 50).all()


def test_seeded(labels):
    a = noise.uniform_noise(labels, 0.1, random_state=5)
    b = noise.uniform_noise(labels, 0.1, random_state=5)
    c = noise.uniform_noise(labels, 0.1, random_state=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pair_flips_to_partner(labels):
    pairs = {k: (k + 1) % 10 for k in range(10)}
    noisy = noise.pair_noise(labels, 0.1, pairs, random_state=0)
    flipped = noisy != labels
    assert flipped.sum() == 200
    assert ((labels[flipped] + 1) % 10 == noisy[flipped]).all()


def test_pair_skips_classes_without_partner(labels):
    pairs = {0: 1, 1: 0}
    noisy = noise.pair_noise(labels, 0.05, pairs, random_state=0)
    flipped = noisy != labels
    assert flipped.sum() == 100 and np.isin(labels[flipped], [0, 1]).all()
    with pytest.raises(ValueError):
        noise.pair_noise(labels, 0.5, pairs, random_state=0)


def test_instance_noise_prefers_close_samples_and_nearest_class():
    rng = np.random.default_rng(0)
    n, K = 3000, 5
    y = rng.integers(0, K, n)
    P = np.full((n, K), 0.01)
    close = rng.random(n) < 0.2  # 20% of samples sit near class (y+2)%K
    P[np.arange(n), y] = np.where(close, 0.55, 0.96)
    P[np.arange(n), (y + 2) % K] = np.where(close, 0.42, 0.02)
    P /= P.sum(1, keepdims=True)
    noisy = noise.instance_noise(y, 0.1, probs=P, random_state=0)
    flipped = noisy != y
    assert flipped.sum() == 300
    # flips go to the nearest other class and concentrate on the close samples
    assert (noisy[flipped] == (y[flipped] + 2) % K).all()
    assert close[flipped].mean() > 0.8


def test_instance_noise_from_features():
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=600, centers=4, n_features=5, random_state=0)
    noisy = noise.inject_noise(y, "instance", 0.1, random_state=0, X=X)
    assert (noisy != y).sum() == 60


def test_inject_noise_dispatch_errors(labels):
    with pytest.raises(ValueError):
        noise.inject_noise(labels, "bogus", 0.1)
    with pytest.raises(ValueError):
        noise.inject_noise(labels, "pair", 0.1)
