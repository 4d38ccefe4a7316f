"""Cosine k-nearest neighbours and neighbour-label evidence.

Exact search is a blocked float32 matmul over L2-normalised rows (never an N x N matrix:
query blocks of ``block_size`` rows against all rows); above ``approx_threshold`` rows the
search switches to pynndescent (approximate, shipped with umap-learn).  The threshold is a
rough estimate, not a careful measurement: exact search (~N^2 * d flops) took 14 s at
N=30k, d=128 on 2 heavily loaded cores, and pynndescent additionally pays a one-off numba JIT
compile of minutes; re-measure before relying on it.

Self matches are always excluded (an index never appears in its own neighbour list, also
for duplicated rows).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["knn_search", "knn_class_probabilities", "knn_agreement", "APPROX_THRESHOLD"]

APPROX_THRESHOLD = 80_000


def _normalize_rows(X: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    out = np.empty(X.shape, np.float32)
    for a in range(0, X.shape[0], chunk):
        blk = np.asarray(X[a : a + chunk], dtype=np.float32)
        nrm = np.linalg.norm(blk, axis=1, keepdims=True)
        out[a : a + chunk] = blk / np.maximum(nrm, 1e-12)
    return out


def _exact_knn(Xn: np.ndarray, k: int, queries: np.ndarray, block_size: int, exclude=None):
    import torch

    n = Xn.shape[0]
    Xt = torch.from_numpy(Xn)
    idx_out = np.empty((queries.size, k), np.int64)
    dist_out = np.empty((queries.size, k), np.float32)
    banned = None if exclude is None else torch.from_numpy(np.flatnonzero(np.asarray(exclude, bool)))
    bs = max(1, min(block_size, (1 << 26) // max(n, 1)))  # <= 256 MB of similarities per block
    for a in range(0, queries.size, bs):
        q = torch.from_numpy(queries[a : a + bs])
        sims = Xt[q] @ Xt.T  # (b, n)
        sims[torch.arange(q.numel()), q] = -np.inf  # exclude self
        if banned is not None and banned.numel():
            sims[:, banned] = -np.inf
        vals, ids = torch.topk(sims, k, dim=1, largest=True, sorted=True)
        idx_out[a : a + bs] = ids.numpy()
        dist_out[a : a + bs] = (1.0 - vals).clamp_(min=0.0).numpy()
    return idx_out, dist_out


def knn_search(
    features,
    k: int = 10,
    *,
    method: str = "auto",
    approx_threshold: int = APPROX_THRESHOLD,
    block_size: int = 2048,
    queries: Optional[np.ndarray] = None,
    exclude: Optional[np.ndarray] = None,
    random_state=0,
    n_jobs: int = 2,
) -> Tuple[np.ndarray, np.ndarray]:
    """Cosine k-nearest neighbours of every row (self excluded).

    Parameters
    ----------
    features : float array, shape (N, d); rows must be non-zero and finite.
    k : int, default 10; must satisfy 1 <= k < N.
    method : {'auto', 'exact', 'approx'}, default 'auto'
        'auto' = exact for N <= ``approx_threshold``, else pynndescent.
    block_size : int, default 2048
        Query rows per matmul block (also capped so a block holds <= 2^26 similarities).
    queries : int array, optional
        Only search neighbours for these rows (exact search); default all rows.
    exclude : bool array, shape (N,), optional
        Rows that may not be returned as neighbours (exact search only; e.g. removed samples).
    random_state : int, default 0 (pynndescent seed)

    Returns
    -------
    indices : int64 array, shape (Q, k), neighbours sorted by increasing distance.
    distances : float32 array, shape (Q, k), cosine distance ``1 - cos`` in [0, 2].
    """
    X = np.asarray(features) if not isinstance(features, np.memmap) else features
    if X.ndim != 2:
        raise ValueError(f"features must be 2-D (N, d); got shape {X.shape}.")
    n = X.shape[0]
    n_avail = n - (0 if exclude is None else int(np.sum(exclude)))
    if not (1 <= k < n_avail):
        raise ValueError(
            f"k={k} neighbours requested but only {n_avail} samples are available (need 1 <= k < N); "
            "lower k or add samples."
        )
    if method not in ("auto", "exact", "approx"):
        raise ValueError(f"method must be 'auto', 'exact' or 'approx'; got {method!r}.")
    use_approx = method == "approx" or (method == "auto" and n > approx_threshold)
    if queries is not None or exclude is not None:
        use_approx = False
    Xn = _normalize_rows(X)
    if not use_approx:
        q = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
        return _exact_knn(Xn, k, q, block_size, exclude=exclude)
    from pynndescent import NNDescent

    index = NNDescent(Xn, metric="cosine", n_neighbors=k + 1, random_state=random_state, n_jobs=n_jobs,
                      low_memory=True, compressed=True)
    ids, dists = index.neighbor_graph
    ids = ids.astype(np.int64)
    dists = dists.astype(np.float32)
    # drop self matches (wherever they appear); keep the first k others
    self_hit = ids == np.arange(n)[:, None]
    order = np.argsort(self_hit, axis=1, kind="stable")[:, :k]  # non-self entries first
    out_i = np.take_along_axis(ids, order, axis=1)
    out_d = np.take_along_axis(dists, order, axis=1)
    return out_i, out_d


def knn_class_probabilities(
    neighbor_indices: np.ndarray,
    neighbor_distances: Optional[np.ndarray],
    labels: np.ndarray,
    n_classes: int,
    *,
    weighted: bool = True,
    prior_strength: float = 1.0,
) -> np.ndarray:
    """Neighbour-vote class probabilities.

    ``p_i(c) = (sum_j w_ij [y_j = c] + a * pi_c) / (sum_j w_ij + a)`` over the k neighbours j of
    i, with weights ``w_ij = max(1 - dist_ij, 0) + 1e-3`` (cosine similarity) when ``weighted``
    else 1, ``a = prior_strength`` pseudo-votes spread over the label marginal ``pi``.

    Returns
    -------
    probs : float32 array, shape (N, K), rows sum to 1.  Higher ``probs[i, c]`` = more of i's
        neighbourhood carries label c.
    """
    labels = np.asarray(labels, dtype=np.int64)
    nbr = np.asarray(neighbor_indices)
    n, k = nbr.shape
    if weighted and neighbor_distances is not None:
        w = np.maximum(1.0 - np.asarray(neighbor_distances, np.float32), 0.0) + 1e-3
    else:
        w = np.ones((n, k), np.float32)
    prior = np.bincount(labels, minlength=n_classes).astype(np.float64)
    prior = (prior / prior.sum()).astype(np.float32)
    probs = np.zeros((n, n_classes), np.float32)
    nl = labels[nbr]
    rows = np.repeat(np.arange(n), k)
    np.add.at(probs, (rows, nl.ravel()), w.ravel().astype(np.float32))
    probs += prior_strength * prior
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


def knn_agreement(
    neighbor_indices: np.ndarray,
    labels: np.ndarray,
    neighbor_distances: Optional[np.ndarray] = None,
    *,
    weighted: bool = False,
) -> np.ndarray:
    """Fraction of the k neighbours whose label equals the sample's own given label.

    With ``weighted=True`` the fraction is weighted by cosine similarity ``max(1 - dist, 0)``.

    Returns
    -------
    agreement : float32 array, shape (N,), range [0, 1]; higher = neighbourhood agrees with the
        given label (``1 - agreement`` is the kNN-disagreement anchor).
    """
    labels = np.asarray(labels)
    nbr = np.asarray(neighbor_indices)
    same = (labels[nbr] == labels[:, None]).astype(np.float32)
    if weighted and neighbor_distances is not None:
        w = np.maximum(1.0 - np.asarray(neighbor_distances, np.float32), 0.0) + 1e-6
        return (same * w).sum(1) / w.sum(1)
    return same.mean(axis=1)
