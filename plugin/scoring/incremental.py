"""Incremental re-scoring after relabelling / removing samples.

``update_label_issues`` reuses everything the change does not invalidate:

* fold assignment: kept as is (a full recompute must pass ``folds=result.fold_assignments`` to be
  comparable - fold assignment is a random choice, not a function of the labels);
* logistic-regression fold models (``refit=True``; ``solver="auto"``, the default, is
  ``"newton"`` up to N x d' x K x n_repeats = 1e8 and ``"subsampled"`` above); newton: the exact response
  of the previous models to the change - Newton-CG steps from the previous weights on the new
  objective tilted by the gradient the previous fit stopped at, all folds batched in one pass
  over the rows (:mod:`~label_audit.scoring.newton`); folds whose training set did not change
  keep their model.  ``converge=True`` solves the new objective itself.  subsampled: the same
  target with no pass over all rows but the predictions - the untouched rows' gradient is
  linearised around the previous weights with a Hessian estimated on ``hessian_rows`` rows
  (sampled by uncertainty and norm), the relabelled rows and the 1024 rows of largest norm
  (whose loss is far from quadratic over the step) are evaluated exactly, and Newton steps with a
  line search solve that model (:func:`~.newton.subsampled_newton_refit_fold_models`).  It
  gives up the untouched rows' curvature change, which is second order in the (small) weight
  change at this size: on 12k x 32 x 10 the true fold gradients keep 0.16 of the change's
  gradient (Newton-CG: 0.03), and the scores stay within 0.02 of the full recompute.
  ``solver="lbfgs"`` is the former warm-started L-BFGS refit (``max_iter`` iterations per
  fold); ``refit=False`` keeps the old probabilities;
* MLP fold models (results where ``score_label_issues(model=...)`` used the MLP): each fitted
  fold MLP trains ``mlp_epochs`` (3) more epochs on the new labels from its weights and
  optimizer state (``mlp_update="finetune"``,
  :func:`~label_audit.scoring.mlp.finetune_fold_mlps`), or all are fitted again from scratch
  (``mlp_update="refit"``: exactly a full recompute's MLP when only labels changed);
* kNN graph: relabels keep the graph (only neighbour votes change); a row that lost neighbours
  to removals takes the next ones from its ``KNN_SPARES`` (5) spare neighbours (found by the
  full score's search and kept in ``model_state``; exact, no search) while enough are left; the
  rows that ran out are repaired: by an exact search when it is cheap
  (``knn_repair="auto"``), else among the neighbours of their neighbours (the k + k^2 two-hop
  candidates of the old graph, exact cosine similarities; :func:`repair_knn_two_hop`);
* leverage: recomputed only for the classes whose membership changed;
* fusion, flags, confident joint, noise matrix: recomputed (O(N K)); with
  ``knn_weight="auto"`` the kNN weight is chosen again from the updated probabilities by the
  rule a full recompute applies (no memory of the previous choice).

Tolerance.  The reference is a full recompute with the same folds,
``score_label_issues(labels[kept], features[kept], folds=result.fold_assignments[:, kept])``.  That anchor is
itself reproducible only up to its optimisation error: its fold models stop after
``fold_max_iter`` L-BFGS iterations from a random warm-start subsample, and a second full
recompute that differs only in that subsample (``random_state + 1``, same folds) disagrees
with the first by max |delta label_issue_score| 0.039 (1% changed) / 0.024 (0.1%) on
synthetic 30k x 128 x 20 (``bench/incremental.py --floor``).  The stated tolerance of the
update against the anchor: Spearman rank correlation of ``label_issue_score`` >= 0.99 and
``is_label_issue`` agreeing on >= 99% of the rows (tested on the digits in
``tests/test_scoring_incremental.py``, 1% fixed + 1% removed, also for PCA features and two
chained rounds).  The largest single-row difference is usually below 0.05 but not always: on
the digits (1% fixed + 1% removed, pair and uniform noise, 24 seeds, one-off script; the
anchor reproduces itself exactly there) it was <= 0.05 in 21/24 rounds and 0.064/0.071/0.121
in the others (Spearman >= 0.9999 and flags >= 99.89% everywhere); ``converge=True`` with 8
Newton steps: 23/24, worst 0.058.  On larger data it is about the anchor's own run-to-run
difference.  The PCA projection and the kNN space are those of the first score (a full
recompute refits the PCA on the kept rows).  Independently of
the anchor, ``tests/test_scoring_incremental.py`` checks the refit's definition with autograd:
after three Newton steps the new fold gradients equal the previous fit's within 5% of the
change's gradient, and ``converge=True`` matches fold models refined by L-BFGS to the optimum
within 0.01 in probability.  The kNN graph after removals equals the full recompute's exactly
as long as no row lost more than ``KNN_SPARES`` neighbours (tested); before the spares, the
two-hop repair missed the exact new neighbour in about half the repaired rows, which was the
largest part of the update's max |delta| (0.055 -> 0.020 at 30k, 1%).

Measured (``python bench/incremental.py --sizes 30000x128x20 --seeds 0,1,2 --floor --lbfgs
--threads 1``, synthetic, 10% noise, 1 torch/BLAS thread, anchor timed in the same run, update =
median of 3; the machine is a shared 2-core VM, so compare ratios within a run).  The full score
averages 5 repeats of the out-of-fold fit at this size (``n_repeats="auto"``), and the update
refits each.  Seeds 0 / 1 / 2:

======  =================  ================  ==================  ======================
change  method             speedup           max|d|              Spearman
======  =================  ================  ==================  ======================
1%      full, seed + 1     1.0 / 0.9 / 1.1   .043 / .023 / .026  .9998 / .9999 / .9999
1%      subsampled (auto)  20.0 / 22.2 / 16  .027 / .038 / .036  .9997 / .9997 / .9997
1%      newton             5.9 / 6.3 / 4.2   .033 / .030 / .030  .9999 / .9999 / .9999
1%      refit=False        113 / 115 / 95    .183 / .118 / .143  .9910 / .9887 / .9941
0.1%    full, seed + 1     1.0 / 1.0 / 1.0   .021 / .022 / .021  .9999 / .9999 / .9999
0.1%    subsampled (auto)  26.2 / 22.7 / 16  .016 / .024 / .021  .9999 / .9999 / .9999
0.1%    newton             6.4 / 6.2 / 5.5   .017 / .022 / .021  1.0000 / .9999 / .9999
0.1%    refit=False        122 / 108 / 98    .073 / .056 / .041  .9949 / .9960 / .9994
======  =================  ================  ==================  ======================

(1% = 300 wrong labels fixed and 300 other samples removed; the full recompute took
15.1-19.4 s.)  Before the largest-norm rows were evaluated exactly and the Hessian sample was
weighted by norm, the subsampled refit missed the tolerance twice here: 0.198 (seed 2, 1%: rows
far from the data, linearised) and 0.062 (seed 0, 0.1%: the kNN weight rule read the update's
held-out accuracies near a tie, 0.262 against the anchor's 0.196).  With one repeat (an earlier
round) Newton-CG was 11.9x / 15.1x here and "auto" picked it.  The kNN stage costs ~0.02 s with
the spare neighbours; the block preconditioner is built once by the full score
(``state["newton_preconditioner"]``) and shared by the repeats.  At 100k x 256 x 80
(one repeat, "auto" = subsampled) see the README's table.
"""

from __future__ import annotations

import time

import numpy as np

from ..progress import within
from .engine import LabelIssueResult, _finish
from .importance import class_conditional_leverage
from .mlp import MLP_UPDATE_EPOCHS, check_epochs
from .probabilities import (is_integral, refit_fold_models, repeat_states, validate_features,
                            validate_labels)

__all__ = ["update_label_issues"]

SOLVERS = ("auto", "newton", "subsampled", "lbfgs")

#: solver="auto": Newton-CG up to this many N x d' x K x n_repeats (with one repeat, 30k x 128 x
#: 20 = 7.7e7: 11.9x, max |d| 0.022 against the full recompute, whose own run-to-run difference
#: is 0.039; the subsampled refit there: 27.5x but 0.044; with the five repeats "auto" gives at
#: that size, 3.8e8, Newton-CG is 5.4x and the subsampled refit 20.2x), the subsampled-Hessian
#: refit above (100k x 256 x 80 = 2.0e9, one repeat: 12.3x vs Newton-CG 2.3x, equally close to
#: the full recompute)
NEWTON_MAX_SIZE = 1e8


def auto_refit_solver(n: int, coef, n_repeats: int = 1) -> str:
    """The refit ``solver="auto"`` uses for ``n`` rows, fold weights ``coef`` (n_folds, d', K)
    and ``n_repeats`` repeats of the out-of-fold fit (each refitted): 'newton' when
    ``n * d' * K * n_repeats <= NEWTON_MAX_SIZE``, else 'subsampled'.  The exact refit costs
    about a dozen passes over the rows per repeat, while the full score shares its warm start
    between the repeats: at 30k x 128 x 20 with 5 repeats Newton-CG was 5.6x faster than a full
    recompute (14.9 s), the subsampled refit 24.9x."""
    shape = np.shape(coef)
    work = float(n) * shape[1] * shape[2] * max(int(n_repeats), 1)
    return "newton" if work <= NEWTON_MAX_SIZE else "subsampled"


KNN_REPAIRS = ("auto", "exact", "two_hop")
#: how an update treats a result whose model is the MLP (``mlp_update``)
MLP_UPDATES = ("finetune", "refit")
# multiply-adds below which knn_repair="auto" always searches exactly (~0.1 s on one core)
_EXACT_REPAIR_BUDGET = 2e8


def _refit_one_repeat(solver, X, labels, state, result, keep, touched, rem, *, converge, newton_steps,
                      newton_rtol, cg_max_iter, cg_correction_iter, cg_tol, hessian_rows, max_iter, device,
                      random_state, exact_rows=1_024, sq_norms=None):
    """Refit the fold models of one repeat (``state`` from :func:`~.probabilities.repeat_states`):
    (probabilities of the kept rows, new model state with that repeat's kept 'folds', solver
    statistics or None)."""
    if solver not in ("newton", "subsampled"):
        P_new, ms = refit_fold_models(X, labels, state, keep=keep, max_iter=max_iter, device=device)
        return P_new, ms, None
    from .newton import newton_refit_fold_models, subsampled_newton_refit_fold_models

    n_folds = np.asarray(state["coef"]).shape[0]
    active = folds_with_changed_training_set(state["folds"], touched, n_folds)
    common = dict(old_labels=result.labels, keep=keep, removed_with_features=rem,
                  folds_to_refit=active, device=device, random_state=random_state,
                  newton_rtol=newton_rtol, cg_max_iter=cg_max_iter, cg_correction_iter=cg_correction_iter,
                  cg_tol=cg_tol)
    if solver == "newton":
        return newton_refit_fold_models(X, labels, state, converge=converge,
                                        newton_steps=3 if newton_steps is None else newton_steps, **common)
    return subsampled_newton_refit_fold_models(
        X, labels, state, hessian_rows=hessian_rows, exact_rows=exact_rows, sq_norms=sq_norms,
        newton_steps=2 if newton_steps is None else newton_steps,
        hessian_probs=np.asarray(result.pred_probs)[keep], **common)


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
        if not is_integral(sel):
            raise ValueError(f"{name} must be row indices (ints) or a bool mask of shape ({n},); "
                             f"got {sel.dtype} values such as {sel.ravel()[:3].tolist()}.")
        if sel.min() < 0 or sel.max() >= n:
            raise ValueError(f"{name} indices must be in [0, {n}).")
        m[sel.astype(np.int64)] = True
    return m


def folds_with_changed_training_set(folds, touched, n_folds):
    """Folds whose training rows (or their labels) changed: fold f changes when a touched row
    (relabelled or removed) lies outside f.

    Parameters
    ----------
    folds : int array (N,), fold of every row.   touched : bool (N,).   n_folds : int.

    Returns
    -------
    int64 array, sorted subset of ``range(n_folds)``.
    """
    hit = np.unique(np.asarray(folds)[np.asarray(touched, bool)])
    if hit.size == 0:
        return np.zeros(0, np.int64)
    if hit.size >= 2:
        return np.arange(n_folds, dtype=np.int64)
    return np.setdiff1d(np.arange(n_folds), hit).astype(np.int64)


def repair_knn_two_hop(features, old_indices, keep, rows, *, block_size: int = 1024):
    """New k nearest neighbours of ``rows`` after removals, searched within two hops of the old graph.

    For every query row i the candidates are its old neighbours and their old neighbours
    (``k + k^2`` rows of the old graph, including the neighbours of removed neighbours; removed
    rows, duplicates and i itself excluded); the k with the largest cosine similarity to i are
    kept.  The result is exact whenever i's new k neighbours all lie within two hops of i in the
    old graph (the replacement of a removed neighbour is almost always i's old (k+1)-th
    neighbour, which is a neighbour of one of its neighbours).

    Parameters
    ----------
    features : float array (M, d), the kept rows (non-zero).
    old_indices : int array (N, k), the old graph (indices into the N old rows).
    keep : int array (M,), increasing, the old row of every kept row.
    rows : int array (Q,), kept-row indices to repair.

    Returns
    -------
    (indices (Q, k) int64 into the kept rows, distances (Q, k) float32), sorted by increasing
    distance; None when a row has fewer than k candidates (use an exact search then).
    """
    import torch

    old = np.asarray(old_indices)
    n, k = old.shape
    keep = np.asarray(keep, np.int64)
    remap = np.full(n, -1, np.int64)
    remap[keep] = np.arange(keep.size)
    rows = np.asarray(rows, np.int64)
    out_i = np.empty((rows.size, k), np.int64)
    out_d = np.empty((rows.size, k), np.float32)
    for a in range(0, rows.size, block_size):
        q = rows[a : a + block_size]
        first = old[keep[q]]  # (b, k) old rows
        cand = remap[np.concatenate([first, old[first].reshape(q.size, k * k)], axis=1)]
        cand[cand == q[:, None]] = -1
        cand.sort(axis=1)
        cand[:, 1:][cand[:, 1:] == cand[:, :-1]] = -1  # duplicates
        valid = cand >= 0
        if (valid.sum(axis=1) < k).any():
            return None
        xq = np.asarray(features[q], np.float32)
        xq /= np.maximum(np.linalg.norm(xq, axis=1, keepdims=True), 1e-12)
        xc = np.asarray(features[np.where(valid, cand, 0).ravel()], np.float32).reshape(q.size, cand.shape[1], -1)
        sims = np.einsum("bcd,bd->bc", xc, xq) / np.maximum(np.linalg.norm(xc, axis=2), 1e-12)
        sims[~valid] = -np.inf
        vals, pos = torch.topk(torch.from_numpy(sims), k, dim=1, largest=True, sorted=True)
        out_i[a : a + block_size] = np.take_along_axis(cand, pos.numpy(), axis=1)
        out_d[a : a + block_size] = (1.0 - vals).clamp_(min=0.0).numpy()
    return out_i, out_d


def update_label_issues(
    result: LabelIssueResult,
    features,
    labels,
    *,
    changed=None,
    removed=None,
    refit: bool = True,
    solver: str = "auto",
    max_iter: int = 10,
    converge: bool = False,
    newton_steps=None,
    newton_rtol: float = 0.1,
    cg_max_iter: int = 5,
    cg_tol: float = 0.01,
    knn_repair: str = "auto",
    mlp_update: str = "finetune",
    mlp_epochs: int = MLP_UPDATE_EPOCHS,
    hessian_rows: int = 8_192,
    exact_rows: int = 1_024,
    cg_correction_iter: int = 3,
    device=None,
    progress_callback=None,
) -> LabelIssueResult:
    """Re-score after relabelling and/or removing samples, reusing ``result``.

    Parameters
    ----------
    result : LabelIssueResult from :func:`score_label_issues` (or a previous update).
    features : the same (N, d) features that produced ``result`` (rows aligned with ``result``);
        may be None when ``result`` was computed from ``pred_probs`` only.  Rows of removed
        samples are read only by the Newton refit, to take their contribution out of the fold
        models; an all-zero row is a placeholder (the sample is gone): then the models keep
        that sample's pull (it stays in the previous fit's gradient, see
        :func:`~label_audit.scoring.newton.newton_refit_fold_models`).
    labels : int array (N,), the new labels for the rows of ``result`` (values for removed rows
        are ignored).
    changed : indices or bool mask (N,), optional; rows whose label changed (default: inferred
        as ``labels != result.labels``).
    removed : indices or bool mask (N,), optional; rows to drop.
    refit : bool, default True; refit the fold models (only when ``result`` owns them, i.e. it
        was computed from features without ``pred_probs``).  False keeps the old probabilities.
    solver : {'auto', 'newton', 'subsampled', 'lbfgs'}, default 'auto'; how to refit (see module
        docstring); 'auto' = 'newton' when N x d' x K x n_repeats <= NEWTON_MAX_SIZE (1e8), else 'subsampled'
        (measured).  A result whose model is the MLP (``params["model_used"] == "mlp"``, see
        ``score_label_issues(model=...)``) ignores it and follows ``mlp_update``.
    mlp_update : {'finetune', 'refit'}, default 'finetune'; results whose model is the MLP:
        'finetune' continues training each fitted fold MLP on the new labels for ``mlp_epochs``
        epochs (:func:`~label_audit.scoring.mlp.finetune_fold_mlps`; measured in the README:
        17-24x faster than a full recompute on Fashion-MNIST 10k, its ranking closer to it than a
        full recompute with another seed is); 'refit' fits them again from scratch on the same
        folds with the same seed, which is what a full recompute's MLP gives (at the cost of one:
        ``model='auto'`` fits the MLP up to N x d' = 10k x 256, where that takes 10 s to 2 min).
    mlp_epochs : int >= 1, default 3; epochs of ``mlp_update='finetune'``.
    max_iter : int, default 10; L-BFGS iterations per fold model (``solver='lbfgs'``).
    converge : bool, default False; ``solver='newton'`` target: False = the exact response of
        the previous models to the change (they keep the optimisation gap the previous fit
        left); True = the optimum of the new objective (more Newton steps; use
        ``newton_steps`` >= 4).
    newton_steps : int or None, default None; at most this many Newton steps (None: 3 for
        'newton', whose later steps start in the first one's Krylov space and add 3 CG
        iterations; 2 for 'subsampled', where a third step measured no closer to the full
        recompute at 100k x 256 x 80, 0.1% changed: max |delta| 0.120 vs 0.119, 1.3 s slower).
    newton_rtol : float, default 0.1; no further Newton step once every fold's gradient is below
        this fraction of its gradient before the first step (0.3 saves the second step on small
        changes but measured max |delta| 0.060 instead of 0.036 against a full recompute on the
        digits with 1% changed).
    cg_max_iter : int, default 5; conjugate-gradient iterations of the first Newton step (10
        measured no closer to the full recompute at 30k x 128 x 20, 1.2x slower).
    cg_correction_iter : int, default 3; CG iterations of the Newton steps after the first.
    cg_tol : float, default 0.01; CG stops at this residual norm relative to the gradient norm.
    hessian_rows : int, default 8192; ``solver='subsampled'``: about this many kept rows, drawn
        with probability growing with the uncertainty of their previous out-of-fold
        prediction times their squared norm, estimate the untouched rows' Hessian
        (:func:`~.newton._hessian_sample`).
    exact_rows : int, default 1024; ``solver='subsampled'``: the untouched rows of largest norm
        whose loss is evaluated exactly at every step, like the relabelled rows (linearised,
        rows far from the data moved by up to 0.74 in probability at 30k x 128 x 20).
    knn_repair : {'auto', 'exact', 'two_hop'}, default 'auto'; how rows that lost a neighbour
        to a removal find a new one: 'exact' searches all kept rows (cost: repaired rows x N x d),
        'two_hop' searches the neighbours of their neighbours (:func:`repair_knn_two_hop`);
        'auto' is exact while at most ``2 * n_folds * K`` rows need repair (then the exact
        search costs about one pass of the refit) or the search costs < 2e8 multiply-adds,
        else two-hop.
    device : torch device for the refit (default 'cuda' when available).
    progress_callback : callable, optional; called as ``progress_callback(fraction, stage)`` at
        each stage ("Refitting the fold models", then one report per repeat of the out-of-fold
        fit ("Refitting the fold models (repeat 2 of 5)") or per fold MLP fitted again, within
        [0, 0.7]; "Updating the neighbours", "Updating leverage", "Fusing the scores and flags",
        then 1.0), ``fraction`` non-decreasing in [0, 1].

    Returns
    -------
    LabelIssueResult for the kept rows (``index`` maps them to the original input rows).
    ``params["update_solver"]`` says which path refitted the models ('newton', 'subsampled',
    'lbfgs', 'mlp_finetune', 'mlp' (fitted again) or 'none'); ``model_state["update_info"]`` holds the solver statistics and the seconds of
    each stage.
    """
    t_start = time.perf_counter()
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}; got {solver!r}.")
    if knn_repair not in KNN_REPAIRS:
        raise ValueError(f"knn_repair must be one of {KNN_REPAIRS}; got {knn_repair!r}.")
    if mlp_update not in MLP_UPDATES:
        raise ValueError(f"mlp_update must be one of {MLP_UPDATES}; got {mlp_update!r}.")
    check_epochs(mlp_epochs, "mlp_epochs")  # before any work
    for name, value in (("hessian_rows", hessian_rows), ("exact_rows", exact_rows)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative int (a number of rows); got {value!r}.")
    n = len(result)
    K = len(result.classes)
    removed_m = _as_mask(removed, n, "removed")
    if removed_m.any():  # removed rows' labels are ignored: any placeholder (-1, None) is fine
        labels = np.array(labels, copy=True)  # ints stay ints; lists with None -> object
        if labels.shape[:1] == (n,):
            labels[removed_m] = result.labels[removed_m]
    labels, _ = validate_labels(labels, K, n_samples=n)
    relabelled = (labels != result.labels) & ~removed_m
    changed_m = _as_mask(changed, n, "changed") if changed is not None else relabelled
    keep = np.flatnonzero(~removed_m)
    if keep.size == 0:
        raise ValueError("All samples removed: nothing left to score.")
    new_labels = labels[keep]
    if np.unique(new_labels).size < 2:
        raise ValueError("After the update only one class has samples: need at least two.")
    params = dict(result.params)
    state = result.model_state or {}
    if params.get("C") == "auto" and "C" in state and keep.size != n:
        # C="auto" holds the per-sample L2 strength: a full recompute on the kept rows would
        # use auto_C(kept rows), so the refit does too (removals touch every fold's training set)
        from .probabilities import auto_C

        state = dict(state)
        state["C"] = auto_C(keep.size, np.asarray(state["coef"]).shape[0])
        params["C_used"] = state["C"]
    info = {"seconds": {}}
    seconds = info["seconds"]

    X = None
    if features is not None:
        X = validate_features(features, n, ignore_rows=removed_m)

    # features of the kept rows in the kNN / leverage space (computed at most once)
    cache = {}

    def knn_rows():
        if "Xk" not in cache:
            from .engine import _knn_features

            Xkeep = X if keep.size == n else np.asarray(X)[keep]
            cache["Xk"] = np.asarray(_knn_features(Xkeep, state.get("knn_preprocessor"), params["max_dim"],
                                                   params["random_state"])[0])
        return cache["Xk"]

    report = progress_callback or (lambda f, stage: None)

    # 1) model probabilities
    t0 = time.perf_counter()
    report(0.0, "Refitting the fold models")
    P = result.pred_probs
    new_state = dict(state)
    touched = relabelled | changed_m | removed_m
    used = "none"
    if refit and state.get("model") == "mlp" and touched.any():
        # the MLP (score_label_issues(model=...) chose it): its fold MLPs continue training on the
        # new labels, or are fitted again on the same fold assignments with the same seed (what a
        # full recompute's MLP gives).  The logistic fold models are not refitted (they are not
        # used while the model is the MLP)
        if X is None:
            raise ValueError("features are required to refit the fold models.")
        from .engine import fold_arrays
        from .mlp import finetune_fold_mlps, mlp_repeated_probabilities

        Z = state["preprocessor"].transform_rows(X, keep)
        kept_folds = [f[keep] for f in fold_arrays(state)]
        if mlp_update == "finetune" and state.get("mlp_models"):
            P, models = finetune_fold_mlps(state["mlp_models"], Z, new_labels, kept_folds, n_classes=K,
                                           epochs=mlp_epochs, random_state=params.get("random_state", 0))
            used = "mlp_finetune"
        else:
            P, models = mlp_repeated_probabilities(Z, new_labels, kept_folds, n_classes=K,
                                                   random_state=params.get("random_state", 0), return_models=True,
                                                   progress_callback=within(report, 0.0, 0.7))
            used = "mlp"
        new_state["mlp_models"] = models
    elif refit and "coef" in state and touched.any():
        if X is None:
            raise ValueError("features are required to refit the fold models.")
        # every repeat of the out-of-fold fit has its own fold models: each is refitted the same
        # way and the probabilities are averaged again, as the full score does
        repeats = repeat_states(state)
        if solver == "auto":
            solver = auto_refit_solver(n, state["coef"], len(repeats))
        rem = np.flatnonzero(removed_m)
        if rem.size and solver in ("newton", "subsampled"):  # removed rows whose features were given
            Xr = np.asarray(X[rem], np.float32)
            rem = rem[np.isfinite(Xr).all(axis=1) & (Xr != 0).any(axis=1)]
        sq_norms = None
        if solver == "subsampled":  # the repeats share the preprocessor: one pass for all
            from .newton import _row_sq_norms

            sq_norms = _row_sq_norms(state["preprocessor"], X)[keep]
        P_sum, refitted = None, []
        for rep_i, rep_state in enumerate(repeats):
            if len(repeats) > 1:  # a repeat's refit is the update's longest step at scale
                report(0.7 * rep_i / len(repeats),
                       "Refitting the fold models (repeat %d of %d)" % (rep_i + 1, len(repeats)))
            P_new, ms, rep_info = _refit_one_repeat(
                solver, X, labels, rep_state, result, keep, touched, rem, converge=converge,
                newton_steps=newton_steps, newton_rtol=newton_rtol, cg_max_iter=cg_max_iter,
                cg_correction_iter=cg_correction_iter, cg_tol=cg_tol, hessian_rows=hessian_rows,
                exact_rows=exact_rows, sq_norms=sq_norms,
                max_iter=max_iter, device=device, random_state=params.get("random_state", 0))
            if rep_info is not None:
                info.setdefault("newton", rep_info)  # repeat 0's statistics
                if len(repeats) > 1:
                    info.setdefault("newton_repeats", []).append(rep_info)
            P_sum = P_new if P_sum is None else P_sum + P_new
            refitted.append(ms)
        used = solver
        new_state.update(refitted[0])
        if len(repeats) > 1:
            P_sum /= np.float32(len(repeats))
            new_state["more_repeats"] = [dict(folds=ms["folds"], coef=ms["coef"], intercept=ms["intercept"])
                                         for ms in refitted[1:]]
        P = P_sum
    else:
        P = P[keep]
    if used in ("none", "mlp", "mlp_finetune") and state.get("more_repeats"):
        # fold models not refitted: keep every repeat's fold array aligned with the rows
        new_state["more_repeats"] = [dict(rep, folds=np.asarray(rep["folds"])[keep])
                                     for rep in state["more_repeats"]]
    folds = None if result.folds is None else result.folds[keep]
    if "folds" in new_state and folds is not None:
        new_state["folds"] = folds  # keep the state's fold array aligned with the rows
    seconds["refit"] = time.perf_counter() - t0

    # 2) kNN graph
    t0 = time.perf_counter()
    report(0.7, "Updating the neighbours")
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
        spare_i, spare_d = state.get("spare_neighbors"), state.get("spare_distances")
        if spare_i is not None and np.asarray(spare_i).shape[0] == n:
            # the (k + spares) nearest old neighbours, minus the removed ones, in distance order:
            # the first k are the exact new neighbours whenever at least k are left
            lost = (nbr < 0).any(axis=1)
            spare_rows = np.asarray(spare_i)[keep]  # -1 = a spare used up in an earlier round
            cand_i = np.concatenate([nbr, np.where(spare_rows >= 0, remap[np.maximum(spare_rows, 0)], -1)], axis=1)
            cand_d = np.concatenate([dist, np.asarray(spare_d, np.float32)[keep]], axis=1)
            order = np.argsort(cand_i < 0, axis=1, kind="stable")
            cand_i = np.take_along_axis(cand_i, order, axis=1)
            cand_d = np.take_along_axis(cand_d, order, axis=1)
            cand_d[cand_i < 0] = np.inf
            nbr, dist = np.ascontiguousarray(cand_i[:, :k]), np.ascontiguousarray(cand_d[:, :k])
            new_state["spare_neighbors"] = np.ascontiguousarray(cand_i[:, k:])
            new_state["spare_distances"] = np.ascontiguousarray(cand_d[:, k:])
            info["knn_from_spares"] = int(np.count_nonzero((cand_i[:, :k] >= 0).all(axis=1) & lost))
        broken = np.flatnonzero((nbr < 0).any(axis=1))
        info["knn_repaired"] = int(broken.size)
        if broken.size:
            if X is None:
                raise ValueError("features are required to repair the kNN graph after removals.")
            Xk = knn_rows()
            n_folds = 1 if result.folds is None else int(result.folds.max()) + 1
            fixed = None
            exact_cheap = broken.size <= max(2 * n_folds * K, _EXACT_REPAIR_BUDGET / (keep.size * Xk.shape[1]))
            if knn_repair == "two_hop" or (knn_repair == "auto" and not exact_cheap):
                fixed = repair_knn_two_hop(Xk, old_nbr, keep, broken)
            if fixed is None:  # exact (or some row has fewer than k two-hop candidates left)
                from .neighbors import _exact_knn, _normalize_rows

                fixed = _exact_knn(_normalize_rows(Xk), k, broken, block_size=2048)
                info["knn_repair"] = "exact"
            else:
                info["knn_repair"] = "two_hop"
            nbr[broken], dist[broken] = fixed
            if "spare_neighbors" in new_state:  # no spares left for the rows searched again
                new_state["spare_neighbors"][broken] = -1
                new_state["spare_distances"][broken] = np.inf
    seconds["knn"] = time.perf_counter() - t0

    # 3) leverage for touched classes
    t0 = time.perf_counter()
    report(0.85, "Updating leverage")
    leverage = None
    if params.get("compute_importance", True) and X is not None and np.isfinite(result.leverage).all():
        touched_classes = np.unique(np.concatenate([result.labels[touched], labels[touched & ~removed_m]]))
        if touched_classes.size:
            leverage = class_conditional_leverage(
                knn_rows(), new_labels, n_classes=K, classes_to_update=touched_classes.tolist(),
                previous=result.leverage[keep]
            )
        else:
            leverage = result.leverage[keep]
    seconds["leverage"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    report(0.95, "Fusing the scores and flags")
    params["update_solver"] = used
    new_state["update_info"] = info
    out = _finish(
        new_labels, K, result.classes, P, None, nbr, dist, leverage, folds, result.index[keep], params, new_state
    )
    seconds["finish"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    report(1.0, "Updated %d samples" % len(out))
    return out
