"""Unit tests of the probabilities / neighbors / importance / fusion building blocks."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits

from label_audit.scoring import (
    ambiguity_flags,
    assign_folds,
    auto_n_repeats,
    class_conditional_leverage,
    fuse_probabilities,
    knn_agreement,
    knn_class_probabilities,
    knn_search,
    logistic_sensitivity,
    out_of_fold_probabilities,
    outlier_flags,
    repeat_folds,
    select_for_review,
)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = ((X - X.mean(0)) / (X.std(0) + 1e-6)).astype(np.float32)
    return X[:600], y[:600]


def test_assign_folds_stratified():
    y = np.repeat(np.arange(4), [50, 20, 7, 3])
    f = assign_folds(y, 5, random_state=0)
    for c in range(4):
        counts = np.bincount(f[y == c], minlength=5)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(f, assign_folds(y, 5, random_state=0))


def test_oof_matches_sklearn_per_fold(digits):
    from sklearn.linear_model import LogisticRegression

    X, y = digits
    X, y = X[:300], y[:300]
    p, st = out_of_fold_probabilities(X, y, C=0.1, return_state=True, tol=1e-6, fold_max_iter=200)
    assert p.dtype == np.float32 and p.shape == (len(y), 10)
    Z = (X - st["preprocessor"].mean) / st["preprocessor"].scale
    folds = st["folds"]
    ref = np.empty_like(p)
    for f in range(5):
        tr, te = folds != f, folds == f
        m = LogisticRegression(C=0.1, max_iter=500, tol=1e-6).fit(Z[tr], y[tr])
        ref[te] = m.predict_proba(Z[te])
    # same objective: sklearn's C is per summed loss; ours per mean loss with 1/(C n) -> identical optimum
    assert np.abs(p - ref).max() < 0.02


def test_repeated_cross_fitting_averages_independent_fold_assignments(digits):
    X, y = digits
    F = repeat_folds(y, 5, 3, random_state=0)
    assert F.shape == (3, len(y))
    np.testing.assert_array_equal(F[0], assign_folds(y, 5, random_state=0))  # repeat 0 = one assignment
    for r in range(3):  # every repeat is stratified
        for c in range(10):
            counts = np.bincount(F[r][y == c], minlength=5)
            assert counts.max() - counts.min() <= 1
    assert not np.array_equal(F[0], F[1]) and not np.array_equal(F[1], F[2])
    G = repeat_folds(y, 5, 3, random_state=1)  # another random_state shares no repeat
    assert not any(np.array_equal(F[i], G[j]) for i in range(3) for j in range(3))
    p, st = out_of_fold_probabilities(X, y, C=0.1, n_repeats=3, return_state=True)
    assert st["n_repeats"] == 3 and len(st["more_repeats"]) == 2
    np.testing.assert_array_equal(st["folds"], F[0])
    np.testing.assert_array_equal(st["more_repeats"][1]["folds"], F[2])
    # the mean of the repeats' out-of-fold probabilities (shared warm start and preprocessing)
    singles = [out_of_fold_probabilities(X, y, C=0.1, folds=F[r]) for r in range(3)]
    np.testing.assert_allclose(p, np.mean(singles, axis=0), atol=1e-5)
    assert np.abs(singles[0] - singles[1]).max() > 0.05  # the repeats do differ
    np.testing.assert_allclose(out_of_fold_probabilities(X, y, C=0.1, folds=F), p, atol=1e-6)


def test_n_repeats_auto_and_bad_values(digits):
    X, y = digits
    assert auto_n_repeats(10_000, 256, 80) == 5 and auto_n_repeats(20_000, 256, 80) == 4
    assert auto_n_repeats(100_000, 256, 80) == 1 and auto_n_repeats(850_000, 256, 80) == 1
    for bad in (0, -2, 1.5, "five", True):
        with pytest.raises(ValueError, match="n_repeats"):
            out_of_fold_probabilities(X, y, n_repeats=bad)
    with pytest.raises(ValueError, match="n_repeats=3"):
        out_of_fold_probabilities(X, y, folds=assign_folds(y, 5), n_repeats=3)
    with pytest.raises(ValueError, match="folds must have shape"):
        out_of_fold_probabilities(X, y, folds=repeat_folds(y, 5, 2)[:, :-1])


def test_warm_start_close_to_cold(digits):
    X, y = digits
    a = out_of_fold_probabilities(X, y, C=0.1)
    b = out_of_fold_probabilities(X, y, C=0.1, warm_start=False, max_iter=300)
    assert np.abs(a - b).max() < 0.05


def test_pca_path_and_memmap(tmp_path, digits):
    X, y = digits
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.load(tmp_path / "f.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        p1 = out_of_fold_probabilities(ro, y)
    p2 = out_of_fold_probabilities(X, y)
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    p3 = out_of_fold_probabilities(X, y, max_dim=16)  # PCA path
    assert (p3.argmax(1) == y).mean() > 0.8


def test_exact_knn_matches_bruteforce(digits):
    X, _ = digits
    idx, dist = knn_search(X, 5, method="exact", block_size=64)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    ref = np.argsort(-S, axis=1)[:, :5]
    np.testing.assert_allclose(dist, 1 - np.take_along_axis(S, ref, 1), atol=1e-5)
    assert (idx == ref).mean() > 0.99
    assert not (idx == np.arange(len(X))[:, None]).any()


def test_duplicates_never_self(digits):
    X, _ = digits
    Xd = np.vstack([X[:50], X[:50]])
    idx, dist = knn_search(Xd, 3, method="exact")
    assert not (idx == np.arange(100)[:, None]).any()
    assert (idx[:, 0] == (np.arange(100) + 50) % 100).all()


def test_approx_knn_ivf(digits):
    X, _ = digits
    idx, dist = knn_search(X, 5, method="approx", n_probe=4, random_state=0)
    ref, _ = knn_search(X, 5, method="exact")
    assert idx.shape == (len(X), 5) and idx.dtype == np.int64 and dist.dtype == np.float32
    assert not (idx == np.arange(len(X))[:, None]).any()
    assert (np.diff(dist, axis=1) >= -1e-6).all()
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx, ref)])
    assert recall > 0.8
    idx2, _ = knn_search(X, 5, method="approx", n_probe=4, random_state=0)
    np.testing.assert_array_equal(idx, idx2)  # deterministic for a fixed random_state
    full, _ = knn_search(X, 5, method="approx", n_probe=10**6)  # probing every list = exact
    assert (full == ref).mean() > 0.99


@pytest.mark.skipif(
    not __import__("os").environ.get("LABEL_AUDIT_SLOW_TESTS"),
    reason="pynndescent JIT compilation takes minutes on 2 cores; set LABEL_AUDIT_SLOW_TESTS=1",
)
def test_approx_knn_pynndescent(digits):
    X, _ = digits
    idx, dist = knn_search(X, 5, method="pynndescent")
    ref, _ = knn_search(X, 5, method="exact")
    assert not (idx == np.arange(len(X))[:, None]).any()
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(idx, ref)])
    assert recall > 0.9


def test_subsample_warm_start_and_preconditioning(digits):
    X, y = digits
    cold = out_of_fold_probabilities(X, y, C=0.1, warm_start=False, max_iter=300, precondition=False)
    sub = out_of_fold_probabilities(X, y, C=0.1, full_fit_samples=200)  # default 20 fold iterations
    gap = np.abs(sub - cold).max(axis=1)
    # the bulk is close; L-BFGS paths are not monotone per row (measured: 12 iterations max 0.053,
    # 20 iterations max 0.102 with 99% of rows within 0.018, 30 iterations max 0.007)
    assert np.quantile(gap, 0.99) < 0.03 and gap.max() < 0.15
    sub = out_of_fold_probabilities(X, y, C=0.1, full_fit_samples=200, fold_max_iter=30)
    assert np.abs(sub - cold).max() < 0.02
    # preconditioning changes the path, not the optimum
    pre = out_of_fold_probabilities(X, y, C=0.1, warm_start=False, max_iter=300, precondition=True)
    assert np.abs(pre - cold).max() < 0.02


def test_knn_probs_and_agreement():
    nbr = np.array([[1, 2], [0, 2], [0, 1]])
    dist = np.zeros((3, 2), np.float32)
    labels = np.array([0, 0, 1])
    agr = knn_agreement(nbr, labels)
    np.testing.assert_allclose(agr, [0.5, 0.5, 0.0])
    p = knn_class_probabilities(nbr, dist, labels, 2, prior_strength=0.0)
    np.testing.assert_allclose(p, [[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]], atol=1e-3)
    with pytest.raises(ValueError, match="need 1 <= k < N"):
        knn_search(np.eye(3, dtype=np.float32), 3)


def test_leverage_matches_svd():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    y = np.repeat([0, 1], 100)
    h = class_conditional_leverage(X, y, energy=1.0)
    for c in (0, 1):
        Xc = X[y == c] - X[y == c].mean(0)
        U = np.linalg.svd(Xc, full_matrices=False)[0]
        ref = (U**2).sum(1) * 100 / 5
        np.testing.assert_allclose(h[y == c], ref, rtol=1e-3)
    X[3] += 20  # an out-of-distribution sample gets the top leverage of its class
    h = class_conditional_leverage(X, y)
    assert np.argmax(h[y == 0]) == 3


def test_sensitivity_and_review_query():
    h = np.array([1.0, 1.0, 2.0, 0.0])
    loss = np.array([0.0, 1.0, 0.0, 3.0])
    s = logistic_sensitivity(h, loss)
    np.testing.assert_allclose(s, [0.25, 0.5, 0.5, 0.75])
    assert abs(s.sum() - 2) < 1e-6
    scores = np.array([0.9, 0.1, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([0, 0, 1, 1, 2, 2])
    sel = select_for_review(scores, labels, budgets={0: 1, "b": "all"}, classes=["a", "b", "c"])
    np.testing.assert_array_equal(sel, [0, 2, 3])
    excl = np.array([True, False, False, False, False, False])
    np.testing.assert_array_equal(select_for_review(scores, labels, budgets={0: 1}, exclude=excl), [1])
    np.testing.assert_array_equal(select_for_review(scores, n=2), [0, 2])
    with pytest.raises(ValueError, match="Budget"):
        select_for_review(scores, labels, budgets={0: -1})


def test_fusion_helpers():
    p = np.array([[0.5, 0.45, 0.05], [0.9, 0.05, 0.05]], np.float32)
    k = np.array([[0.4, 0.5, 0.1], [0.0, 1.0, 0.0]], np.float32)
    q = fuse_probabilities(p, k)
    np.testing.assert_allclose(q.sum(1), 1, atol=1e-6)
    amb = ambiguity_flags(np.array([0, 2]), q)
    assert amb.tolist() == [True, False]
    s = np.r_[np.zeros(99), 10.0]
    assert outlier_flags(s + np.random.default_rng(0).normal(0, 0.01, 100)).tolist()[-1] is True


def test_choose_knn_weight_prefers_the_better_predictor():
    from label_audit.scoring.fusion import choose_knn_weight

    rng = np.random.RandomState(0)
    n, K = 2000, 5
    y = rng.randint(K, size=n)
    logits = rng.normal(0, 1.0, size=(n, K))
    logits[np.arange(n), y] += 2.0
    good = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)  # ~85% accurate, soft
    noise = rng.dirichlet(np.ones(K), size=n)  # uninformative
    grid = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)

    def acc(pm, pk, w):
        return np.mean(((1 - w) * pm + w * pk).argmax(1) == y)

    w_model = choose_knn_weight(y, good, noise)
    w_knn = choose_knn_weight(y, noise, good)
    assert w_model < 0.5 < w_knn
    # the chosen weight is within about one binomial standard error of the best accuracy
    accs = [acc(good, noise, w) for w in grid]
    best = max(accs)
    se = np.sqrt(best * (1 - best) / n)
    assert acc(good, noise, w_model) >= best - 1.5 * se
    lo = max(w for w, a in zip(grid, accs) if a >= best - 0.5 * se and w <= 0.5)  # fully within
    assert lo <= w_model <= lo + 0.1
    # equivalent predictors: the prior (the default 0.5) is kept
    assert choose_knn_weight(y, good, good) == 0.5
    assert choose_knn_weight(y, good, good, prior=0.2) == 0.2
    # n_se=0: the plain argmax of the held-out accuracy
    plain = choose_knn_weight(y, good, noise, n_se=0)
    assert acc(good, noise, plain) == best


def test_choose_knn_weight_is_continuous_at_near_ties():
    """Away from near-ties the weight is the plain rule's grid weight; as one weight's accuracy
    crosses the tolerance the choice moves there gradually instead of jumping a grid step."""
    from label_audit.scoring.fusion import weight_from_accuracies

    grid, n = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), 10_000
    se = np.sqrt(0.9 * 0.1 / n)  # 0.003
    chosen = []
    for acc_03 in np.linspace(0.9 - 3 * se, 0.9, 61):  # weight 0.3's accuracy sweeps the threshold
        accs = [0.9, 0.9, 0.9, acc_03, 0.85, 0.85]
        chosen.append(weight_from_accuracies(grid, accs, n))
    chosen = np.array(chosen)
    assert chosen[0] == 0.2 and chosen[-1] == 0.3  # far from the threshold: the plain rule
    assert np.all(np.diff(chosen) >= -1e-12)  # monotone in the accuracy
    assert np.max(np.diff(chosen)) < 0.02  # no jump of a whole grid step (0.1)
    assert np.any((chosen > 0.2 + 1e-9) & (chosen < 0.3 - 1e-9))  # passes through in between
    # the prior is reached when every weight on the way is within tolerance; n_se=0 = argmax
    assert weight_from_accuracies(grid, [0.9] * 6, n) == 0.5
    assert weight_from_accuracies(grid, [0.9, 0.91, 0.9, 0.9, 0.9, 0.9], n, n_se=0) == 0.1


def test_knn_weight_auto_records_the_weight_used():
    from sklearn.datasets import load_digits

    from label_audit.scoring import score_label_issues

    X, y = load_digits(return_X_y=True)
    X, y = X[:400].astype(np.float32), y[:400]
    r = score_label_issues(y, features=X, knn_weight="auto", n_folds=3)
    assert 0.0 <= r.params["knn_weight_used"] <= 0.8
    r5 = score_label_issues(y, features=X, n_folds=3)
    assert r5.params["knn_weight_used"] == 0.5


def test_noise_concentration_and_the_weights_it_picks():
    from label_audit.scoring.fusion import choose_flag_margin, choose_margin_weight, noise_concentration

    K = 10
    pair = np.eye(K, dtype=int) * 100
    for i in range(K):
        pair[i, (i + 1) % K] = 7  # every given class receives its errors from one true class
    assert noise_concentration(pair) == 1.0
    spread = np.full((K, K), 3) + np.eye(K, dtype=int) * 100  # errors spread evenly
    assert noise_concentration(spread) == pytest.approx(1 / (K - 1))
    assert noise_concentration(np.eye(K, dtype=int) * 50) == 1.0  # no estimated errors
    # margin weight: self-confidence-leaning for spread noise, the margin for concentrated noise
    assert choose_margin_weight(0.2) == 0.25 and choose_margin_weight(0.9) == 1.0
    assert 0.25 < choose_margin_weight(0.45) < 1.0
    # flag margin: 0.3 for uniform-like noise, 0.35 for pair-like noise, 0 for instance-like
    # noise (0.5-0.6) and rising in between
    assert choose_flag_margin(0.2) == 0.3 and choose_flag_margin(1.0) == 0.35
    assert choose_flag_margin(0.55) == 0.0
    assert 0.0 < choose_flag_margin(0.65) < choose_flag_margin(0.75) < 0.3


def test_label_issue_scores_margin_weight_endpoints():
    from label_audit.scoring.fusion import label_issue_scores, margins

    q = np.array([[0.6, 0.3, 0.1], [0.2, 0.4, 0.4], [0.1, 0.1, 0.8]], np.float32)
    y = np.array([0, 0, 0])
    own = q[np.arange(3), y]
    mo = np.array([0.3, 0.4, 0.8])
    np.testing.assert_allclose(label_issue_scores(y, q), (mo - own + 1) / 2, atol=1e-6)
    np.testing.assert_allclose(label_issue_scores(y, q, margin_weight=0.0), 1 - own, atol=1e-6)
    np.testing.assert_allclose(margins(y, q), mo - own, atol=1e-6)
    s = label_issue_scores(y, q, margin_weight=0.25)
    assert np.all((s >= 0) & (s <= 1)) and s.argsort().tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="margin_weight"):
        label_issue_scores(y, q, margin_weight=1.5)
