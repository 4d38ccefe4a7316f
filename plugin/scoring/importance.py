"""Coreset importance: class-conditional leverage and logistic-regression sensitivity.

(a) ``class_conditional_leverage``: for every class c, centre the features of the samples
    labelled c (X_c, shape (n_c, d)), take the thin SVD ``X_c = U S V^T`` truncated to rank
    r_c (components holding ``energy`` of the class variance, at most ``n_c - 1``), and set
    ``h_i = ||U_i||^2`` (the statistical leverage of row i in its class).  Model-free: high
    when the sample is unusual *within its labelled class* (mislabelled, out of distribution or
    a rare mode).  ``sum_{i in c} h_i = r_c``; we report ``h_i * n_c / r_c`` (mean 1 in every
    class) so classes of different size/rank are comparable.  Computed from the (d, d) class
    covariance (eigh), never an (n_c, n_c) matrix.

(b) ``logistic_sensitivity``: the sensitivity of sample i for a loss F(w) = sum_j f_j(w) is
    ``sup_w f_i(w) / F(w)``.  We use the standard two-term upper bound used for logistic
    regression coresets (cf. Munteanu et al., 2018; Tolochinsky & Feldman, 2018):

        s_i = h_i / sum_j h_j  +  loss_i / sum_j loss_j

    The first term bounds how much f_i can grow relative to F when the model moves (for a
    linear score, (x_i w)^2 <= h_i ||X w||^2), the second is the exact ratio at the fitted
    model, with ``loss_i = -log p_oof(y_i | x_i)`` the out-of-fold cross-entropy.  ``s`` sums
    to 2 (the total-sensitivity bound); higher = more important.  Mislabelled samples have a
    large loss, out-of-distribution ones a large leverage; both rank high.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import numpy as np

from .probabilities import eigh_single_thread

__all__ = ["class_conditional_leverage", "logistic_sensitivity", "select_for_review"]


def class_conditional_leverage(
    features,
    labels: np.ndarray,
    *,
    n_classes: Optional[int] = None,
    energy: float = 0.9,
    max_rank: Optional[int] = None,
    classes_to_update: Optional[Sequence[int]] = None,
    previous: Optional[np.ndarray] = None,
    chunk_size: int = 65_536,
) -> np.ndarray:
    """Per-class leverage ``h_i = ||U_i[:, :r_c]||^2 * n_c / r_c`` (see module docstring).

    Parameters
    ----------
    features : float array (N, d)
    labels : int array (N,)
    energy : float in (0, 1], default 0.9; rank r_c keeps this fraction of the class variance.
    max_rank : int, optional; cap on r_c (default ``min(d, n_c - 1)``).
    classes_to_update, previous : recompute only these classes, copying the rest from
        ``previous`` (incremental updates).

    Returns
    -------
    leverage : float32 (N,), >= 0, mean 1 within each class with >= 2 samples (1.0 for
        singleton classes).  Higher = more unusual within its labelled class.
    """
    if getattr(features, "is_sharded", False):  # rows held by a distributed backend
        if classes_to_update is not None or previous is not None:
            raise ValueError("classes_to_update= needs features held in this process (backend='local').")
        return features.class_conditional_leverage(labels, n_classes=n_classes, energy=energy, max_rank=max_rank)
    labels = np.asarray(labels, dtype=np.int64)
    X = features
    n, d = X.shape
    K = int(labels.max()) + 1 if n_classes is None else n_classes
    out = np.ones(n, np.float32) if previous is None else np.array(previous, np.float32, copy=True)
    todo = range(K) if classes_to_update is None else classes_to_update
    for c in todo:
        idx = np.flatnonzero(labels == c)
        if idx.size == 0:
            continue
        if idx.size < 2:
            out[idx] = 1.0
            continue
        Xc = np.asarray(X[idx], dtype=np.float32)
        mu = Xc.mean(axis=0, dtype=np.float64).astype(np.float32)
        Xc = Xc - mu
        big = float(np.abs(Xc).max()) if Xc.size else 0.0
        if big > 1e12 or 0.0 < big < 1e-12:
            Xc /= np.float32(big)  # leverage is scale-free; float32 sums of squares would overflow
        cov = (Xc.T @ Xc).astype(np.float64)
        basis = leverage_basis(cov, idx.size, energy=energy, max_rank=max_rank)
        out[idx] = 1.0 if basis is None else leverage_of_rows(Xc, basis)
    return out


def leverage_basis(cov: np.ndarray, n_c: int, *, energy: float = 0.9, max_rank: Optional[int] = None):
    """The top principal directions of one class (see module docstring).

    Parameters
    ----------
    cov : float64 (d, d), the scatter matrix ``X_c^T X_c`` of the class's centred rows (any
        positive multiple of it gives the same leverage).
    n_c : number of rows in the class (>= 2).

    Returns
    -------
    None when the class has no variance (its leverage is 1), else ``(V, sqrt_evals, r, n_c)``:
    V float32 (d, r) eigenvectors, sqrt_evals float32 (r,), r the rank keeping ``energy``.
    """
    d = cov.shape[0]
    evals, evecs = eigh_single_thread(cov)
    evals = evals[::-1]
    evecs = evecs[:, ::-1]
    pos = evals > evals[0] * 1e-7 if evals[0] > 0 else np.zeros_like(evals, bool)
    total = evals[pos].sum()
    if total <= 0:
        return None
    r = int(np.searchsorted(np.cumsum(evals[pos]) / total, energy) + 1)
    r = min(r, n_c - 1, int(pos.sum()), max_rank or d)
    return (np.ascontiguousarray(evecs[:, :r].astype(np.float32)), np.sqrt(evals[:r]).astype(np.float32), r, n_c)


def leverage_of_rows(Xc: np.ndarray, basis) -> np.ndarray:
    """``h_i * n_c / r`` (float32 (m,)) for centred rows ``Xc`` (m, d) of a class with the
    ``basis`` of :func:`leverage_basis` (the rows may be any subset of the class)."""
    V, sq, r, n_c = basis
    proj = (Xc @ V) / sq
    h = np.einsum("ij,ij->i", proj, proj)  # ||U_i||^2
    return h * n_c / r


def logistic_sensitivity(leverage: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """``s_i = h_i / sum(h) + loss_i / sum(loss)`` (see module docstring); float32 (N,), sums to 2."""
    h = np.asarray(leverage, np.float64)
    l = np.clip(np.asarray(losses, np.float64), 0, None)
    hs = h.sum()
    ls = l.sum()
    s = (h / hs if hs > 0 else np.zeros_like(h)) + (l / ls if ls > 0 else np.zeros_like(l))
    return s.astype(np.float32)


def select_for_review(
    scores: np.ndarray,
    labels: Optional[np.ndarray] = None,
    *,
    budgets: Optional[Dict[Union[int, str], Union[int, str]]] = None,
    n: Optional[int] = None,
    exclude: Optional[np.ndarray] = None,
    classes: Optional[Sequence[str]] = None,
) -> np.ndarray:
    """Pick the highest-scoring samples to review.

    Parameters
    ----------
    scores : float (N,); higher = review first (e.g. importance or label_issue_score). NaN = never.
    labels : int (N,); needed with ``budgets``.
    budgets : dict {class: n | "all"}, optional
        Per-class budget; keys are class ints or names (with ``classes``).  Classes not in the
        dict get nothing.  "all" takes every eligible sample of that class.
    n : int, optional; global budget (without ``budgets``: top n overall; with: cap on the total).
    exclude : bool (N,), optional; True = skip (e.g. already reviewed).
    classes : list of class names, optional, mapping names in ``budgets`` to ints.

    Returns
    -------
    indices : int64 array, sorted by decreasing score.
    """
    scores = np.asarray(scores, np.float64)
    eligible = np.isfinite(scores)
    if exclude is not None:
        exclude = np.asarray(exclude, bool)
        if exclude.shape != scores.shape:
            raise ValueError(f"exclude must have shape {scores.shape}; got {exclude.shape}.")
        eligible &= ~exclude
    order = np.argsort(-np.where(eligible, scores, -np.inf), kind="stable")
    order = order[eligible[order]]
    if budgets is None:
        return order if n is None else order[: max(int(n), 0)]
    if labels is None:
        raise ValueError("labels are required with per-class budgets.")
    labels = np.asarray(labels)
    take = np.zeros(scores.shape, bool)
    name_to_int = {name: i for i, name in enumerate(classes)} if classes is not None else {}
    for key, budget in budgets.items():
        c = name_to_int.get(key, key) if not isinstance(key, (int, np.integer)) else int(key)
        if not isinstance(c, (int, np.integer)):
            raise ValueError(f"Unknown class {key!r} in budgets; pass classes=[...] to map names to ints.")
        members = order[labels[order] == c]
        if budget == "all":
            take[members] = True
        elif isinstance(budget, (int, np.integer)) and budget >= 0:
            take[members[: int(budget)]] = True
        else:
            raise ValueError(f"Budget for class {key!r} must be a non-negative int or 'all'; got {budget!r}.")
    sel = order[take[order]]
    return sel if n is None else sel[: max(int(n), 0)]
