"""Seeded label-noise injection with an exact flip count.

All functions flip exactly ``round(rate * n)`` labels (each flipped label is
different from the true one) and return the noisy label array; the error mask
is ``noisy != y``.
"""

from __future__ import annotations

import numpy as np

NOISE_KINDS = ("uniform", "pair", "instance")


def n_flips(n, rate):
    if not 0.0 <= rate < 1.0:
        raise ValueError("rate must be in [0, 1)")
    return int(round(rate * n))


def uniform_noise(y, rate, n_classes=None, random_state=0):
    """Flip exactly ``round(rate*n)`` random samples to a uniformly random
    *other* class."""
    y = np.asarray(y, dtype=np.int64)
    K = int(n_classes or (y.max() + 1))
    rng = np.random.default_rng(random_state)
    idx = rng.choice(len(y), size=n_flips(len(y), rate), replace=False)
    noisy = y.copy()
    # y + offset in [1, K-1] (mod K) is uniform over the other classes
    noisy[idx] = (y[idx] + rng.integers(1, K, size=len(idx))) % K
    return noisy


def pair_noise(y, rate, pairs, random_state=0):
    """Flip exactly ``round(rate*n)`` random samples to their class's fixed
    confusable partner ``pairs[class]``. Samples of classes without a partner
    (or whose partner is the class itself) are never chosen."""
    y = np.asarray(y, dtype=np.int64)
    K = int(max(y.max(), max(pairs)) + 1)
    partner = np.arange(K)
    for k, v in pairs.items():
        partner[int(k)] = int(v)
    eligible = np.flatnonzero(partner[y] != y)
    m = n_flips(len(y), rate)
    if m > len(eligible):
        raise ValueError("rate too high: only %d samples have a pair partner" % len(eligible))
    rng = np.random.default_rng(random_state)
    idx = rng.choice(eligible, size=m, replace=False)
    noisy = y.copy()
    noisy[idx] = partner[y[idx]]
    return noisy


def clean_model_probs(X, y, random_state=0, max_fit=20000, max_iter=200):
    """In-sample class probabilities of a (standardized) multinomial logistic
    regression fitted on the *clean* labels (fitted on at most ``max_fit``
    samples; probabilities predicted for all)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    import warnings

    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(random_state)
    fit_idx = np.arange(len(y))
    if len(y) > max_fit:
        fit_idx = np.sort(rng.choice(len(y), max_fit, replace=False))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X[fit_idx], y[fit_idx])
    K = int(y.max() + 1)
    P = np.zeros((len(y), K))
    P[:, model.classes_] = model.predict_proba(X)
    return P


def instance_noise(y, rate, X=None, probs=None, random_state=0, power=1.0):
    """Instance-dependent noise: sample ``i`` is flipped with probability
    proportional to ``(max_{j != y_i} p_ij) ** power`` (how close it is to
    another class under a model fitted on the clean labels; a tiny floor keeps
    every sample eligible) and flipped to that nearest other class
    ``argmax_{j != y_i} p_ij``. Exactly ``round(rate*n)`` samples are drawn
    without replacement with those weights.

    ``probs`` (n x K) may be given; otherwise it comes from
    :func:`clean_model_probs` on ``X``.
    """
    y = np.asarray(y, dtype=np.int64)
    if probs is None:
        if X is None:
            raise ValueError("instance noise needs X or probs")
        probs = clean_model_probs(X, y, random_state=random_state)
    P = np.array(probs, dtype=np.float64, copy=True)
    P[np.arange(len(y)), y] = -np.inf
    target = P.argmax(1)
    closeness = P[np.arange(len(y)), target]
    w = np.maximum(closeness, 0.0) ** power + 1e-9
    w /= w.sum()
    rng = np.random.default_rng(random_state)
    idx = rng.choice(len(y), size=n_flips(len(y), rate), replace=False, p=w)
    noisy = y.copy()
    noisy[idx] = target[idx]
    return noisy


def inject_noise(y, kind, rate, random_state=0, X=None, pairs=None, n_classes=None, probs=None):
    """Dispatch on ``kind`` in ``NOISE_KINDS``."""
    if kind == "uniform":
        return uniform_noise(y, rate, n_classes=n_classes, random_state=random_state)
    if kind == "pair":
        if pairs is None:
            raise ValueError("pair noise needs a pairs map")
        return pair_noise(y, rate, pairs, random_state=random_state)
    if kind == "instance":
        return instance_noise(y, rate, X=X, probs=probs, random_state=random_state)
    raise ValueError("unknown noise %r (choose from %s)" % (kind, ", ".join(NOISE_KINDS)))
