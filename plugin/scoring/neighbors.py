"""Cosine k-nearest neighbours and neighbour-label evidence.

Exact search is a blocked float32 matmul over L2-normalised rows (never an N x N matrix:
query blocks of ``block_size`` rows against all rows).  Above ``approx_threshold`` rows the
search switches to an IVF index in torch (``method='approx'``): spherical k-means on a
subsample gives ``n_lists`` centroids (the coarse quantizer), every row is assigned to its
nearest centroid, and the rows of list c are searched exactly (blocked matmul) against the
rows of the ``n_probe`` lists whose centroids are nearest to centroid c.  Cost is about
``N * (n_lists + n_probe * N / n_lists) * d`` multiply-adds instead of ``N^2 * d``;
``n_lists`` defaults to ``sqrt(n_probe * N)`` (balances the two terms).  Measured on
synthetic 100k x 256 embeddings (80 classes) the default ``n_probe`` gives recall@10 above
0.9 against the exact graph (see ``bench/scale.py``).  ``method='pynndescent'`` keeps the
former pynndescent backend (its first call pays a numba JIT compile of minutes).

Self matches are always excluded (an index never appears in its own neighbour list, also
for duplicated rows).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["knn_search", "knn_class_probabilities", "knn_agreement", "APPROX_THRESHOLD"]

APPROX_THRESHOLD = 30_000


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


def _spherical_kmeans(Xt, n_lists: int, n_iter: int, gen):
    """Centroids (n_lists, d), unit norm, of the unit rows ``Xt`` (torch float32), k-means++-free
    random init from the rows; empty clusters are re-seeded with random rows."""
    import torch

    m = Xt.shape[0]
    cent = Xt[torch.randperm(m, generator=gen)[:n_lists]].clone()
    for _ in range(n_iter):
        assign = torch.empty(m, dtype=torch.int64)
        for a in range(0, m, 16_384):
            assign[a : a + 16_384] = (Xt[a : a + 16_384] @ cent.T).argmax(dim=1)
        new = torch.zeros_like(cent).index_add_(0, assign, Xt)
        cnt = torch.bincount(assign, minlength=n_lists)
        empty = torch.nonzero(cnt == 0).flatten()
        if empty.numel():
            new[empty] = Xt[torch.randint(0, m, (empty.numel(),), generator=gen)]
        cent = new / new.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return cent


def _ivf_sizes(n: int, n_probe: int, n_lists: Optional[int]):
    """``(n_lists, n_probe)`` of the IVF index for N rows (see :func:`_ivf_knn`)."""
    if n_lists is None:
        n_lists = int(np.sqrt(n_probe * n))
    n_lists = int(max(1, min(n_lists, n // 8)))
    return n_lists, int(min(n_probe, n_lists))


def _ivf_train_rows(n: int, n_lists: int, train_per_list: int, gen):
    """Sorted row indices (torch int64) of the k-means training subsample drawn from ``gen``, or
    None when all N rows train."""
    import torch

    m = min(n, max(train_per_list * n_lists, 10_000))
    return None if m >= n else torch.sort(torch.randperm(n, generator=gen)[:m]).values


def _ivf_probe_table(cent, n_probe: int) -> np.ndarray:
    """(n_lists, n_rank) int64: the lists nearest to every list's centroid (itself first)."""
    import torch

    n_lists = cent.shape[0]
    cc = cent @ cent.T
    n_rank = int(min(n_lists, max(4 * n_probe, n_probe + 8)))
    return torch.topk(cc, n_rank, dim=1).indices.numpy()


def _ivf_candidate_lists(c: int, counts: np.ndarray, probe: np.ndarray, n_probe: int, k: int):
    """Lists searched for the queries of list c: c first, then its nearest lists until at least
    ``n_probe`` lists and more than k candidate rows (all lists for a pathological tiny index)."""
    n_lists = counts.shape[0]
    lists = [c] + [int(l) for l in probe[c] if l != c]
    take, tot = [], 0
    for j, l in enumerate(lists):  # at least n_probe lists and k + 1 candidates
        if j >= n_probe and tot > k:
            break
        take.append(l)
        tot += int(counts[l])
    if tot <= k:  # pathological tiny index: fall back to all lists
        take = list(range(n_lists))
        take.remove(c)
        take = [c] + take
    return take


def _ivf_knn(Xn: np.ndarray, k: int, *, n_probe: int = 8, n_lists: Optional[int] = None, n_iter: int = 8,
             train_per_list: int = 32, random_state=0):
    """Approximate cosine kNN of every row of the unit rows ``Xn`` (IVF, see module docstring)."""
    import torch

    n, d = Xn.shape
    n_lists, n_probe = _ivf_sizes(n, n_probe, n_lists)
    gen = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    Xt = torch.from_numpy(Xn)
    tr = _ivf_train_rows(n, n_lists, train_per_list, gen)
    train = Xt if tr is None else Xt[tr]
    cent = _spherical_kmeans(train, n_lists, n_iter, gen)
    del train
    assign = torch.empty(n, dtype=torch.int64)
    for a in range(0, n, 16_384):
        assign[a : a + 16_384] = (Xt[a : a + 16_384] @ cent.T).argmax(dim=1)
    order = torch.argsort(assign, stable=True)
    counts = torch.bincount(assign, minlength=n_lists)
    starts = torch.zeros(n_lists + 1, dtype=torch.int64)
    starts[1:] = torch.cumsum(counts, 0)
    Xs = Xt[order]  # rows grouped by list (one (N, d) copy)
    del Xt
    probe_np = _ivf_probe_table(cent, n_probe)  # nearest lists of every list (itself first)
    counts_np, starts_np = counts.numpy(), starts.numpy()
    order_np = order.numpy()
    idx_out = np.empty((n, k), np.int64)
    dist_out = np.empty((n, k), np.float32)
    for c in range(n_lists):
        g = int(counts_np[c])
        if g == 0:
            continue
        take = _ivf_candidate_lists(c, counts_np, probe_np, n_probe, k)
        cand = np.concatenate([np.arange(starts_np[l], starts_np[l + 1]) for l in take])
        ct = torch.from_numpy(cand)
        C = Xs[ct]
        q0 = int(starts_np[c])
        for a in range(0, g, 4096):
            b = min(g, a + 4096)
            sims = Xs[q0 + a : q0 + b] @ C.T
            sims[torch.arange(b - a), torch.arange(a, b)] = -np.inf  # own list comes first: self
            vals, ids = torch.topk(sims, k, dim=1, largest=True, sorted=True)
            rows = order_np[q0 + a : q0 + b]
            idx_out[rows] = order_np[cand[ids.numpy()]]
            dist_out[rows] = (1.0 - vals).clamp_(min=0.0).numpy()
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
    n_probe: int = 8,
    n_lists: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Cosine k-nearest neighbours of every row (self excluded).

    Parameters
    ----------
    features : float array, shape (N, d); rows must be non-zero and finite.
    k : int, default 10; must satisfy 1 <= k < N.
    method : {'auto', 'exact', 'approx', 'pynndescent'}, default 'auto'
        'auto' = exact for N <= ``approx_threshold``, else 'approx' (IVF index in torch, see the
        module docstring); 'pynndescent' = pynndescent's NN-descent graph.
    block_size : int, default 2048
        Query rows per matmul block of the exact search (also capped so a block holds <= 2^26
        similarities).
    queries : int array, optional
        Only search neighbours for these rows (exact search); default all rows.
    exclude : bool array, shape (N,), optional
        Rows that may not be returned as neighbours (exact search only; e.g. removed samples).
    random_state : int, default 0 (IVF k-means / pynndescent seed)
    n_jobs : int, default 2 (pynndescent threads)
    n_probe : int, default 8; lists searched per list of queries (IVF; more = higher recall).
    n_lists : int, optional; IVF lists (default ``sqrt(n_probe * N)``).

    Returns
    -------
    indices : int64 array, shape (Q, k), neighbours sorted by increasing distance.
    distances : float32 array, shape (Q, k), cosine distance ``1 - cos`` in [0, 2].
    """
    if getattr(features, "is_sharded", False):  # rows held by a distributed backend
        if queries is not None or exclude is not None:
            raise ValueError("queries= and exclude= need features held in this process (backend='local').")
        return features.knn_search(k, method=method, approx_threshold=approx_threshold, block_size=block_size,
                                   random_state=random_state, n_probe=n_probe, n_lists=n_lists)
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
    if method not in ("auto", "exact", "approx", "pynndescent"):
        raise ValueError(f"method must be 'auto', 'exact', 'approx' or 'pynndescent'; got {method!r}.")
    use_approx = method in ("approx", "pynndescent") or (method == "auto" and n > approx_threshold)
    if queries is not None or exclude is not None:
        use_approx = False
    Xn = _normalize_rows(X)
    if not use_approx:
        q = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
        return _exact_knn(Xn, k, q, block_size, exclude=exclude)
    if method != "pynndescent":
        return _ivf_knn(Xn, k, n_probe=n_probe, n_lists=n_lists, random_state=random_state)
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
