"""Parity of label_audit.scoring.confident_learning with cleanlab 2.9 (test dependency only)."""

import numpy as np
import pytest

cleanlab = pytest.importorskip("cleanlab")
from cleanlab import count as cl_count, filter as cl_filter, rank as cl_rank  # noqa: E402

from label_audit.scoring import confident_learning as ours  # noqa: E402


def _noisy_problem(n=600, K=6, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, K, n)
    logits = rng.normal(size=(n, K)) * 1.5
    logits[np.arange(n), true] += 2.5
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = true.copy()
    flip = rng.random(n) < 0.15
    labels[flip] = (true[flip] + rng.integers(1, K, flip.sum())) % K
    return labels, p.astype(dtype)


@pytest.mark.parametrize("seed,dtype", [(0, np.float64), (1, np.float32), (2, np.float64)])
def test_rank_scores_match(seed, dtype):
    labels, p = _noisy_problem(seed=seed, dtype=dtype)
    np.testing.assert_array_equal(
        ours.get_self_confidence_for_each_label(labels, p), cl_rank.get_self_confidence_for_each_label(labels, p)
    )
    np.testing.assert_allclose(
        ours.get_normalized_margin_for_each_label(labels, p),
        cl_rank.get_normalized_margin_for_each_label(labels, p),
        rtol=0, atol=1e-7,
    )


@pytest.mark.parametrize("seed,dtype", [(0, np.float64), (1, np.float32), (3, np.float32)])
def test_counts_match(seed, dtype):
    labels, p = _noisy_problem(seed=seed, dtype=dtype)
    np.testing.assert_array_equal(ours.get_confident_thresholds(labels, p), cl_count.get_confident_thresholds(labels, p))
    for calibrate in (True, False):
        a, ia = ours.compute_confident_joint(labels, p, calibrate=calibrate, return_indices_of_off_diagonals=True)
        b, ib = cl_count.compute_confident_joint(labels, p, calibrate=calibrate, return_indices_of_off_diagonals=True)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ia, ib)
    np.testing.assert_allclose(ours.estimate_joint(labels, p), cl_count.estimate_joint(labels, p))
    for conv in (True, False):
        ra = ours.estimate_py_and_noise_matrices_from_probabilities(labels, p, converge_latent_estimates=conv)
        rb = cl_count.estimate_py_and_noise_matrices_from_probabilities(labels, p, converge_latent_estimates=conv)
        for x, y in zip(ra, rb):
            np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-12)
    for m in ("off_diagonal", "off_diagonal_calibrated"):
        assert ours.num_label_issues(labels, p, estimation_method=m) == cl_count.num_label_issues(
            labels, p, estimation_method=m
        )


@pytest.mark.parametrize("filter_by", list(ours.FILTER_BY_MODES))
@pytest.mark.parametrize("seed,dtype", [(0, np.float64), (1, np.float32)])
def test_find_label_issues_match(filter_by, seed, dtype):
    labels, p = _noisy_problem(seed=seed, dtype=dtype)
    a = ours.find_label_issues(labels, p, filter_by=filter_by)
    b = cl_filter.find_label_issues(labels, p, filter_by=filter_by, n_jobs=1)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("frac_noise,min_per_class", [(0.5, 1), (1.0, 90)])
def test_find_label_issues_options_match(frac_noise, min_per_class):
    labels, p = _noisy_problem(seed=4)
    for fb in ("prune_by_noise_rate", "prune_by_class", "both"):
        with _nowarn():
            a = ours.find_label_issues(labels, p, filter_by=fb, frac_noise=frac_noise, min_examples_per_class=min_per_class)
        b = cl_filter.find_label_issues(
            labels, p, filter_by=fb, frac_noise=frac_noise, min_examples_per_class=min_per_class, n_jobs=1
        )
        np.testing.assert_array_equal(a, b)


def _nowarn():
    import warnings

    class _Ctx:
        def __enter__(self):
            self._c = warnings.catch_warnings()
            self._c.__enter__()
            warnings.simplefilter("ignore")

        def __exit__(self, *exc):
            return self._c.__exit__(*exc)

    return _Ctx()


def test_missing_class_matches():
    labels, p = _noisy_problem(seed=5)
    labels = np.where(labels == 2, 3, labels)  # class 2 absent from the given labels
    for fb in ("prune_by_noise_rate", "confident_learning", "both"):
        np.testing.assert_array_equal(
            ours.find_label_issues(labels, p, filter_by=fb), cl_filter.find_label_issues(labels, p, filter_by=fb, n_jobs=1)
        )


def test_bad_inputs():
    labels, p = _noisy_problem()
    with pytest.raises(ValueError, match="labels is None"):
        ours.find_label_issues(None, p)
    with pytest.raises(ValueError, match=r"\[0, K\)"):
        ours.find_label_issues(labels + 1, p)
    with pytest.raises(ValueError, match="rows"):
        ours.find_label_issues(labels[:-1], p)
    with pytest.raises(ValueError, match="filter_by"):
        ours.find_label_issues(labels, p, filter_by="nope")
    q = p.copy()
    q[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ours.find_label_issues(labels, q)
    with pytest.raises(ValueError, match="Empty"):
        ours.find_label_issues(np.array([], int), np.zeros((0, 3)))
