"""update_label_issues matches a full recompute (same folds) within the documented tolerance."""

import time

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

from label_audit.scoring import score_label_issues, update_label_issues


@pytest.fixture(scope="module")
def setup():
    X, y = load_digits(return_X_y=True)
    X = ((X - X.mean(0)) / (X.std(0) + 1e-6)).astype(np.float32)
    rng = np.random.default_rng(0)
    err = rng.random(len(y)) < 0.1
    yn = y.copy()
    yn[err] = (y[err] + 1) % 10
    r = score_label_issues(yn, X)
    return X, y, yn, err, r, rng


def _compare(a, b):
    d = np.abs(a.label_issue_score - b.label_issue_score)
    rho = spearmanr(a.label_issue_score, b.label_issue_score)[0]
    agree = (a.is_label_issue == b.is_label_issue).mean()
    return d.max(), rho, agree


def test_relabel_and_remove_matches_full(setup):
    X, y, yn, err, r, rng = setup
    n = len(y)
    ch = rng.choice(np.flatnonzero(err), n // 100, replace=False)  # reviewer fixes 1%
    y2 = yn.copy()
    y2[ch] = y[ch]
    rem = rng.choice(np.setdiff1d(np.arange(n), ch), n // 100, replace=False)  # and removes 1%
    t0 = time.perf_counter()
    ri = update_label_issues(r, X, y2, changed=ch, removed=rem)
    t_inc = time.perf_counter() - t0
    keep = np.setdiff1d(np.arange(n), rem)
    t0 = time.perf_counter()
    rf = score_label_issues(y2[keep], X[keep], folds=r.folds[keep])
    t_full = time.perf_counter() - t0
    np.testing.assert_array_equal(ri.index, keep)
    np.testing.assert_array_equal(ri.labels, y2[keep])
    dmax, rho, agree = _compare(ri, rf)
    assert dmax <= 0.05 and rho >= 0.99 and agree >= 0.99, (dmax, rho, agree)
    # fixed samples are no longer flagged
    pos = np.searchsorted(keep, ch)
    assert ri.is_label_issue[pos].mean() < 0.2
    print(f"incremental {t_inc:.3f}s vs full {t_full:.3f}s")


def test_relabel_only_no_refit_keeps_graph(setup):
    X, y, yn, err, r, rng = setup
    y2 = yn.copy()
    y2[:5] = (y2[:5] + 3) % 10
    ri = update_label_issues(r, X, y2, refit=False)
    np.testing.assert_array_equal(ri.neighbor_indices, r.neighbor_indices)
    np.testing.assert_array_equal(ri.pred_probs, r.pred_probs)
    assert (ri.label_issue_score[:5] > r.label_issue_score[:5]).mean() >= 0.8


def test_removal_repairs_neighbors(setup):
    X, y, yn, err, r, rng = setup
    rem = np.arange(0, 60)
    ri = update_label_issues(r, X, yn, removed=rem, refit=False)
    assert ri.neighbor_indices.max() < len(y) - 60 and ri.neighbor_indices.min() >= 0
    assert not (ri.neighbor_indices == np.arange(len(ri))[:, None]).any()


def test_bad_update(setup):
    X, y, yn, err, r, rng = setup
    with pytest.raises(ValueError, match="All samples removed"):
        update_label_issues(r, X, yn, removed=np.ones(len(y), bool))
    with pytest.raises(ValueError, match="same samples"):
        update_label_issues(r, X, yn[:-1])


def test_folds_stay_aligned_after_removal_without_refit():
    X, y = load_digits(return_X_y=True)
    X, y = X[:300].astype(np.float32), y[:300]
    r = score_label_issues(y, features=X, n_folds=3)
    removed = np.zeros(300, bool)
    removed[::10] = True
    r2 = update_label_issues(r, X, y, removed=removed, refit=False)
    assert len(r2.model_state["folds"]) == len(r2.folds) == 270
    np.testing.assert_array_equal(r2.model_state["folds"], r.folds[~removed])
    # a later refit uses the right fold of every remaining row
    X2, y2 = X[~removed], y[~removed].copy()
    y2[:5] = (y2[:5] + 1) % 10
    changed = np.zeros(270, bool)
    changed[:5] = True
    r3 = update_label_issues(r2, X2, y2, changed=changed, refit=True)
    full = score_label_issues(y2, features=X2, n_folds=3, folds=r2.folds)
    assert np.abs(r3.label_issue_score - full.label_issue_score).max() < 0.1


def test_labels_of_removed_rows_are_ignored():
    X, y = load_digits(return_X_y=True)
    X, y = X[:200].astype(np.float32), y[:200]
    r = score_label_issues(y, features=X, n_folds=3)
    removed = np.zeros(200, bool)
    removed[:4] = True
    placeholder = y.copy()
    placeholder[:4] = -1  # a sentinel for rows being removed
    a = update_label_issues(r, X, placeholder, removed=removed, refit=False)
    b = update_label_issues(r, X, y, removed=removed, refit=False)
    np.testing.assert_array_equal(a.label_issue_score, b.label_issue_score)
    bad = y.copy()
    bad[10] = -1  # a kept row with an invalid label is still refused
    with pytest.raises(ValueError):
        update_label_issues(r, X, bad, removed=removed, refit=False)
