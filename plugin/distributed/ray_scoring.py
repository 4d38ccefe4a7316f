"""The scoring engine's sums over samples, as Ray tasks over row shards.

:class:`ShardedFeatures` holds an (N, d) float32 feature matrix as blocks of rows
in Ray's object store (each block: its global row indices, its shard and fold).
It implements the few methods the single-process engine calls on a sharded
input (``validate``, ``column_moments``, ``map_transform``, ``fold_data``,
``knn_search``, ``class_conditional_leverage``), so
:func:`label_audit.scoring.score_label_issues` with ``backend="ray"`` runs the
*same* optimizer and the same driver-side code, with only the sums over rows
computed where the rows live:

==============================  =============================================
engine step                     on Ray
==============================  =============================================
validation                      one task per block: first NaN/inf and all-zero
                                rows
standardisation                 per-shard column sums ``sum x``, ``sum x^2``
                                (float64), added on the driver
PCA (d > max_dim)               the driver gathers the same random subsample
                                of rows as the local path (at most
                                ``pca_samples``); projection is a map
logistic regression             warm start and preconditioner on the same
                                gathered subsample (driver); every L-BFGS
                                evaluation of a fold model sums the
                                cross-entropy and its gradient (dW, db) over
                                the shards' training rows (one task per
                                shard), L-BFGS itself runs on the driver
out-of-fold probabilities       a map: each shard predicts its rows with its
                                fold's model
kNN (exact or IVF)              k-means of the IVF on the same gathered
                                subsample: initialisation on the driver,
                                every iteration's assignment and per-list
                                sums in tasks over chunks of it; each shard
                                assigns its rows to lists; every (query
                                shard, data shard) pair returns the top-k of
                                its candidates, merged by top-k per query
                                shard
leverage                        per-class sums, then per-class centred Gram
                                matrices ``X_c^T X_c`` summed over shards;
                                eigh per class on the driver; leverage is a
                                map
==============================  =============================================

Tasks are pure functions of object-store inputs, so Ray retries a task whose
worker died (``max_retries``) and rebuilds lost task outputs from lineage;
nothing is written anywhere until the driver has every result.  When retries are
exhausted :class:`~.cluster.RayRunError` names the stage.  Each task pins torch
and BLAS to one thread (it reserves one CPU) and reports its time, rows and peak
memory (``runner.stats``; see ``bench/ray_scaling.py``).  What stays on
the driver: labels, folds, the (N, K) probabilities, the (N, k) neighbour
graph and the per-sample fusion/flags (``_finish``) -- O(N * (K + k)).
"""

import logging

import numpy as np

from .cluster import Meter, Runner, fault_point, limit_threads

logger = logging.getLogger(__name__)

__all__ = ["ShardedFeatures", "shard_features", "features_from_blocks"]


def shard_features(features, n_samples=None, *, address=None, num_shards=None, max_retries=3, runner=None):
    """Puts ``features`` (an (N, d) array or ``np.memmap``) into Ray's object store as
    ``num_shards`` contiguous row shards; returns a :class:`ShardedFeatures`.

    An input that is already a :class:`ShardedFeatures` is returned as is.

    Args:
        features: float array (N, d), any float dtype (stored as float32)
        n_samples (None): the expected N (a clear error otherwise)
        address (None): the Ray cluster (see :func:`.cluster.connect`)
        num_shards (None): default: the cluster's CPU count
        max_retries (3): retries of a task whose worker died
        runner (None): an existing :class:`.cluster.Runner`
    """
    if isinstance(features, ShardedFeatures):
        return features
    runner = runner or Runner(address=address, num_shards=num_shards, max_retries=max_retries)
    X = features if isinstance(features, np.ndarray) else np.asarray(features)
    if X.ndim != 2:
        raise ValueError(f"features must be 2-D (N, d); got shape {X.shape}.")
    n, d = X.shape
    if n_samples is not None and n != n_samples:
        raise ValueError(
            f"features has {n} rows but labels has {n_samples} entries; they must describe the same "
            "samples in the same order."
        )
    if n == 0 or d == 0:
        raise ValueError(f"Empty input: features has shape {X.shape}.")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"features must be numeric; got dtype {X.dtype}.")
    S = max(1, min(runner.num_shards, n))
    bounds = np.linspace(0, n, S + 1).astype(np.int64)
    blocks = []
    with runner.timed("shard"):
        for s in range(S):
            a, b = int(bounds[s]), int(bounds[s + 1])
            ref = runner.ray.put(np.ascontiguousarray(X[a:b], dtype=np.float32))
            blocks.append(_Block(ref, np.arange(a, b, dtype=np.int64), s, -1))
    return ShardedFeatures(runner, blocks, n, d)


def features_from_blocks(blocks, *, address=None, max_retries=3, runner=None):
    """A :class:`ShardedFeatures` from row blocks already in Ray's object store.

    Args:
        blocks: ObjectRefs of float32 (n_i, d) arrays (or arrays, put here), in row order:
            block i holds the rows after those of blocks 0..i-1; one shard per block.  E.g.
            written by Ray tasks that read embeddings from storage, so that the feature
            matrix never passes through the driver.
        address, max_retries, runner: see :func:`shard_features`
    """
    runner = runner or Runner(address=address, max_retries=max_retries)
    ray = runner.ray
    refs = [b if isinstance(b, ray.ObjectRef) else ray.put(np.ascontiguousarray(b, np.float32))
            for b in blocks]
    if not refs:
        raise ValueError("Empty input: no feature blocks given.")
    T = _tasks()
    shapes = runner.get([runner.submit(T.shape, ref) for ref in refs], "shape")
    dims = {s[1] for s in shapes}
    if len(dims) != 1:
        raise ValueError(f"feature blocks have different widths {sorted(dims)}: they must share d.")
    out, start = [], 0
    for s, (ref, (n_i, _)) in enumerate(zip(refs, shapes)):
        out.append(_Block(ref, np.arange(start, start + n_i, dtype=np.int64), s, -1))
        start += n_i
    runner.num_shards = len(out)
    return ShardedFeatures(runner, out, start, dims.pop())


class _Block:
    """Rows ``rows`` (sorted global indices) of shard ``shard`` (fold ``fold`` or -1)."""

    __slots__ = ("ref", "rows", "shard", "fold")

    def __init__(self, ref, rows, shard, fold):
        self.ref = ref
        self.rows = rows
        self.shard = shard
        self.fold = fold


class ShardedFeatures:
    """An (N, d) float32 matrix held as row blocks in Ray's object store.

    Attributes:
        runner: the :class:`.cluster.Runner` (settings and per-task reports)
        blocks: the row blocks (object ref, global rows, shard, fold)
        shape: ``(N, d)``
    """

    is_sharded = True
    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, runner, blocks, n, d):
        self.runner = runner
        self.blocks = blocks
        self.shape = (int(n), int(d))

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return "ShardedFeatures(shape=%s, blocks=%d, shards=%d)" % (
            self.shape, len(self.blocks), len(self.shards()))

    def shards(self):
        """``{shard: [blocks]}`` in shard order."""
        out = {}
        for blk in self.blocks:
            out.setdefault(blk.shard, []).append(blk)
        return dict(sorted(out.items()))

    def _remote(self):
        return _tasks()

    def _map(self, stage, fn, *args):
        """A new ShardedFeatures with ``fn(block, *args)`` applied to every block (one task each)."""
        r = self.runner
        with r.timed(stage):
            out = [r.submit(fn, blk.ref, *args, num_returns=2) for blk in self.blocks]
            r.get([o[1] for o in out], stage)
        blocks = [_Block(o[0], blk.rows, blk.shard, blk.fold) for o, blk in zip(out, self.blocks)]
        return ShardedFeatures(r, blocks, *self.shape)

    # ---------------------------------------------------------------- engine hooks
    def validate(self, n_samples=None, *, name="features", ignore_rows=None):
        """Same checks and messages as :func:`label_audit.scoring.probabilities.validate_features`."""
        from ..scoring.probabilities import raise_feature_errors

        n = self.shape[0]
        if n_samples is not None and n != n_samples:
            raise ValueError(
                f"{name} has {n} rows but labels has {n_samples} entries; they must describe the same "
                "samples in the same order."
            )
        T, r = self._remote(), self.runner
        with r.timed("validate"):
            refs = [r.submit(T.check_rows, blk.ref, blk.rows,
                             None if ignore_rows is None else np.asarray(ignore_rows, bool)[blk.rows])
                    for blk in self.blocks]
            found = r.get(refs, "validate")
        bad = sorted(int(i) for b, _ in found for i in b)[:5]
        zero = sorted(int(i) for _, z in found for i in z)[:5]
        raise_feature_errors(name, bad, zero)
        return self

    def __getitem__(self, idx):
        """Rows ``idx`` (int array or slice) gathered to the driver as float32 (k, d)
        (for subsamples: PCA, warm start, k-means)."""
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(self.shape[0]))
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim != 1:
            raise IndexError("ShardedFeatures supports 1-D integer row indices only")
        if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError("row index out of range for %d rows" % self.shape[0])
        out = np.empty((idx.size, self.shape[1]), np.float32)
        T, r = self._remote(), self.runner
        parts = []
        for blk in self.blocks:
            pos = np.searchsorted(blk.rows, idx)
            pos = np.minimum(pos, blk.rows.size - 1)
            hit = np.flatnonzero(blk.rows[pos] == idx)
            if hit.size:
                parts.append((hit, r.submit(T.take_rows, blk.ref, pos[hit])))
        with r.timed("gather"):
            got = r.get([p[1] for p in parts], "gather")
        for (hit, _), rows in zip(parts, got):
            out[hit] = rows
        return out

    def column_moments(self, chunk_size=32_768):
        """``(sum x, sum x^2)`` per column, float64 (d,), summed over the blocks."""
        T, r = self._remote(), self.runner
        with r.timed("moments"):
            got = r.get([r.submit(T.moments, blk.ref, chunk_size) for blk in self.blocks], "moments")
        s = np.sum([g[0] for g in got], axis=0)
        ss = np.sum([g[1] for g in got], axis=0)
        return s, ss

    def map_transform(self, prep):
        """``prep.transform`` of every block (PCA projection), as new blocks."""
        return self._map("transform", self._remote().transform, self.runner.ray.put(prep))

    def __imul__(self, scale):
        """Multiply every column by ``scale`` (d,) (returns a new ShardedFeatures)."""
        return self._map("scale", self._remote().scale, np.asarray(scale, np.float32))

    def fold_data(self, labels, folds, prep, n_folds, dev):
        """The rows split by fold, for the out-of-fold fit (see ``_LocalFoldData``)."""
        return _RayFoldData(self, labels, folds, prep, n_folds, dev)

    # ------------------------------------------------------------------- kNN
    def knn_search(self, k=10, *, method="auto", approx_threshold=30_000, block_size=2048,
                   random_state=0, n_probe=8, n_lists=None):
        """Cosine kNN of every row (self excluded): the single-process search, sharded.

        Exact search when ``method='exact'`` (or 'auto' with N <= ``approx_threshold``),
        else the IVF index of :mod:`label_audit.scoring.neighbors` with the same
        centroids (k-means on the same subsample) and the same candidate lists per
        query: each (query shard, data shard) pair returns its top-k among the
        candidates held by the data shard, and the per-shard lists are merged by
        top-k.  Returns ``(indices (N, k) int64, distances (N, k) float32)``.
        """
        import torch

        from ..scoring.neighbors import (
            _ivf_candidate_lists,
            _ivf_probe_table,
            _ivf_sizes,
            _ivf_train_rows,
            _normalize_rows,
        )

        n = self.shape[0]
        if not (1 <= k < n):
            raise ValueError(
                f"k={k} neighbours requested but only {n} samples are available (need 1 <= k < N); "
                "lower k or add samples."
            )
        if method not in ("auto", "exact", "approx"):
            raise ValueError(f"method must be 'auto', 'exact' or 'approx' with backend='ray'; got {method!r}.")
        use_approx = method == "approx" or (method == "auto" and n > approx_threshold)
        T, r = self._remote(), self.runner
        shards = self.shards()
        cent = None
        if use_approx:  # centroids: k-means on the same subsample as the single-process index
            n_lists, n_probe = _ivf_sizes(n, n_probe, n_lists)
            gen = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
            tr = _ivf_train_rows(n, n_lists, train_per_list=32, gen=gen)
            rows = np.arange(n) if tr is None else tr.numpy()
            train = _normalize_rows(self[rows])
            cent = self._spherical_kmeans(train, n_lists, 8, gen)
            del train
        else:
            n_lists = 1
        with r.timed("knn_index"):
            cent_ref = r.ray.put(None if cent is None else cent.numpy())
            packed, small = [], []
            for s, blks in shards.items():
                out = r.submit(T.knn_pack, cent_ref, n_lists, len(blks),
                               *[b.ref for b in blks], *[b.rows for b in blks], num_returns=2)
                packed.append(out[0])
                small.append(out[1])
            small = r.get(small, "knn_assign")  # per shard: (counts per list, gids in packed order)
            counts = np.sum([c for c, _ in small], axis=0)
            if use_approx:
                probe = _ivf_probe_table(cent, n_probe)
                takes = [_ivf_candidate_lists(c, counts, probe, n_probe, k) for c in range(n_lists)]
            else:
                takes = [[0]]
            takes_ref = r.ray.put(takes)
        with r.timed("knn_search"):
            merged = []
            for i in range(len(packed)):
                pair = [r.submit(T.knn_pair, packed[i], packed[j], takes_ref, k, i == j, block_size)
                        for j in range(len(packed))]
                merged.append(r.submit(T.knn_merge, k, *pair))
            merged = r.get(merged, "knn_search")
        idx_out = np.empty((n, k), np.int64)
        dist_out = np.empty((n, k), np.float32)
        for (_, gids), (ids, dist) in zip(small, merged):
            idx_out[gids] = ids
            dist_out[gids] = dist
        return idx_out, dist_out

    def _spherical_kmeans(self, train, n_lists, n_iter, gen):
        """:func:`label_audit.scoring.neighbors._spherical_kmeans` of the unit rows ``train``
        (m, d), with every iteration's assignment and per-list sums computed by tasks over
        chunks of ``train`` (the random initialisation and re-seeding of empty lists use ``gen``
        on the driver, as the single-process code does)."""
        import torch

        T, r = self._remote(), self.runner
        m = train.shape[0]
        Xt = torch.from_numpy(train)
        cent = Xt[torch.randperm(m, generator=gen)[:n_lists]].clone()
        S = max(1, min(r.num_shards, m // 2048))
        bounds = np.linspace(0, m, S + 1).astype(np.int64)
        chunks = [r.ray.put(np.ascontiguousarray(train[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
        with r.timed("knn_kmeans"):
            for _ in range(n_iter):
                cref = r.ray.put(cent.numpy())
                got = r.get([r.submit(T.kmeans_step, c, cref) for c in chunks], "knn_kmeans")
                new = got[0][0].copy()
                for sums, _ in got[1:]:
                    new += sums
                new = torch.from_numpy(new)
                cnt = torch.from_numpy(np.sum([c for _, c in got], axis=0))
                empty = torch.nonzero(cnt == 0).flatten()
                if empty.numel():
                    new[empty] = Xt[torch.randint(0, m, (empty.numel(),), generator=gen)]
                cent = new / new.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return cent

    # -------------------------------------------------------------- leverage
    def class_conditional_leverage(self, labels, *, n_classes=None, energy=0.9, max_rank=None):
        """:func:`label_audit.scoring.importance.class_conditional_leverage` from per-class sums
        and centred Gram matrices summed over shards (eigh per class on the driver)."""
        from ..scoring.importance import leverage_basis

        labels = np.asarray(labels, dtype=np.int64)
        n, d = self.shape
        K = int(labels.max()) + 1 if n_classes is None else int(n_classes)
        counts = np.bincount(labels, minlength=K)
        T, r = self._remote(), self.runner
        shards = list(self.shards().values())
        args = [(len(blks), *[b.ref for b in blks], *[labels[b.rows] for b in blks]) for blks in shards]
        with r.timed("leverage"):
            sums = r.get([r.submit(T.class_sums, K, *a) for a in args], "leverage_sums")
            total = np.sum(sums, axis=0)
            mu = np.zeros((K, d), np.float32)
            big = counts >= 2
            mu[big] = (total[big] / counts[big, None]).astype(np.float32)
            mu_ref = r.ray.put(mu)
            grams = r.get([r.submit(T.class_grams, mu_ref, big, *a) for a in args], "leverage_gram")
            cov = {}
            for classes, G in grams:
                for c, g in zip(classes, G):
                    cov[c] = cov[c] + g if c in cov else g.copy()
            bases = {c: leverage_basis(cov[c], int(counts[c]), energy=energy, max_rank=max_rank) for c in cov}
            bases_ref = r.ray.put(bases)
            lev = r.get([r.submit(T.class_leverage, mu_ref, bases_ref, *a) for a in args], "leverage_rows")
        out = np.ones(n, np.float32)
        for blks, hs in zip(shards, lev):
            for blk, h in zip(blks, hs):
                out[blk.rows] = h
        return out


class _RayFoldData:
    """The out-of-fold fit's rows, split by (shard, fold) in the object store.

    Same interface as ``label_audit.scoring.probabilities._LocalFoldData``."""

    def __init__(self, X, labels, folds, prep, n_folds, dev):
        import torch

        from ..scoring.probabilities import _LinearSoftmax

        self.runner = r = X.runner
        self.X = X  # the input features (raw rows, for the preconditioner)
        self.dev = dev
        self.n_folds = n_folds
        self.folds = folds
        self.labels = labels
        T = _tasks()
        pca = not prep.folds_into_weights
        prep_ref = r.ray.put(prep if pca else None)
        pieces = []
        with r.timed("split_folds"):
            outs = []
            for blk in X.blocks:
                fl = folds[blk.rows]
                outs.append((blk, fl, r.submit(T.split_folds, blk.ref, fl, n_folds, prep_ref,
                                               num_returns=n_folds + 1)))
            r.get([o[2][-1] for o in outs], "split_folds")
            for blk, fl, refs in outs:
                for f in range(n_folds):
                    rows = blk.rows[fl == f]
                    if rows.size:
                        pieces.append(_Block(refs[f], rows, blk.shard, f))
        d_eff = prep.scale.shape[0]
        if pca:
            self.pieces = ShardedFeatures(r, pieces, X.shape[0], d_eff)
        else:
            # the fold pieces partition the same rows: X continues on them (kNN, leverage) and
            # its contiguous blocks are released, so the object store holds the features once
            X.blocks = pieces
            self.pieces = X
        self.projected = self.pieces if pca else None
        self.y_refs = [r.ray.put(labels[p.rows]) for p in pieces]
        if pca:
            self.lin = _LinearSoftmax(None)
            self.affine = r.ray.put(None)
        else:
            mean = prep.mean
            inv = (1.0 / prep.scale).astype(np.float32)
            self.lin = _LinearSoftmax(None, torch.from_numpy(mean).to(dev), torch.from_numpy(inv).to(dev))
            self.affine = r.ray.put((mean, inv))

    def input_rows(self, idx):
        return self.X[np.asarray(idx)]

    def subsample_segments(self, sub):
        import torch

        rows = np.arange(self.labels.shape[0]) if sub is None else np.asarray(sub)
        Xs = torch.from_numpy(self.pieces[rows]).to(self.dev)
        ys = torch.from_numpy(self.labels[rows]).to(self.dev)
        return [(Xs, ys, None)]

    def train_segments(self, f):
        return _ShardedLoss(self, f)

    def predict(self, coefs, intercepts, chunk_size):
        T, r = _tasks(), self.runner
        W = np.stack([w.detach().cpu().numpy() for w in coefs])
        b = np.stack([v.detach().cpu().numpy() for v in intercepts])
        by_shard = {}
        for p in self.pieces.blocks:
            by_shard.setdefault(p.shard, []).append(p)
        with r.timed("predict"):
            refs, order = [], []
            for s, ps in sorted(by_shard.items()):
                refs.append(r.submit(T.predict, W, b, self.affine, chunk_size, len(ps),
                                     *[p.ref for p in ps], *[p.fold for p in ps]))
                order.append(ps)
            got = r.get(refs, "predict")
        pred = np.empty((self.labels.shape[0], b.shape[1]), np.float32)
        for ps, probs in zip(order, got):
            for p, P in zip(ps, probs):
                pred[p.rows] = P
        return pred


class _ShardedLoss:
    """The data term of a fold model's objective: ``loss_sum(W, b)`` -> ``(sum of the
    cross-entropy over the training rows, dW, db)``, one task per shard, added on the
    driver (float64)."""

    def __init__(self, data, f):
        self.data = data
        self.f = f
        self.by_shard = {}
        for p, y in zip(data.pieces.blocks, data.y_refs):
            if p.fold != f:
                self.by_shard.setdefault(p.shard, []).append((p, y))

    def loss_sum(self, W, b):
        import torch

        T, r = _tasks(), self.data.runner
        Wn = W.detach().cpu().numpy()
        bn = b.detach().cpu().numpy()
        with r.timed("loss_grad"):
            refs = [r.submit(T.loss_grad, Wn, bn, self.data.affine, len(ps),
                             *[p.ref for p, _ in ps], *[y for _, y in ps])
                    for _, ps in sorted(self.by_shard.items())]
            got = r.get(refs, "loss_grad")
        loss = float(np.sum([g[0] for g in got], dtype=np.float64))
        gW = np.sum([g[1] for g in got], axis=0, dtype=np.float64).astype(np.float32)
        gb = np.sum([g[2] for g in got], axis=0, dtype=np.float64).astype(np.float32)
        return loss, torch.from_numpy(gW).to(W.device), torch.from_numpy(gb).to(W.device)


# --------------------------------------------------------------------------- #
# Ray tasks: plain module-level functions (workers import them by reference),
# wrapped with ``ray.remote`` on first use so importing this module needs no Ray.
# Each returns ``(value, meter report)``; several-output tasks return the report last.
# --------------------------------------------------------------------------- #
def _check_rows(X, rows, ignore):
    m = _start("validate", X.shape[0])
    fin = np.isfinite(X).all(axis=1)
    nz = (X != 0).any(axis=1)
    if ignore is not None:
        fin |= ignore
        nz |= ignore
    return (rows[~fin][:5].tolist(), rows[~nz][:5].tolist()), m.done()


def _shape(X):
    if X.ndim != 2 or X.dtype != np.float32:
        raise ValueError(f"feature blocks must be float32 (n, d) arrays; got {X.dtype} {X.shape}.")
    return tuple(X.shape), (("shape", X.shape[0], 0.0, 0.0, 0.0))


def _take_rows(X, pos):
    m = _start("gather", pos.size)
    return np.ascontiguousarray(X[pos]), m.done()


def _moments(X, chunk_size):
    from ..scoring.probabilities import column_moments

    m = _start("moments", X.shape[0])
    return column_moments(X, chunk_size), m.done()


def _transform(X, prep):
    m = _start("transform", X.shape[0])
    Z = prep.transform(X)
    return Z, (None, m.done())


def _scale(X, s):
    m = _start("scale", X.shape[0])
    return X * s, (None, m.done())


def _split_folds(X, fl, n_folds, prep):
    m = _start("split_folds", X.shape[0])
    if prep is not None:
        X = prep.transform(X)
    parts = [np.ascontiguousarray(X[fl == f]) for f in range(n_folds)]
    return (*parts, (None, m.done()))


def _linear(affine):
    import torch

    from ..scoring.probabilities import _LinearSoftmax

    if affine is None:
        return _LinearSoftmax(None)
    return _LinearSoftmax(None, torch.from_numpy(affine[0]), torch.from_numpy(affine[1]))


def _loss_grad(W, b, affine, n_pieces, *args):
    """Sum over the shard's training rows of the cross-entropy of ``lin(X; W, b)``, with its
    gradient (the same expression the single-process closure differentiates)."""
    import torch
    import torch.nn.functional as F

    fault_point("loss_grad")
    Xs, ys = args[:n_pieces], args[n_pieces:]
    m = _start("loss_grad", sum(x.shape[0] for x in Xs))
    lin = _linear(affine)
    Wt = torch.from_numpy(W).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True)
    loss = 0.0
    for X, y in zip(Xs, ys):
        loss = loss + F.cross_entropy(lin.logits_on(torch.from_numpy(X), Wt, bt), torch.from_numpy(y),
                                      reduction="sum")
    loss.backward()
    return (float(loss.detach()), Wt.grad.numpy(), bt.grad.numpy()), m.done()


def _predict(W, b, affine, chunk_size, n_pieces, *args):
    import torch

    Xs, fl = args[:n_pieces], args[n_pieces:]
    m = _start("predict", sum(x.shape[0] for x in Xs))
    lin = _linear(affine)
    out = []
    with torch.no_grad():
        for X, f in zip(Xs, fl):
            Wf, bf = torch.from_numpy(W[f]), torch.from_numpy(b[f])
            P = np.empty((X.shape[0], b.shape[1]), np.float32)
            for a in range(0, X.shape[0], chunk_size):
                P[a : a + chunk_size] = torch.softmax(
                    lin.logits_on(torch.from_numpy(X[a : a + chunk_size]), Wf, bf), dim=1).numpy()
            out.append(P)
    return out, m.done()


def _knn_pack(cent, n_lists, n_pieces, *args):
    """Unit rows of a shard sorted by (IVF list, global row):
    ``(X, gids, starts)`` (stays in the object store) and ``(counts per list, gids)``."""
    import torch

    from ..scoring.neighbors import _normalize_rows

    fault_point("knn_pack")
    Xs, rows = args[:n_pieces], args[n_pieces:]
    m = _start("knn_pack", sum(x.shape[0] for x in Xs))
    X = _normalize_rows(np.concatenate(Xs) if len(Xs) > 1 else Xs[0])
    gids = np.concatenate(rows)
    if cent is None:
        assign = np.zeros(X.shape[0], np.int64)
    else:
        Xt, ct = torch.from_numpy(X), torch.from_numpy(cent)
        assign = np.empty(X.shape[0], np.int64)
        for a in range(0, X.shape[0], 16_384):
            assign[a : a + 16_384] = (Xt[a : a + 16_384] @ ct.T).argmax(dim=1).numpy()
    order = np.lexsort((gids, assign))
    X = np.ascontiguousarray(X[order])
    gids = gids[order]
    counts = np.bincount(assign, minlength=n_lists)
    starts = np.concatenate([[0], np.cumsum(counts)])
    return (X, gids, starts), ((counts, gids), m.done())


def _kmeans_step(X, cent):
    """One spherical k-means step on a chunk of unit rows: per-list sums (L, d) float32 and
    counts (L,) of the rows assigned to their most similar centroid."""
    import torch

    m = _start("knn_kmeans", X.shape[0])
    Xt, ct = torch.from_numpy(X), torch.from_numpy(cent)
    assign = torch.empty(X.shape[0], dtype=torch.int64)
    for a in range(0, X.shape[0], 16_384):
        assign[a : a + 16_384] = (Xt[a : a + 16_384] @ ct.T).argmax(dim=1)
    sums = torch.zeros_like(ct).index_add_(0, assign, Xt)
    counts = torch.bincount(assign, minlength=ct.shape[0])
    return (sums.numpy(), counts.numpy()), m.done()


def _knn_pair(q, c, takes, k, same, block_size):
    """Top-k (padded with -inf) of the queries of packed shard ``q`` among their IVF
    candidates held by packed shard ``c`` (``same``: q is c, exclude self)."""
    import torch

    fault_point("knn_pair")
    Xq, _, sq = q
    Xc, gc, sc = c
    m = _start("knn_pair", Xq.shape[0])
    n_q = Xq.shape[0]
    vals = np.full((n_q, k), -np.inf, np.float32)
    ids = np.full((n_q, k), -1, np.int64)
    Xqt, Xct = torch.from_numpy(Xq), torch.from_numpy(Xc)
    for lst in range(len(sq) - 1):
        q0, q1 = int(sq[lst]), int(sq[lst + 1])
        if q1 == q0:
            continue
        cand = [np.arange(sc[l], sc[l + 1]) for l in takes[lst] if sc[l + 1] > sc[l]]
        if not cand:
            continue
        cand = np.concatenate(cand)
        C = Xct[torch.from_numpy(cand)]
        kk = min(k, cand.size)
        bs = max(1, min(block_size, (1 << 26) // max(cand.size, 1)))
        for a in range(0, q1 - q0, bs):
            b = min(q1 - q0, a + bs)
            sims = Xqt[q0 + a : q0 + b] @ C.T
            if same:  # the query's own list comes first among its candidates: self
                sims[torch.arange(b - a), torch.arange(a, b)] = -np.inf
            v, j = torch.topk(sims, kk, dim=1, largest=True, sorted=True)
            vals[q0 + a : q0 + b, :kk] = v.numpy()
            ids[q0 + a : q0 + b, :kk] = gc[cand[j.numpy()]]
    return (vals, ids), m.done()


def _knn_merge(k, *pairs):
    """Merge the per-data-shard top-k lists of one query shard by top-k."""
    import torch

    m = _start("knn_merge", pairs[0][0][0].shape[0])
    vals = torch.from_numpy(np.concatenate([p[0][0] for p in pairs], axis=1))
    ids = np.concatenate([p[0][1] for p in pairs], axis=1)
    v, j = torch.topk(vals, k, dim=1, largest=True, sorted=True)
    idx = np.take_along_axis(ids, j.numpy(), axis=1)
    return (idx, (1.0 - v).clamp_(min=0.0).numpy()), [p[1] for p in pairs] + [m.done()]


def _pieces(n_pieces, args):
    """``(X blocks, label blocks)`` from a task's ``(*X refs, *label arrays)`` arguments."""
    return args[:n_pieces], args[n_pieces:]


def _class_sums(K, n_pieces, *args):
    Xs, ys = _pieces(n_pieces, args)
    m = _start("leverage_sums", sum(x.shape[0] for x in Xs))
    out = np.zeros((K, Xs[0].shape[1]), np.float64)
    for X, y in zip(Xs, ys):
        for c in np.unique(y):
            out[c] += X[y == c].sum(axis=0, dtype=np.float64)
    return out, m.done()


def _class_grams(mu, big, n_pieces, *args):
    """Per class present: the float64 sum over the shard's pieces of ``(X_c - mu_c)^T (X_c - mu_c)``."""
    fault_point("class_grams")
    Xs, ys = _pieces(n_pieces, args)
    m = _start("leverage_gram", sum(x.shape[0] for x in Xs))
    classes = sorted({int(c) for y in ys for c in np.unique(y) if big[c]})
    d = Xs[0].shape[1]
    G = np.zeros((len(classes), d, d), np.float64)
    for i, c in enumerate(classes):
        for X, y in zip(Xs, ys):
            sel = y == c
            if sel.any():
                Xc = X[sel] - mu[c]
                G[i] += (Xc.T @ Xc).astype(np.float64)
    return (classes, G), m.done()


def _class_leverage(mu, bases, n_pieces, *args):
    from ..scoring.importance import leverage_of_rows

    Xs, ys = _pieces(n_pieces, args)
    m = _start("leverage_rows", sum(x.shape[0] for x in Xs))
    out = []
    for X, y in zip(Xs, ys):
        h = np.ones(X.shape[0], np.float32)
        for c in np.unique(y):
            basis = bases.get(int(c))
            if basis is not None:
                sel = y == c
                h[sel] = leverage_of_rows(X[sel] - mu[c], basis)
        out.append(h)
    return out, m.done()


def _start(stage, rows):
    """Start a task's :class:`.cluster.Meter`; quiet torch's warning about the read-only
    (zero-copy, object-store) arrays the task wraps without writing to them."""
    import warnings

    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    limit_threads(1)  # each task reserves one CPU
    return Meter(stage, rows)


_TASK_FUNCS = dict(
    check_rows=(_check_rows, 1), shape=(_shape, 1), take_rows=(_take_rows, 1), moments=(_moments, 1),
    transform=(_transform, 2), scale=(_scale, 2), split_folds=(_split_folds, 1),
    loss_grad=(_loss_grad, 1), predict=(_predict, 1), knn_pack=(_knn_pack, 2),
    kmeans_step=(_kmeans_step, 1), knn_pair=(_knn_pair, 1), knn_merge=(_knn_merge, 1), class_sums=(_class_sums, 1),
    class_grams=(_class_grams, 1), class_leverage=(_class_leverage, 1),
)
_TASKS = None


class _Namespace:
    pass


def _tasks():
    """The Ray remote versions of the task functions (one CPU each)."""
    global _TASKS
    if _TASKS is None:
        import ray

        T = _Namespace()
        for name, (fn, n_out) in _TASK_FUNCS.items():
            setattr(T, name, ray.remote(num_cpus=1, num_returns=n_out)(fn))
        _TASKS = T
    return _TASKS
