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
    "finetune_fold_mlps", "check_epochs", "MLP_UPDATE_EPOCHS",
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
    progress_callback=None,
):
    """Out-of-fold probabilities of ``MLPClassifier((hidden,), alpha)`` on the fold assignment ``folds``.

    Parameters
    ----------
    Z : float32 (N, d') preprocessed features (z-scored; what the logistic regression sees).
    labels : int (N,) in [0, n_classes).   folds : int (N,) fold of each row, values 0..F-1.
    n_classes : K.   hidden, alpha : the MLP's size and L2 penalty.
    max_iter : int, default 200; epochs at most (early stopping usually ends a fit at 20-60).
    random_state : seeds weight initialisation, batches and the early-stopping split.
    progress_callback : callable, optional; called as ``progress_callback((f + 1) / F, label)``
        after fold model f.

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
        if progress_callback is not None:
            progress_callback((f + 1) / n_folds, f"Fitted fold MLP {f + 1} of {n_folds}")
    return P, models


def mlp_repeated_probabilities(Z: np.ndarray, labels: np.ndarray, fold_assignments: Sequence[np.ndarray], *,
                               n_classes: int, random_state=0, return_models: bool = False,
                               progress_callback=None, **kwargs):
    """Mean of :func:`mlp_out_of_fold_probabilities` over several fold assignments (repeated
    cross-fitting, as the logistic regression does with ``n_repeats``): float32 (N, K).

    With ``return_models=True`` returns ``(P, models)``, ``models[r][f]`` the fitted MLP of fold f
    of repeat r (what :func:`finetune_fold_mlps` continues from).  ``progress_callback(fraction,
    label)`` is called after each fold MLP."""
    P, models = None, []
    R = len(fold_assignments)
    for r, folds in enumerate(fold_assignments):
        step = None if progress_callback is None else (
            lambda f, label, r=r: progress_callback((r + f) / R, f"Fitting fold MLPs (repeat {r + 1} of {R})"))
        Pr, ms = mlp_out_of_fold_probabilities(Z, labels, folds, n_classes=n_classes, random_state=random_state,
                                               progress_callback=step, **kwargs)
        P = Pr if P is None else P + Pr
        models.append(ms)
    P /= np.float32(len(fold_assignments))
    return (P, models) if return_models else P


def check_epochs(epochs, name: str = "epochs") -> None:
    """ValueError unless ``epochs`` is an int >= 1 (the fine-tune's passes per fold MLP)."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"{name} must be an int >= 1 (epochs per fold MLP); got {epochs!r}.")


def finetune_fold_mlps(models: Sequence[Sequence], Z: np.ndarray, labels: np.ndarray,
                       fold_assignments: Sequence[np.ndarray], *, n_classes: int,
                       epochs: int = MLP_UPDATE_EPOCHS, random_state=0):
    """Continue training fitted fold MLPs on new labels; their out-of-fold probabilities.

    Parameters
    ----------
    models : ``models[r][f]``, the fold MLPs of every repeat (:func:`mlp_repeated_probabilities`
        with ``return_models=True``, or a previous call).  They are not modified (copies are
        trained).
    Z : float32 (N, d') preprocessed features of the current rows.   labels : int (N,) the new
        labels.   fold_assignments : ``[folds_r]``, int (N,) each, aligned with ``Z``.
    n_classes : K.
    epochs : int >= 1, default ``MLP_UPDATE_EPOCHS`` (3); passes over each fold's training rows,
        starting from the fitted weights and Adam state.  Each pass is what scikit-learn's
        ``partial_fit`` does (shuffled mini-batches of ``min(200, n)`` rows, Adam with the model's
        ``learning_rate_init``/``beta_1``/``beta_2``/``epsilon``, loss = mean log-loss +
        ``alpha / (2 batch)`` squared weights; one step equals ``partial_fit``'s, tested), run
        for all fold models at once in torch (batched matrix products) instead of one model at a
        time.  A full fit takes 14-60 epochs with early stopping.
    random_state : seeds the mini-batch order (:func:`~.incremental.update_label_issues` passes the
        run's ``random_state``, as its ``mlp_update="refit"`` does).

    Returns
    -------
    pred_probs : float32 (N, K), the mean over repeats of each row's prediction by the fold model
        that did not train on it.
    models : the trained copies, same layout (scikit-learn ``MLPClassifier`` with their Adam state,
        so a later update continues from them).
    A fold whose training rows now hold a class its model has never seen is fitted again from
    scratch (its output layer has no unit for that class).
    """
    import copy

    check_epochs(epochs)
    labels = np.asarray(labels, np.int64)
    P = np.zeros((labels.shape[0], n_classes), np.float32)
    out, tune, jobs = [], [], []
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
                tune.append(model)
                jobs.append((train, test))
            new_models.append(model)
        out.append(new_models)
    if tune:
        P_tuned = _train_batched(tune, jobs, Z, labels, n_classes, int(epochs), random_state)
        for (train, test), Pt in zip(jobs, P_tuned):
            P[test] += Pt
    P /= np.float32(len(out))
    return P, out


def _train_batched(models, jobs, Z, labels, n_classes, epochs, random_state):
    """Train the MLPs ``models`` (in place) for ``epochs`` passes over their training rows
    ``jobs[m][0]`` in one batched torch loop; returns each model's probabilities for its test rows
    ``jobs[m][1]`` ((n_test, K) float32 each).  See :func:`finetune_fold_mlps`."""
    import torch

    M, K = len(models), int(n_classes)
    dtype = torch.from_numpy(np.asarray(models[0].coefs_[0])).dtype
    Zt = torch.from_numpy(np.ascontiguousarray(Z)).to(dtype)
    yt = torch.from_numpy(labels)
    H = models[0].coefs_[0].shape[1]
    W1 = torch.stack([torch.from_numpy(np.asarray(m.coefs_[0])) for m in models]).to(dtype)
    b1 = torch.stack([torch.from_numpy(np.asarray(m.intercepts_[0])) for m in models]).to(dtype)
    W2 = torch.zeros(M, H, K, dtype=dtype)
    b2 = torch.zeros(M, K, dtype=dtype)
    free = torch.zeros(M, K, dtype=dtype)  # output columns that are parameters
    closed = torch.full((M, K), -1e4, dtype=dtype)  # classes a model has no output for
    opt = [torch.zeros_like(t) for t in (W1, W2, b1, b2) for _ in range(2)]  # m, v of each
    mW1, vW1, mW2, vW2, mb1, vb1, mb2, vb2 = opt
    out_cols = []  # the columns of W2 / b2 that are each model's output units
    for i, m in enumerate(models):
        cls = torch.from_numpy(np.asarray(m.classes_, np.int64))
        closed[i, cls] = 0.0
        o = m._optimizer
        mW1[i], vW1[i] = torch.from_numpy(o.ms[0]), torch.from_numpy(o.vs[0])
        mb1[i], vb1[i] = torch.from_numpy(o.ms[2]), torch.from_numpy(o.vs[2])
        # binary models have one logistic output = the logit of classes_[1] against classes_[0]
        cols = cls[1:] if m.out_activation_ == "logistic" else cls
        out_cols.append(cols)
        W2[i][:, cols] = torch.from_numpy(np.asarray(m.coefs_[1]))
        b2[i, cols] = torch.from_numpy(np.asarray(m.intercepts_[1]))
        mW2[i][:, cols], vW2[i][:, cols] = torch.from_numpy(o.ms[1]), torch.from_numpy(o.vs[1])
        mb2[i, cols], vb2[i, cols] = torch.from_numpy(o.ms[3]), torch.from_numpy(o.vs[3])
        free[i, cols] = 1.0
    t = torch.tensor([float(m._optimizer.t) for m in models], dtype=torch.float64)
    alpha = torch.tensor([float(m.alpha) for m in models], dtype=dtype)
    lr0 = np.array([m.learning_rate_init for m in models])
    beta1, beta2, eps = models[0].beta_1, models[0].beta_2, models[0].epsilon
    batch = [min(200, max(1, train.size)) if m.batch_size == "auto" else int(m.batch_size)
             for m, (train, _) in zip(models, jobs)]
    B = max(batch)
    params = [W1, W2, b1, b2]
    moments = [(mW1, vW1), (mW2, vW2), (mb1, vb1), (mb2, vb2)]
    masks = [None, free[:, None, :], None, free]
    rng = np.random.default_rng(random_state)
    for _ in range(epochs):
        orders = [rng.permutation(train) for train, _ in jobs]
        steps = max(-(-o.size // b) for o, b in zip(orders, batch))
        for s in range(steps):
            idx = np.zeros((M, B), np.int64)
            valid = np.zeros((M, B), bool)
            for i, (o, b) in enumerate(zip(orders, batch)):
                rows = o[s * b:(s + 1) * b]
                idx[i, :rows.size] = rows
                valid[i, :rows.size] = True
            n_b = torch.from_numpy(valid.sum(axis=1)).to(dtype)
            active = n_b > 0
            vt = torch.from_numpy(valid).to(dtype)
            it = torch.from_numpy(idx)
            for p in params:
                p.requires_grad_(True)
            h = torch.relu(torch.bmm(Zt[it], W1) + b1[:, None, :])
            logits = torch.bmm(h, W2) + b2[:, None, :] + closed[:, None, :]
            ce = torch.nn.functional.cross_entropy(logits.reshape(M * B, K), yt[it].reshape(-1),
                                                   reduction="none").reshape(M, B)
            nb = n_b.clamp(min=1.0)
            loss = ((ce * vt).sum(1) / nb + 0.5 * alpha * ((W1 ** 2).sum((1, 2)) + (W2 ** 2).sum((1, 2))) / nb).sum()
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                t = t + active.to(torch.float64)
                lr = torch.from_numpy(lr0 * np.sqrt(1 - beta2 ** t.numpy()) / (1 - beta1 ** np.maximum(t.numpy(), 1)))
                lr = torch.where(active, lr, torch.zeros_like(lr)).to(dtype)
                for p, g, (mo, ve), mask in zip(params, grads, moments, masks):
                    if mask is not None:
                        g = g * mask
                    shape = (M,) + (1,) * (p.dim() - 1)
                    a = active.view(shape)
                    mo.copy_(torch.where(a, beta1 * mo + (1 - beta1) * g, mo))
                    ve.copy_(torch.where(a, beta2 * ve + (1 - beta2) * g * g, ve))
                    p.requires_grad_(False)
                    p -= lr.view(shape) * mo / (torch.sqrt(ve) + eps)
    out = []
    with torch.no_grad():
        for i, (m, (train, test), cols) in enumerate(zip(models, jobs, out_cols)):
            m.coefs_ = [W1[i].numpy().copy(), W2[i][:, cols].numpy().copy()]
            m.intercepts_ = [b1[i].numpy().copy(), b2[i, cols].numpy().copy()]
            o = m._optimizer
            o.t = int(t[i])
            o.ms = [mW1[i].numpy().copy(), mW2[i][:, cols].numpy().copy(), mb1[i].numpy().copy(),
                    mb2[i, cols].numpy().copy()]
            o.vs = [vW1[i].numpy().copy(), vW2[i][:, cols].numpy().copy(), vb1[i].numpy().copy(),
                    vb2[i, cols].numpy().copy()]
            Pt = np.zeros((test.size, K), np.float32)
            if test.size:
                xt = Zt[torch.from_numpy(test)]
                logit = torch.relu(xt @ W1[i] + b1[i]) @ W2[i] + b2[i] + closed[i]
                Pt[:] = torch.softmax(logit, dim=1).numpy()
            out.append(Pt)
    return out
