"""Incremental re-scoring after relabelling / removing samples.

``update_label_issues`` reuses everything the change does not invalidate:

* fold assignment: kept as is (a full recompute must pass ``folds=result.folds`` to be
  comparable - fold assignment is a random choice, not a function of the labels);
* logistic-regression fold models: warm-started from the previous weights and refitted with
  ``max_iter`` (default 10) L-BFGS iterations on the new labels/rows (the objective is convex
  and the previous optimum is O(changes / N) away, so a few iterations suffice);
  ``refit=False`` keeps the old probabilities (only the changed label columns are re-read);
* kNN graph: relabels keep the graph (only neighbour votes change); removals re-query only
  the rows that had a removed sample among their k neighbours (exact blocked search over the
  kept rows);
* leverage: recomputed only for the classes whose membership changed;
* fusion, flags, confident joint, noise matrix: recomputed (O(N K)).

Tolerance (tested in ``tests/test_scoring_incremental.py`` on digits, 1% of labels changed
and 1% removed, against a full recompute with the same folds): with ``refit=True`` max
|delta label_issue_score| <= 0.05, Spearman rank correlation >= 0.99, and ``is_label_issue``
agreeing on >= 99% of rows.  Speed/accuracy measured on synthetic 30k x 128 x 20 classes
(2 loaded cores): refit=False 14.7x faster than a full recompute (max |delta| 0.15, Spearman
0.986, flags agree 99.9%); refit=True, max_iter=10: 4.1x faster (max |delta| 0.032, Spearman
0.9994).  The >= 10x target is only met with ``refit=False``.
"""

from __future__ import annotations

import numpy as np

from .engine import LabelIssueResult, _finish
from .importance import class_conditional_leverage
from .neighbors import _exact_knn, _normalize_rows
from .probabilities import refit_fold_models, validate_features, validate_labels

__all__ = ["update_label_issues"]


def _as_mask(sel, n, name):
    if sel is None:
        return np.zeros(n, bool)
    sel = np.asarray(sel)
    if sel.dtype == bool:
        if sel.shape != (n,):
            raise ValueError(f"{name} mask must have shape ({n},); got {sel.shape}.")
        return sel.copy()
    m = np.zeros(n, bool)
    if sel.size:
        if sel.min() < 0 or sel.max() >= n:
            raise ValueError(f"{name} indices must be in [0, {n}).")
        m[sel.astype(np.int64)] = True
    return m


def update_label_issues(
    result: LabelIssueResult,
    features,
    labels,
    *,
    changed=None,
    removed=None,
    refit: bool = True,
    max_iter: int = 10,
    device=None,
) -> LabelIssueResult:
    """Re-score after relabelling and/or removing samples, reusing ``result``.

    Parameters
    ----------
    result : LabelIssueResult from :func:`score_label_issues` (or a previous update).
    features : the same (N, d) features that produced ``result`` (rows aligned with ``result``;
        the rows of removed samples are not read, so they may be zeros);
        may be None when ``result`` was computed from ``pred_probs`` only.
    labels : int array (N,), the new labels for the rows of ``result`` (values for removed rows
        are ignored).
    changed : indices or bool mask (N,), optional; rows whose label changed (default: inferred
        as ``labels != result.labels``).
    removed : indices or bool mask (N,), optional; rows to drop.
    refit : bool, default True; warm-start refit of the fold models (only when ``result`` owns
        them, i.e. it was computed from features without ``pred_probs``).
    max_iter : int, default 10; L-BFGS iterations per fold model for the refit.

    Returns
    -------
    LabelIssueResult for the kept rows (``index`` maps them to the original input rows).
    """
    n = len(result)
    K = len(result.classes)
    removed_m = _as_mask(removed, n, "removed")
    if removed_m.any():  # removed rows' labels are ignored: any placeholder (-1, None) is fine
        labels = np.array(labels, copy=True)  # ints stay ints; lists with None -> object
        if labels.shape[:1] == (n,):
            labels[removed_m] = result.labels[removed_m]
    labels, _ = validate_labels(labels, K, n_samples=n)
    changed_m = _as_mask(changed, n, "changed") if changed is not None else labels != result.labels
    keep = np.flatnonzero(~removed_m)
    if keep.size == 0:
        raise ValueError("All samples removed: nothing left to score.")
    new_labels = labels[keep]
    if np.unique(new_labels).size < 2:
        raise ValueError("After the update only one class has samples: need at least two.")
    params = dict(result.params)
    state = result.model_state or {}

    X = None
    if features is not None:
        X = validate_features(features, n, ignore_rows=removed_m)

    # 1) model probabilities
    P = result.pred_probs
    new_state = dict(state)
    if refit and "coef" in state and (changed_m.any() or removed_m.any()):
        if X is None:
            raise ValueError("features are required to refit the fold models.")
        P_new, ms = refit_fold_models(X, labels, state, keep=keep, max_iter=max_iter, device=device)
        new_state.update(ms)
        P = P_new
    else:
        P = P[keep]
    folds = None if result.folds is None else result.folds[keep]
    if "folds" in new_state and folds is not None:
        new_state["folds"] = folds  # keep the state's fold array aligned with the rows

    # 2) kNN graph
    nbr = dist = None
    if result.neighbor_indices is not None:
        k = result.neighbor_indices.shape[1]
        if keep.size <= k:
            raise ValueError(f"Only {keep.size} samples left for k={k} neighbours: need N > k.")
        old_nbr, old_dist = result.neighbor_indices, result.neighbor_distances
        remap = np.full(n, -1, np.int64)
        remap[keep] = np.arange(keep.size)
        nbr = remap[old_nbr[keep]]
        dist = old_dist[keep].copy()
        broken = np.flatnonzero((nbr < 0).any(axis=1))
        if broken.size:
            if X is None:
                raise ValueError("features are required to repair the kNN graph after removals.")
            from .engine import _knn_features

            Xk, _ = _knn_features(X, state.get("knn_preprocessor"), params["max_dim"], params["random_state"])
            Xn = _normalize_rows(np.asarray(Xk)[keep])
            ni, nd = _exact_knn(Xn, k, broken, block_size=2048)
            nbr[broken] = ni
            dist[broken] = nd

    # 3) leverage for touched classes
    leverage = None
    if params.get("compute_importance", True) and X is not None and np.isfinite(result.leverage).all():
        touched = np.unique(np.concatenate([result.labels[changed_m | removed_m], labels[changed_m & ~removed_m]]))
        if touched.size:
            from .engine import _knn_features

            Xk, _ = _knn_features(X, state.get("knn_preprocessor"), params["max_dim"], params["random_state"])
            Xk_keep = np.asarray(Xk)[keep]
            leverage = class_conditional_leverage(
                Xk_keep, new_labels, n_classes=K, classes_to_update=touched.tolist(), previous=result.leverage[keep]
            )
        else:
            leverage = result.leverage[keep]

    return _finish(
        new_labels, K, result.classes, P, None, nbr, dist, leverage, folds, result.index[keep], params, new_state
    )
