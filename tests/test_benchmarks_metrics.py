"""Fast tests of the detection metrics and the reimplemented anchor scores."""

import math

import numpy as np
import pytest

from label_audit.benchmarks import metrics as M
from label_audit.benchmarks.methods import fo_mistakenness, knn_disagreement


def test_perfect_and_inverted_ranking():
    is_err = np.array([0, 0, 1, 0, 1, 0, 0, 0, 0, 0], bool)
    perfect = is_err.astype(float)
    assert M.auroc(is_err, perfect) == 1.0
    assert M.auprc(is_err, perfect) == 1.0
    assert M.precision_at_k(is_err, perfect, 2) == 1.0
    assert M.auroc(is_err, -perfect) == 0.0
    assert M.precision_at_k(is_err, -perfect, 2) == 0.0


def test_precision_recall_at_k_values():
    is_err = np.array([1, 0, 1, 0, 0, 1, 0, 0], bool)
    scores = np.array([8, 7, 6, 5, 4, 3, 2, 1], float)
    assert M.precision_at_k(is_err, scores, 3) == pytest.approx(2 / 3)
    assert M.recall_at_k(is_err, scores, 3) == pytest.approx(2 / 3)
    assert M.recall_at_k(is_err, scores, 8) == 1.0
    assert M.budget(1797, 0.05) == 90 and M.budget(10, 0.01) == 1


def test_ties_broken_randomly_not_by_index():
    is_err = np.zeros(1000, bool)
    is_err[:500] = True
    flat = np.zeros(1000)
    p = M.precision_at_k(is_err, flat, 100, random_state=0)
    assert 0.35 < p < 0.65


def test_flag_prf():
    is_err = np.array([1, 1, 0, 0, 1], bool)
    flags = np.array([1, 0, 1, 0, 1], bool)
    p, r, f1, nf = M.flag_prf(is_err, flags)
    assert (p, r, nf) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert f1 == pytest.approx(2 / 3)
    p, r, f1, nf = M.flag_prf(is_err, np.zeros(5, bool))
    assert math.isnan(p) and r == 0.0 and nf == 0


def test_accuracy_after_fix_oracle_and_suggested():
    true = np.array([0, 1, 2, 3, 4])
    given = np.array([0, 1, 0, 3, 0])  # errors at 2 and 4
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8])
    assert M.accuracy_after_fix(true, given, scores, 2) == 1.0
    wrong = np.array([0, 1, 2, 3, 1])
    assert M.accuracy_after_fix(true, given, scores, 2, suggested=wrong) == 0.8
    bad_rank = np.array([0.9, 0.8, 0.1, 0.2, 0.3])
    assert M.accuracy_after_fix(true, given, bad_rank, 2) == 0.6


def test_evaluate_keys_and_nan_handling():
    true = np.array([0, 1, 2, 0, 1, 2])
    given = np.array([0, 1, 2, 0, 2, 2])
    out = M.evaluate(true, given, scores=np.array([0, 0, np.nan, 0, 1, 0.5]),
                     flags=np.array([0, 0, 0, 0, 1, 1], bool))
    assert out["auroc"] == 1.0 and out["fix_with"] == "true"
    assert out["n_flagged"] == 2 and out["flag_ratio"] == 2.0
    empty = M.evaluate(true, given)
    assert math.isnan(empty["auprc"]) and empty["n_flagged"] is None


def test_fo_mistakenness_matches_fiftyone_brain_formula():
    from scipy.special import softmax
    from scipy.stats import entropy

    P = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.34, 0.33, 0.33]])
    labels = np.array([0, 0, 2])
    conf = fo_mistakenness(P, labels, use_logits=False)
    logit = fo_mistakenness(P, labels, use_logits=True)
    for i in range(3):
        m = float(P[i].argmax() == labels[i]) * -2.0 + 1.0  # brain: m*-2+1
        assert conf[i] == pytest.approx((m * P[i].max() + 1.0) / 2.0)
        c = -entropy(softmax(np.log(P[i])))
        assert logit[i] == pytest.approx((m * math.exp(c) + 1.0) / 2.0)
    assert conf[1] > 0.5 > conf[0]


def test_knn_disagreement_scores_and_majority():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal([5, 0], 0.1, (30, 2)), rng.normal([0, 5], 0.1, (30, 2))])
    y = np.repeat([0, 1], 30)
    y_noisy = y.copy()
    y_noisy[3] = 1
    s, maj = knn_disagreement(X, y_noisy, k=10)
    assert s[3] == 1.0 and maj[3] == 0
    assert s[np.arange(60) != 3].max() <= 0.1
