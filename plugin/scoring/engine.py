"""``score_label_issues``: one call from (labels, features and/or pred_probs) to per-sample scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

import numbers

import numpy as np

from .confident_learning import (
    estimate_py_and_noise_matrices_from_probabilities,
    get_normalized_margin_for_each_label,
    get_self_confidence_for_each_label,
)
from .fusion import (
    ambiguity_flags,
    choose_flag_margin,
    choose_knn_weight,
    choose_margin_weight,
    flag_label_issues,
    fuse_probabilities,
    noise_concentration,
    outlier_flags,
    own_and_best_other,
    scores_from_own_and_best_other,
    outlier_scores,
)
from .importance import class_conditional_leverage, logistic_sensitivity
from .mlp import choose_model, mlp_candidate_reason, mlp_repeated_probabilities
from ..progress import within
from .neighbors import knn_agreement, knn_class_probabilities, knn_search
from .probabilities import (Preprocessor, effective_max_dim, out_of_fold_probabilities, resolve_C,
                            resolve_n_repeats, validate_features, validate_labels)

__all__ = ["LabelIssueResult", "score_label_issues"]

#: neighbours beyond k found by the kNN search and kept in ``model_state`` ("spare_neighbors",
#: "spare_distances", (N, KNN_SPARES)): the incremental update fills the place of a removed
#: neighbour from them, exactly, without a search
KNN_SPARES = 5


@dataclass
class LabelIssueResult:
    """Per-sample label-audit scores (all arrays have N rows, in input order).

    Attributes
    ----------
    importance : float32 (N,) logistic-regression sensitivity ``h/sum(h) + loss/sum(loss)``
        (sums to 2; higher = more important to review).  NaN when no features were given.
    leverage : float32 (N,) class-conditional leverage (mean 1 per class).  NaN without features.
    self_confidence : (N,) ``pred_probs[i, y_i]`` (cleanlab), in [0, 1], higher = label looks right.
    normalized_margin : (N,) cleanlab normalized margin of ``pred_probs``, in [0, 1].
    knn_agreement : float32 (N,) fraction of the k cosine neighbours with the same given label.
        NaN without features.
    outlier_score : float32 (N,) mean cosine distance to the k neighbours (higher = more
        isolated).  NaN without features.
    label_issue_score : float32 (N,) fused ranking score in [0, 1]; higher = more likely wrong.
        ``(lam * max_{k != y} q_k - q_y + 1) / (1 + lam)`` of ``q = fused_probs`` with
        ``lam = params["margin_weight_used"]``: ``1 - normalized_margin(q)`` at ``lam = 1``,
        ``1 - self_confidence(q)`` at 0 (see ``margin_weight``).  Without features ``q`` is
        ``pred_probs``.
    is_label_issue, is_outlier, is_ambiguous : bool (N,)
    suggested_label : int64 (N,) argmax of ``fused_probs``; suggested_confidence : its probability.
    pred_probs : float32 (N, K) out-of-fold model probabilities (or the ones given).
    knn_probs : float32 (N, K) neighbour-vote probabilities (None without features).
    fused_probs : float32 (N, K) ``(1 - w) pred_probs + w knn_probs``.
    noise_matrix : (K, K) ``P(given = i | true = j)`` (columns sum to 1), cleanlab convention,
        estimated from ``fused_probs``.
    confident_joint : int (K, K) calibrated confident joint ``C[given, true]`` of ``fused_probs``.
    classes : list of class names (or ``range(K)`` as strings when not given).
    labels : int64 (N,) the given labels scored.
    index : int64 (N,) row of each sample in the original input (changes after removals).
    neighbor_indices, neighbor_distances : (N, k) cosine kNN graph (indices into these N rows).
    folds : int64 (N,) fold of each sample for the out-of-fold probabilities (repeat 0's when
        ``n_repeats > 1``; all repeats: :attr:`fold_assignments`).
    params : dict of the parameters used.
    """

    importance: np.ndarray
    leverage: np.ndarray
    self_confidence: np.ndarray
    normalized_margin: np.ndarray
    knn_agreement: np.ndarray
    outlier_score: np.ndarray
    label_issue_score: np.ndarray
    is_label_issue: np.ndarray
    is_outlier: np.ndarray
    is_ambiguous: np.ndarray
    suggested_label: np.ndarray
    suggested_confidence: np.ndarray
    pred_probs: np.ndarray
    knn_probs: Optional[np.ndarray]
    fused_probs: np.ndarray
    noise_matrix: np.ndarray
    confident_joint: np.ndarray
    classes: list
    labels: np.ndarray
    index: np.ndarray
    neighbor_indices: Optional[np.ndarray] = None
    neighbor_distances: Optional[np.ndarray] = None
    folds: Optional[np.ndarray] = None
    params: Dict[str, Any] = field(default_factory=dict)
    model_state: Optional[dict] = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def ranked(self) -> np.ndarray:
        """Indices sorted by decreasing ``label_issue_score``."""
        return np.argsort(-self.label_issue_score, kind="stable")

    @property
    def fold_assignments(self) -> Optional[np.ndarray]:
        """int64 (n_repeats, N): the fold of every sample in every repeat of the out-of-fold fit
        (pass ``folds=result.fold_assignments`` to reproduce it); None without own fold models."""
        if self.folds is None:
            return None
        more = (self.model_state or {}).get("more_repeats", ())
        return np.stack([self.folds] + [np.asarray(r["folds"]) for r in more])


def _validate_pred_probs(pred_probs, n, K):
    P = np.asarray(pred_probs)
    if P.ndim != 2:
        raise ValueError(f"pred_probs must be 2-D (N, K); got shape {P.shape}.")
    if P.shape[0] != n:
        raise ValueError(f"pred_probs has {P.shape[0]} rows but labels has {n} entries.")
    if P.shape[1] != K:
        raise ValueError(
            f"pred_probs has {P.shape[1]} columns but there are K={K} classes (from classes/labels); "
            "they must match."
        )
    if not np.all(np.isfinite(P)):
        raise ValueError("pred_probs contains NaN or inf.")
    if P.min() < 0 or P.max() > 1 or not np.allclose(P.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("pred_probs rows must be probabilities (in [0, 1], summing to 1); apply softmax first.")
    return np.array(P, dtype=np.float32)  # a copy: result.pred_probs is not the caller's array


def _knn_features(X, prep: Optional[Preprocessor], max_dim: int, random_state):
    """Features used for the cosine kNN: as given when d <= max_dim, else centred PCA projection."""
    if X.shape[1] <= max_dim:
        return X, None
    if prep is None or prep.components is None:
        prep = Preprocessor(max_dim=max_dim, random_state=random_state).fit(X)
    Z = prep.transform(X)
    Z *= prep.scale  # undo the per-component z-scoring: plain (unwhitened) PCA coordinates
    return Z, prep


MODELS = ("auto", "logistic", "mlp")


def fold_arrays(state: dict) -> list:
    """The fold assignment of every repeat of the out-of-fold fit (repeat 0 first)."""
    return [np.asarray(state["folds"])] + [np.asarray(r["folds"]) for r in state.get("more_repeats", ())]


def _choose_model(model, X, labels, K, P, state, params, backend, random_state, progress_callback=None):
    """Fit the MLP where ``model`` asks for it and return the probabilities of the model used;
    records ``params["model_used"]``, ``params["held_out_log_loss"]``, ``params["mlp_skipped"]``
    and ``state["model"]``."""
    used = "logistic"
    if model != "logistic":
        prep = state["preprocessor"]
        d_eff = int(prep.scale.shape[0])
        n_folds = int(state["folds"].max()) + 1
        if model == "mlp":  # asked for: only the class sizes can stop it (ray was refused earlier)
            reason = mlp_candidate_reason(labels, K, d_eff, n_folds, max_work=float("inf"), min_rows=0)
            if reason is not None:
                raise ValueError(f"model='mlp' cannot be fitted here: {reason} (its early stopping holds "
                                 "out a stratified 10% of each fold); use model='logistic' or merge/drop "
                                 "the small classes.")
        else:
            reason = "backend='ray'" if backend == "ray" else mlp_candidate_reason(labels, K, d_eff, n_folds)
        if reason is None:
            # the features the logistic regression saw: its z-scored PCA projection, else z-scored X
            Z = state.get("projected")
            Pm, models = mlp_repeated_probabilities(prep.transform(X) if Z is None else Z, labels,
                                                    fold_arrays(state), n_classes=K, random_state=random_state,
                                                    return_models=True, progress_callback=progress_callback)
            choice, stats = choose_model(labels, P, Pm)
            params["held_out_log_loss"] = {"logistic": stats["logistic"], "mlp": stats["mlp"]}
            params["mlp_gain_z"] = stats["z"]
            used = "mlp" if model == "mlp" else choice
            if used == "mlp":
                P = Pm
                state["mlp_models"] = models  # what an incremental update continues training
        else:
            params["mlp_skipped"] = reason
    params["model_used"] = used
    state["model"] = used
    return P


def _finish(
    labels, K, classes, P, X_knn, nbr, dist, leverage, folds, index, params, model_state
) -> LabelIssueResult:
    n = labels.shape[0]
    sc = get_self_confidence_for_each_label(labels, P)
    nm = get_normalized_margin_for_each_label(labels, P)
    losses = -np.log(np.clip(sc.astype(np.float64), 1e-12, None))
    if nbr is not None:
        pk = knn_class_probabilities(nbr, dist, labels, K)
        agree = knn_agreement(nbr, labels)
        osc = outlier_scores(dist)
        is_out = outlier_flags(osc, outlier_z=params["outlier_z"])
    else:
        pk = None
        agree = np.full(n, np.nan, np.float32)
        osc = np.full(n, np.nan, np.float32)
        is_out = np.zeros(n, bool)
    w = params["knn_weight"]
    if pk is not None and w == "auto":
        w = choose_knn_weight(labels, P, pk)
    q = fuse_probabilities(P, pk, knn_weight=0.0 if w == "auto" else w)
    _, nmat, _, cj = estimate_py_and_noise_matrices_from_probabilities(labels, q)
    conc = noise_concentration(cj)
    lam = params.get("margin_weight", "auto")
    lam = choose_margin_weight(conc) if lam == "auto" else float(lam)
    fm = params.get("flag_margin", "auto")
    fm = choose_flag_margin(conc) if fm == "auto" else float(fm)
    params = dict(params, knn_weight_used=w if pk is not None else 0.0, noise_concentration=conc,
                  margin_weight_used=lam, flag_margin_used=fm)
    own, best_other = own_and_best_other(labels, q)
    score = scores_from_own_and_best_other(own, best_other, margin_weight=lam)
    amb = ambiguity_flags(labels, q, ambiguity_margin=params["ambiguity_margin"])
    flags = flag_label_issues(labels, q, filter_by=params["filter_by"], exclude=amb)
    # and any label another class beats by more than flag_margin in fused probability
    flags |= (best_other - own).astype(np.float32) > fm
    if leverage is not None:
        importance = logistic_sensitivity(leverage, losses)
    else:
        leverage = np.full(n, np.nan, np.float32)
        importance = np.full(n, np.nan, np.float32)
    return LabelIssueResult(
        importance=importance,
        leverage=leverage,
        self_confidence=sc,
        normalized_margin=nm,
        knn_agreement=agree,
        outlier_score=osc,
        label_issue_score=score,
        is_label_issue=flags,
        is_outlier=is_out,
        is_ambiguous=amb,
        suggested_label=q.argmax(axis=1).astype(np.int64),
        suggested_confidence=q.max(axis=1),
        pred_probs=P,
        knn_probs=pk,
        fused_probs=q,
        noise_matrix=nmat,
        confident_joint=cj,
        classes=list(classes),
        labels=labels,
        index=index,
        neighbor_indices=nbr,
        neighbor_distances=dist,
        folds=folds,
        params=params,
        model_state=model_state,
    )


def score_label_issues(
    labels,
    features=None,
    pred_probs=None,
    *,
    classes: Optional[Sequence[str]] = None,
    n_folds: int = 5,
    n_repeats="auto",
    k: int = 10,
    random_state=0,
    C="auto",
    model: str = "auto",
    knn_weight="auto",
    knn_method: str = "auto",
    max_dim: int = 256,
    filter_by: str = "prune_by_noise_rate",
    ambiguity_margin: float = 0.2,
    flag_margin="auto",
    margin_weight="auto",
    outlier_z: float = 3.5,
    compute_importance: bool = True,
    folds: Optional[np.ndarray] = None,
    device=None,
    backend: str = "local",
    ray_address: Optional[str] = None,
    ray_workers: Optional[int] = None,
    ray_max_retries: int = 3,
    progress_callback=None,
) -> LabelIssueResult:
    """Score every sample for label errors, outliers and ambiguity.

    Parameters
    ----------
    labels : int array (N,), values in [0, K).  Missing labels (None/NaN) are rejected.
    features : float array or float32 np.memmap (N, d), optional
        Embeddings.  With features the function fits its own out-of-fold logistic regression
        (unless ``pred_probs`` is given), builds a cosine kNN graph and computes leverage.
    pred_probs : float array (N, K), optional
        Out-of-sample probabilities to score (cleanlab style).  Without ``features`` the
        neighbour/importance fields are NaN and the fused probabilities equal ``pred_probs``.
    classes : list of K class names, optional (K then = len(classes)).
    n_folds : int, default 5.   k : int, default 10 neighbours (needs N > k).
    n_repeats : int or "auto", default "auto"; repeated cross-fitting: the out-of-fold
        probabilities are the mean over this many fold assignments (each with ``n_folds`` fold
        models).  "auto" (:func:`~.probabilities.auto_n_repeats`) repeats while all the fold fits
        stay within the work of one fit at 100k x 256 x 80: 5 at 10k x 256 x 80, 4 at 20k, 1 from
        100k.  Measured (seeds 0-2): synthetic instance noise AUPRC 0.767/0.763/0.738 with one
        repeat, 0.803/0.798/0.757 with five.  Used value: ``params["n_repeats_used"]``.
    random_state : int, default 0 (folds, PCA subsample, approximate kNN).
    C : float or "auto", default "auto"; inverse L2 strength of the logistic regression
        (sklearn convention, z-scored features).  "auto" (:func:`~.probabilities.auto_C`):
        0.1, stronger than sklearn's default because labels are noisy, up to 10k training
        rows; above that the per-sample L2 strength ``1 / (C * n_train)`` is held at 1e-3 instead
        of vanishing (synthetic 100k x 256 x 80, pair noise: AUPRC of the model's margin 0.954
        -> 0.985 with ``C_used`` 0.0125, and 20 fold iterations then reach the optimum closely
        enough that two warm-start seeds agree to Spearman 0.996 instead of 0.969).  Used value:
        ``params["C_used"]``.
    model : {'auto', 'logistic', 'mlp'}, default 'auto'; the out-of-fold model.  'logistic': the
        multinomial logistic regression above.  'mlp': scikit-learn's ``MLPClassifier`` with one
        hidden layer of 256 ReLU units, ``alpha=1e-2`` and early stopping, fitted on the same
        fold assignments as the logistic regression (``n_repeats`` of them, averaged) and on the
        same preprocessed features (:mod:`~.mlp`).  'auto': the
        logistic regression, and also the MLP where it is cheap and testable (5k <= N, N x d' <= 10k x 256, every class
        with >= 10 rows, backend 'local'); the MLP's probabilities are used when their held-out
        log-loss on the given labels is below the logistic regression's by more than 7 paired
        standard errors (:func:`~.mlp.choose_model`).  Measured (README): it picks the MLP on Fashion-MNIST
        (PCA-50 pixels; instance noise AUPRC 0.315 -> 0.37, seed 0) and keeps the logistic
        regression on digits and on the synthetic CNN-like features, where the MLP is worse.
        ``params["model_used"]``, ``params["held_out_log_loss"]`` (per candidate),
        ``params["mlp_gain_z"]`` and
        ``params["mlp_skipped"]`` (why 'auto' fitted no MLP) say what happened.
    knn_weight : float in [0, 1] or "auto", default "auto"; weight of the kNN vote in the fused
        probabilities.  "auto" picks it per dataset, label-free: the weight in 0, 0.1, ..., 0.8
        whose fused prediction has the best held-out accuracy on the given labels, where weights
        within one standard error of the best count as equal and the one closest to 0.5 wins
        (:func:`~.fusion.choose_knn_weight`).  Measured on the public benchmarks (README) it
        keeps 0.5 where the neighbours are good (digits, Fashion-MNIST) and lowers it where they
        are poor (synthetic instance noise: 0.2, AUPRC 0.686 -> 0.770), never lowering AUPRC.
        The weight used is in ``result.params["knn_weight_used"]``.
    knn_method : {'auto', 'exact', 'approx', 'pynndescent'} (see :func:`knn_search`; 'auto' = exact up
        to 30k rows, else the IVF index).   max_dim : PCA size for d > max_dim, capped at
        max(32, N // 4) so that the whitened components are estimated from enough rows
        (:func:`~label_audit.scoring.probabilities.effective_max_dim`; ``params["max_dim"]`` is the size used).
    filter_by : cleanlab filter mode used on the fused probabilities for ``is_label_issue``.
    flag_margin : float in [0, 1] or "auto", default "auto".  ``is_label_issue`` is cleanlab's
        ``filter_by`` rule on the fused probabilities (ambiguous samples excluded) OR another class
        beating the given label by more than ``flag_margin`` in fused probability.  "auto" takes it
        from the noise concentration of the fused confident joint
        (:func:`~.fusion.choose_flag_margin`: 0.3 for uniform-like noise, 0.3-0.35 for pair-like
        noise, 0 for noise spread over a few nearby classes, where the confident joint undercounts
        errors: there any label that another class beats is flagged).
        Tuned on the public benchmarks only (README).  Used value: ``params["flag_margin_used"]``.
    margin_weight : float in [0, 1] or "auto", default "auto".  ``lam`` of ``label_issue_score``:
        1 = normalized margin, 0 = self-confidence of the fused probabilities.  "auto"
        (:func:`~.fusion.choose_margin_weight`): 1 when the estimated errors concentrate on one
        other class per given class (noise concentration >= 0.5, pair/instance noise), 0.25 when
        they spread (<= 0.4, uniform noise), linear in between; the concentration is in
        ``params["noise_concentration"]``, the weight used in ``params["margin_weight_used"]``.
    ambiguity_margin : float, default 0.2.   outlier_z : float, default 3.5 (robust z).
    compute_importance : bool, default True.
    folds : int array (N,) or (n_repeats, N), optional fixed fold assignment(s) (reproducible
        recomputes: ``folds=result.fold_assignments``); their number of rows is the number of
        repeats (1 for a 1-D array).
    device : torch device for the logistic regression ('cuda' when available).
    backend : {'local', 'ray'}, default 'local'.  'ray' computes every sum over samples (column
        moments, the fold models' loss and gradient, predictions, kNN top-k, per-class Gram
        matrices) in Ray tasks over row shards held in Ray's object store, reduced on this
        process, which runs the same L-BFGS and the same fusion (see
        :mod:`label_audit.distributed.ray_scoring`); the scores agree with 'local' to float
        tolerance.  ``features`` may then also be a
        :class:`~label_audit.distributed.ray_scoring.ShardedFeatures`.
    ray_address : str, optional; the cluster for backend='ray': None (a running session of this
        process, else a local Ray instance), "auto" (the cluster of ``ray start`` on this node) or
        "ray://host:10001" (Ray Client).
    ray_workers : int, optional; row shards, i.e. tasks run in parallel per stage (default: the
        cluster's CPUs).
    ray_max_retries : int, default 3; retries of a task whose worker died.  When they are
        exhausted a ``RayRunError`` is raised (nothing has been written anywhere).
    progress_callback : callable, optional; called as ``progress_callback(fraction, label)`` as the
        work goes on: ``fraction`` in [0, 1], non-decreasing, 1 at the end; ``label`` names the
        stage ("Fitting fold models (repeat 2 of 5)", "Fitting fold MLPs (repeat 1 of 5)",
        "Finding 10 neighbours per sample", ...).  The fold fits report after each fold model.

    Returns
    -------
    LabelIssueResult
    """
    if features is None and pred_probs is None:
        raise ValueError("Pass features (N, d) and/or pred_probs (N, K); got neither.")
    K = None
    if classes is not None:
        classes = list(classes)
        K = len(classes)
    elif pred_probs is not None:
        K = int(np.asarray(pred_probs).shape[1]) if np.asarray(pred_probs).ndim == 2 else None
    labels, K = validate_labels(labels, K)
    n = labels.shape[0]
    if classes is None:
        classes = [str(c) for c in range(K)]
    for name, v in (("knn_weight", knn_weight), ("flag_margin", flag_margin), ("margin_weight", margin_weight)):
        # numpy scalars (np.float32(0.5)) are numbers too; a bool is not a weight
        is_number = isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
        if not ((isinstance(v, str) and v == "auto") or (is_number and 0.0 <= float(v) <= 1.0)):
            raise ValueError(f"{name} must be a float in [0, 1] or 'auto'; got {v!r}.")
    for name, v, low in (("k", k, 1), ("n_folds", n_folds, 2)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ValueError(f"{name} must be an int >= {low}; got {v!r}.")
    max_dim = effective_max_dim(max_dim, n)  # whitened PCA components need enough rows
    resolve_C(C, n, max(int(n_folds), 2))  # a bad C fails before any work
    resolve_n_repeats(n_repeats, n, 1, K)
    params = dict(
        n_folds=n_folds, n_repeats=n_repeats, k=k, random_state=random_state, C=C, model=model,
        knn_weight=knn_weight,
        knn_method=knn_method,
        max_dim=max_dim, filter_by=filter_by, ambiguity_margin=ambiguity_margin, flag_margin=flag_margin,
        margin_weight=margin_weight, outlier_z=outlier_z,
        compute_importance=compute_importance,
    )
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray'; got {backend!r}.")
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got {model!r}.")
    if model == "mlp" and backend == "ray":
        raise ValueError("model='mlp' runs in this process only; use backend='local' or model='logistic'.")
    if backend == "ray":
        params.update(backend=backend, ray_address=ray_address)
    X = None
    if features is not None:
        if backend == "ray":  # rows go to Ray's object store; the sums run where they live
            from ..distributed.ray_scoring import shard_features

            features = shard_features(features, n, address=ray_address, num_shards=ray_workers,
                                      max_retries=ray_max_retries)
        X = validate_features(features, n)
        if n <= k:
            raise ValueError(f"Only N={n} samples for k={k} neighbours: need N > k; lower k or add samples.")
    state = None
    # the share of the run each stage reports in (rough costs: the fold fits dominate, the MLP
    # candidate costs a few times the logistic regression where it is fitted)
    report = progress_callback or (lambda f, label: None)
    fit_end = 0.0
    if pred_probs is None:
        planned_folds = int(n_folds) if folds is None else int(np.max(folds)) + 1
        mlp_planned = model == "mlp" or (model == "auto" and backend == "local" and mlp_candidate_reason(
            labels, K, min(int(X.shape[1]), int(max_dim)), planned_folds) is None)
        fit_end = 0.85 if mlp_planned else 0.7
        lr_end = 0.25 if mlp_planned else fit_end
    if pred_probs is not None:
        if folds is not None:
            raise ValueError("folds choose the out-of-fold models that label-audit fits from features; with "
                             "pred_probs nothing is fitted, so they would be ignored: drop one of them.")
        P = _validate_pred_probs(pred_probs, n, K)
        folds_out = None
    else:
        if n < 2 * n_folds:
            raise ValueError(f"Only N={n} samples for n_folds={n_folds}: need N >= 2 * n_folds.")
        report(0.0, "Fitting fold models")
        P, state = out_of_fold_probabilities(
            X, labels, n_classes=K, n_folds=n_folds, C=C, max_dim=max_dim, folds=folds, n_repeats=n_repeats,
            random_state=random_state, device=device, return_state=True,
            progress_callback=within(progress_callback, 0.0, lr_end),
        )
        folds_out = state["folds"]
        params["C_used"] = float(state["C"])
        params["n_repeats_used"] = int(state["n_repeats"])
        P = _choose_model(model, X, labels, K, P, state, params, backend, random_state,
                          progress_callback=within(progress_callback, lr_end, fit_end))
    nbr = dist = leverage = None
    rest = 1.0 - fit_end  # kNN, leverage, the update's preconditioner, fusion
    if X is not None:
        prep = state["preprocessor"] if state is not None else None
        Z = state.pop("projected", None) if state is not None else None
        if Z is not None:  # reuse the PCA projection of the logistic regression (no second pass)
            Z *= prep.scale  # undo the per-component z-scoring: plain PCA coordinates
            Xk, kprep = Z, prep
        else:
            Xk, kprep = _knn_features(X, prep, max_dim, random_state)
        # KNN_SPARES extra neighbours per row are kept in the model state: after removals the
        # incremental update replaces a removed neighbour by the next one exactly (no search)
        spares = max(0, min(KNN_SPARES, n - 1 - k))
        report(fit_end, f"Finding {k} neighbours per sample")
        nbr, dist = knn_search(Xk, k + spares, method=knn_method, random_state=random_state)
        nbr, dist, spare_nbr, spare_dist = (np.ascontiguousarray(a) for a in (
            nbr[:, :k], dist[:, :k], nbr[:, k:], dist[:, k:]))
        if compute_importance:
            report(fit_end + 0.6 * rest, "Computing class-conditional leverage")
            leverage = class_conditional_leverage(Xk, labels, n_classes=K)
        if state is None:
            state = {}
        state["knn_preprocessor"] = kprep
        state["spare_neighbors"] = spare_nbr
        state["spare_distances"] = spare_dist
        if "coef" in state and backend == "local":
            from .newton import block_preconditioner_from_probabilities

            # what the first incremental update (Newton refit, either solver) would otherwise build
            report(fit_end + 0.75 * rest, "Preparing incremental updates")
            state["newton_preconditioner"] = block_preconditioner_from_probabilities(
                X, P, state, random_state=random_state, device=device)
    report(fit_end + 0.9 * rest, "Fusing the scores and flags")
    result = _finish(labels, K, classes, P, None, nbr, dist, leverage, folds_out, np.arange(n), params, state)
    report(1.0, "Scored %d samples" % n)
    return result
