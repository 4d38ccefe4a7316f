"""Out-of-fold probabilities of a one-hidden-layer MLP, and the held-out log-loss that picks
between it and the logistic regression (``score_label_issues(model="auto")``).

Plain functions over numpy arrays: scikit-learn's ``MLPClassifier`` (ReLU, Adam, early stopping on
a stratified 10% of each fold's training rows) on the features the logistic regression sees
(z-scored, or z-scored PCA components when d > max_dim).  An incremental update either
continues training the fitted fold MLPs on the new labels for a few epochs
(:func:`finetune_fold_mlps`, the default) or fits them again from scratch (the same folds and
seed, so that equals a full recompute's MLP).

Why: on features that are not linearly separable (Fashion-MNIST PCA-50 pixels) the MLP's
out-of-fold margin finds more label errors than the linear model's (instance noise AUPRC of the
fused score 0.315 -> 0.37 on seed 0, README); on features a linear model separates (CNN
embeddings, the synthetic benchmark, digits) it is worse, and its held-out log-loss on the *given*
labels says so.  Nothing here looks at clean labels.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np

__all__ = [
    "MLP_HIDDEN", "MLP_ALPHA", "MLP_MIN_Z", "MLP_AUTO_MAX_WORK", "MLP_AUTO_MIN_ROWS", "held_out_log_loss", "per_sample_log_loss",
    "mlp_candidate_reason", "mlp_out_of_fold_probabilities", "mlp_repeated_probabilities", "choose_model",
    "finetune_fold_mlps", "MLP_UPDATE_EPOCHS",
]

#: hidden units of the one hidden layer
MLP_HIDDEN = 256
#: L2 penalty (scikit-learn's ``alpha``): 1e-2 and 1e-1 measured the same, 1e-4 (the default) not tried
MLP_ALPHA = 1e-2
#: ``model="auto"`` takes the MLP only when its held-out log-loss is below the logistic
#: regression's by more than this many paired standard errors (tuned on the public benchmarks,
#: README)
MLP_MIN_Z = 7.0
#: ``model="auto"`` fits the MLP candidate only up to N x d' rows x dimensions (10k x 256): its
#: fold fits (one set per repeat, ~8 s per set at 10k x 50 on 2 cores, ~20 s at 10k x 256) then
#: cost at most a few times the repeated logistic regression and a minute or two in all; above
#: it the logistic regression alone is fitted
MLP_AUTO_MAX_WORK = 10_000 * 256
#: ``model="auto"`` fits the MLP candidate only from this many rows: below it the paired log-loss
#: comparison is not reliable enough (digits, 1,797 rows: z from -13 to +5 and no AUPRC gain
#: where it was positive) and the small audits, tests and demos keep their speed
MLP_AUTO_MIN_ROWS = 5_000
#: epochs an incremental update trains each fitted fold MLP on the new labels
#: (:func:`finetune_fold_mlps`); measured in the README ("Incremental update of an MLP result")
MLP_UPDATE_EPOCHS = 3
#: every class needs this many rows for the MLP's stratified early-stopping split in each fold
MLP_MIN_CLASS_ROWS = 10


def per_sample_log_loss(labels: np.ndarray, pred_probs: np.ndarray, *, eps: float = 1e-7) -> np.ndarray:
    """float64 (N,) ``-log pred_probs[i, labels[i]]`` (probabilities clipped to ``[eps, 1]``)."""
    labels = np.asarray(labels, np.int64)
    p = np.asarray(pred_probs, np.float64)[np.arange(labels.shape[0]), labels]
    return -np.log(np.clip(p, eps, 1.0))


def held_out_log_loss(labels: np.ndarray, pred_probs: np.ndarray, *, eps: float = 1e-7) -> float:
    """Mean ``-log pred_probs[i, labels[i]]`` (probabilities clipped to ``[eps, 1]``).

    labels : int (N,); pred_probs : (N, K) out-of-sample probabilities.  Lower = the model
    predicts the given labels better.  On noisy labels this still ranks models: a model that fits
    the noise cannot do so out of sample.
    """
    return float(per_sample_log_loss(labels, pred_probs, eps=eps).mean())


def choose_model(labels: np.ndarray, logistic_probs: np.ndarray, mlp_probs: np.ndarray, *,
                 min_z: float = MLP_MIN_Z):
    """Pick the out-of-fold model whose probabilities predict the given labels better.

    ``d_i = loss_logistic_i - loss_mlp_i`` (per-sample held-out log-loss on the given labels, the
    same rows and folds for both); ``z = mean(d) / (std(d) / sqrt(N))``.  Returns
    ``("mlp" if z > min_z else "logistic", stats)`` with ``stats = {"logistic": mean loss,
    "mlp": mean loss, "z": z}``.  The logistic regression is the default: the MLP has to be
    better by a wide paired margin, not just tied (measured, README: z 8-23 on Fashion-MNIST where
    the MLP finds more errors, at most 6 on digits and the synthetic features where it does not).
    """
    a = per_sample_log_loss(labels, logistic_probs)
    b = per_sample_log_loss(labels, mlp_probs)
    d = a - b
    sd = float(d.std())
    z = float(d.mean() / (sd / np.sqrt(d.size))) if sd > 0 else (np.inf if d.mean() > 0 else 0.0)
    stats = {"logistic": float(a.mean()), "mlp": float(b.mean()), "z": z}
    return ("mlp" if z > min_z else "logistic"), stats


def mlp_candidate_reason(labels: np.ndarray, n_classes: int, n_dims: int, n_folds: int,
                         *, max_work: float = MLP_AUTO_MAX_WORK,
                         min_rows: int = MLP_AUTO_MIN_ROWS) -> Optional[str]:
    """Why ``model="auto"`` does not fit the MLP candidate here (None when it does)."""
    n = labels.shape[0]
    if n < min_rows:
        return f"N = {n} is below MLP_AUTO_MIN_ROWS ({min_rows})"
    if float(n) * n_dims > max_work:
        return f"N x d' = {n} x {n_dims} is above MLP_AUTO_MAX_WORK ({max_work:.3g})"
    need = max(MLP_MIN_CLASS_ROWS, 2 * n_folds)
    counts = np.bincount(labels, minlength=n_classes)
    small = np.flatnonzero((counts > 0) & (counts < need))
    if small.size:
        return f"classes {small[:10].tolist()} have fewer than {need} rows"
    return None


def _new_mlp(hidden: int, alpha: float, random_state, max_iter: int):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(int(hidden),), alpha=float(alpha), early_stopping=True,
                         max_iter=int(max_iter), random_state=random_state)


def _fit_predict(model, Z, labels, train, test, n_classes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter: early stopping is the rule
        model.fit(Z[train], labels[train])
    out = np.zeros((test.size, n_classes), np.float32)
    if test.size:
        out[:, model.classes_] = model.predict_proba(Z[test])
    return out


def mlp_out_of_fold_probabilities(
    Z: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    *,
    n_classes: int,
    hidden: int = MLP_HIDDEN,
    alpha: float = MLP_ALPHA,
    max_iter: int = 200,
    random_state=0,
):
    """Out-of-fold probabilities of ``MLPClassifier((hidden,), alpha)`` on the fold assignment ``folds``.

    Parameters
    ----------
    Z : float32 (N, d') preprocessed features (z-scored; what the logistic regression sees).
    labels : int (N,) in [0, n_classes).   folds : int (N,) fold of each row, values 0..F-1.
    n_classes : K.   hidden, alpha : the MLP's size and L2 penalty.
    max_iter : int, default 200; epochs at most (early stopping usually ends a fit at 20-60).
    random_state : seeds weight initialisation, batches and the early-stopping split.

    Returns
    -------
    pred_probs : float32 (N, K), row i from the fold model that did not see row i; classes absent
        from a fold's training rows get probability 0 there.
    models : list of the F fitted ``MLPClassifier``.
    """
    labels = np.asarray(labels, np.int64)
    folds = np.asarray(folds, np.int64)
    n_folds = int(folds.max()) + 1
    P = np.empty((labels.shape[0], n_classes), np.float32)
    models = []
    for f in range(n_folds):
        test = np.flatnonzero(folds == f)
        train = np.flatnonzero(folds != f)
        model = _new_mlp(hidden, alpha, random_state, max_iter)
        P[test] = _fit_predict(model, Z, labels, train, test, n_classes)
        models.append(model)
    return P, models


def mlp_repeated_probabilities(Z: np.ndarray, labels: np.ndarray, fold_assignments: Sequence[np.ndarray], *,
                               n_classes: int, random_state=0, return_models: bool = False, **kwargs):
    """Mean of :func:`mlp_out_of_fold_probabilities` over several fold assignments (repeated
    cross-fitting, as the logistic regression does with ``n_repeats``): float32 (N, K).

    With ``return_models=True`` returns ``(P, models)``, ``models[r][f]`` the fitted MLP of fold f
    of repeat r (what :func:`finetune_fold_mlps` continues from)."""
    P, models = None, []
    for folds in fold_assignments:
        Pr, ms = mlp_out_of_fold_probabilities(Z, labels, folds, n_classes=n_classes, random_state=random_state,
                                               **kwargs)
        P = Pr if P is None else P + Pr
        models.append(ms)
    P /= np.float32(len(fold_assignments))
    return (P, models) if return_models else P


def finetune_fold_mlps(models: Sequence[Sequence], Z: np.ndarray, labels: np.ndarray,
                       fold_assignments: Sequence[np.ndarray], *, n_classes: int,
                       epochs: int = MLP_UPDATE_EPOCHS):
    """Continue training fitted fold MLPs on new labels; their out-of-fold probabilities.

    Parameters
    ----------
    models : ``models[r][f]``, the fold MLPs of every repeat (:func:`mlp_repeated_probabilities`
        with ``return_models=True``, or a previous call).  They are not modified (copies are
        trained).
    Z : float32 (N, d') preprocessed features of the current rows.   labels : int (N,) the new
        labels.   fold_assignments : ``[folds_r]``, int (N,) each, aligned with ``Z``.
    n_classes : K.
    epochs : int >= 1, default ``MLP_UPDATE_EPOCHS`` (3); passes of Adam over each fold's training
        rows (``partial_fit``, no early stopping), starting from the fitted weights and optimizer
        state.  A full fit takes 14-60 epochs with early stopping, so this costs about a tenth.

    Returns
    -------
    pred_probs : float32 (N, K), the mean over repeats of each row's prediction by the fold model
        that did not train on it.
    models : the trained copies, same layout.
    A fold whose training rows now hold a class its model has never seen is fitted again from
    scratch (``partial_fit`` cannot add classes).
    """
    import copy

    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1; got {epochs!r}.")
    labels = np.asarray(labels, np.int64)
    P = np.zeros((labels.shape[0], n_classes), np.float32)
    out = []
    for rep_models, folds in zip(models, fold_assignments):
        folds = np.asarray(folds, np.int64)
        new_models = []
        for f, old in enumerate(rep_models):
            test = np.flatnonzero(folds == f)
            train = np.flatnonzero(folds != f)
            if np.setdiff1d(np.unique(labels[train]), old.classes_).size:
                model = _new_mlp(old.hidden_layer_sizes[0], old.alpha, old.random_state, old.max_iter)
                P[test] += _fit_predict(model, Z, labels, train, test, n_classes)
            else:
                model = copy.deepcopy(old)
                model.set_params(early_stopping=False)
                model.best_loss_ = np.inf  # early stopping left it None; partial_fit compares with it
                model._no_improvement_count = 0
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for _ in range(int(epochs)):
                        model.partial_fit(Z[train], labels[train])
                if test.size:
                    P[test[:, None], model.classes_[None, :]] += model.predict_proba(Z[test])
            new_models.append(model)
        out.append(new_models)
    P /= np.float32(len(out))
    return P, out
