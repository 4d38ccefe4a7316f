"""Label-error detection metrics.

Convention: ``scores`` are *issue* scores (higher = more likely a label
error); ``is_error`` is the ground-truth mask ``noisy_labels != true_labels``.
Rankings break ties with a seeded random order so that coarse scores (e.g. the
11 possible values of 10-NN disagreement) are not favoured by index order.
"""

from __future__ import annotations

import math

import numpy as np


def rank_order(scores, random_state=0):
    """Indices sorted by decreasing score, ties broken by a seeded shuffle."""
    scores = np.asarray(scores, dtype=np.float64)
    tie = np.random.default_rng(random_state).random(len(scores))
    return np.lexsort((tie, -scores))


def auroc(is_error, scores):
    from sklearn.metrics import roc_auc_score

    is_error = np.asarray(is_error, bool)
    if is_error.all() or not is_error.any():
        return float("nan")
    return float(roc_auc_score(is_error, scores))


def auprc(is_error, scores):
    """Area under the precision-recall curve as average precision (sklearn's
    step-wise ``average_precision_score``, no interpolation)."""
    from sklearn.metrics import average_precision_score

    is_error = np.asarray(is_error, bool)
    if not is_error.any():
        return float("nan")
    return float(average_precision_score(is_error, scores))


def precision_at_k(is_error, scores, k, random_state=0):
    k = int(k)
    if k <= 0:
        return float("nan")
    top = rank_order(scores, random_state)[:k]
    return float(np.asarray(is_error, bool)[top].mean())


def recall_at_k(is_error, scores, k, random_state=0):
    is_error = np.asarray(is_error, bool)
    n_err = int(is_error.sum())
    if n_err == 0:
        return float("nan")
    top = rank_order(scores, random_state)[: int(k)]
    return float(is_error[top].sum() / n_err)


def budget(n, frac):
    """Review budget of ``frac`` of ``n`` samples (at least one)."""
    return max(1, int(math.ceil(frac * n)))


def flag_prf(is_error, flags):
    """Precision, recall, F1 of a boolean flag vector, and #flagged."""
    is_error = np.asarray(is_error, bool)
    flags = np.asarray(flags, bool)
    tp = int((flags & is_error).sum())
    nf, ne = int(flags.sum()), int(is_error.sum())
    p = tp / nf if nf else float("nan")
    r = tp / ne if ne else float("nan")
    f1 = 2 * p * r / (p + r) if nf and ne and (p + r) > 0 else (0.0 if nf and ne else float("nan"))
    return p, r, f1, nf


def accuracy_after_fix(true_labels, given_labels, scores, b, suggested=None, random_state=0):
    """Accuracy of the given labels vs the true labels after replacing the
    top-``b`` ranked labels with ``suggested`` (the method's suggestion) or,
    where ``suggested`` is None, with the true label (an oracle reviewer)."""
    true_labels = np.asarray(true_labels)
    fixed = np.array(given_labels, copy=True)
    top = rank_order(scores, random_state)[: int(b)]
    if suggested is None:
        fixed[top] = true_labels[top]
    else:
        fixed[top] = np.asarray(suggested)[top]
    return float((fixed == true_labels).mean())


def evaluate(true_labels, given_labels, scores=None, flags=None, suggested=None, random_state=0):
    """All metrics of one method as a dict (NaN / None where not applicable).

    Keys: auroc, auprc, p_at_errors, p_at_1pct, r_at_5pct, flag_precision,
    flag_recall, flag_f1, n_flagged, flag_ratio (n_flagged / n_errors),
    acc_after_fix, fix_with ('suggested' | 'true').
    """
    true_labels = np.asarray(true_labels)
    given_labels = np.asarray(given_labels)
    is_error = given_labels != true_labels
    n, n_err = len(true_labels), int(is_error.sum())
    nan = float("nan")
    out = dict(
        auroc=nan, auprc=nan, p_at_errors=nan, p_at_1pct=nan, r_at_5pct=nan,
        flag_precision=nan, flag_recall=nan, flag_f1=nan, n_flagged=None,
        flag_ratio=nan, acc_after_fix=nan, fix_with=None,
    )
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        bad = ~np.isfinite(scores)
        if bad.any():  # NaN/-inf rank last, +inf first
            fin = scores[~bad]
            lo, hi = (fin.min(), fin.max()) if len(fin) else (0.0, 0.0)
            scores = np.where(np.isposinf(scores), hi + 1, np.where(bad, lo - 1, scores))
        out["auroc"] = auroc(is_error, scores)
        out["auprc"] = auprc(is_error, scores)
        out["p_at_errors"] = precision_at_k(is_error, scores, n_err, random_state)
        out["p_at_1pct"] = precision_at_k(is_error, scores, budget(n, 0.01), random_state)
        out["r_at_5pct"] = recall_at_k(is_error, scores, budget(n, 0.05), random_state)
        out["acc_after_fix"] = accuracy_after_fix(
            true_labels, given_labels, scores, n_err, suggested, random_state
        )
        out["fix_with"] = "true" if suggested is None else "suggested"
    if flags is not None:
        p, r, f1, nf = flag_prf(is_error, flags)
        out.update(flag_precision=p, flag_recall=r, flag_f1=f1, n_flagged=nf,
                   flag_ratio=(nf / n_err) if n_err else nan)
    return out
