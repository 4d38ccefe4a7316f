"""The MLP out-of-fold model and ``score_label_issues(model=...)`` (pure numpy, no database)."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss

from label_audit.scoring import score_label_issues, update_label_issues
from label_audit.scoring.mlp import (
    choose_model,
    held_out_log_loss,
    mlp_candidate_reason,
    mlp_out_of_fold_probabilities,
)
from label_audit.scoring.probabilities import assign_folds


def _rings(n=6000, d=8, n_classes=3, noise=0.1, seed=0):
    """Classes are concentric shells around the origin: no linear model separates them (every
    class has the same mean), a one-hidden-layer MLP does."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    u = rng.normal(size=(n, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r = 1.0 + y + rng.uniform(-0.3, 0.3, n)
    X = (u * r[:, None]).astype(np.float32)
    err = np.zeros(n, bool)
    err[rng.choice(n, int(noise * n), replace=False)] = True
    yn = y.copy()
    yn[err] = (y[err] + rng.integers(1, n_classes, err.sum())) % n_classes
    return X, y, yn, err


def _blobs(n=6000, d=16, n_classes=4, noise=0.1, seed=0):
    """Linearly separable Gaussian classes: the logistic regression is the right model."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.6, size=(n_classes, d))
    y = rng.integers(0, n_classes, n)
    X = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    err = np.zeros(n, bool)
    err[rng.choice(n, int(noise * n), replace=False)] = True
    yn = y.copy()
    yn[err] = (y[err] + rng.integers(1, n_classes, err.sum())) % n_classes
    return X, y, yn, err


@pytest.fixture(scope="module")
def rings():
    return _rings()


def test_held_out_log_loss_matches_sklearn():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(5), size=200).astype(np.float32)
    y = rng.integers(0, 5, 200)
    assert held_out_log_loss(y, P) == pytest.approx(log_loss(y, P, labels=range(5)), rel=1e-5)
    P[0, y[0]] = 0.0  # clipped, not infinite
    assert np.isfinite(held_out_log_loss(y, P))


def test_choose_model_needs_a_clear_paired_gain():
    rng = np.random.default_rng(0)
    n, K = 4000, 4
    y = rng.integers(0, K, n)
    onehot = np.eye(K)[y]
    good = (0.7 * onehot + 0.3 / K).astype(np.float32)
    worse = (0.5 * onehot + 0.5 / K).astype(np.float32)
    # a clearly better MLP is taken, and the statistics say why
    model, stats = choose_model(y, worse, good)
    assert model == "mlp" and stats["z"] > 7
    assert stats["logistic"] == pytest.approx(held_out_log_loss(y, worse))
    assert stats["mlp"] == pytest.approx(held_out_log_loss(y, good))
    # a worse one, an identical one and a slightly better noisy one are not
    assert choose_model(y, good, worse)[0] == "logistic"
    assert choose_model(y, good, good)[0] == "logistic"

    def jittered():  # the same model with independent per-sample noise
        j = np.clip(good + rng.normal(scale=0.05, size=good.shape), 1e-3, None)
        return (j / j.sum(1, keepdims=True)).astype(np.float32)

    a, b = jittered(), jittered()
    slightly = (0.99 * b + 0.01 * onehot).astype(np.float32)  # lower loss on average, by little
    model, stats = choose_model(y, a, slightly)
    assert stats["mlp"] < stats["logistic"] and 0 < stats["z"] < 7 and model == "logistic"
    assert choose_model(y, a, slightly, min_z=stats["z"] / 2)[0] == "mlp"


def test_candidate_reasons():
    y = np.repeat(np.arange(3), 2000)
    assert mlp_candidate_reason(y, 3, 64, 5) is None
    assert "MLP_AUTO_MAX_WORK" in mlp_candidate_reason(y, 3, 64, 5, max_work=100)
    assert "MLP_AUTO_MAX_WORK" in mlp_candidate_reason(np.repeat(np.arange(3), 20_000), 3, 256, 5)
    assert "MLP_AUTO_MIN_ROWS" in mlp_candidate_reason(y[:1797], 3, 64, 5)
    assert mlp_candidate_reason(y[:1797], 3, 64, 5, min_rows=0) is None
    y_small = np.concatenate([y, [3, 3]])
    assert "[3]" in mlp_candidate_reason(y_small, 4, 64, 5)


def test_out_of_fold_means_out_of_fold(rings):
    X, _, yn, _ = rings
    folds = assign_folds(yn, 5, 0)
    P, models = mlp_out_of_fold_probabilities(X, yn, folds, n_classes=3, random_state=0)
    assert P.dtype == np.float32 and P.shape == (len(yn), 3)
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-5)
    for f, m in enumerate(models):  # row i's probabilities come from the model that did not see it
        test = folds == f
        np.testing.assert_allclose(P[test], m.predict_proba(X[test]), atol=1e-6)
        assert m.n_iter_ < 200  # early stopping ended the fit
    # a refit of fold 0 on its training rows with the same seed reproduces it: nothing else leaked in
    P2, _ = mlp_out_of_fold_probabilities(X, yn, folds, n_classes=3, random_state=0)
    np.testing.assert_array_equal(P, P2)


def test_auto_picks_the_mlp_where_the_classes_are_not_linear(rings):
    X, _, yn, err = rings
    auto = score_label_issues(yn, X, random_state=0, n_repeats=1)
    lin = score_label_issues(yn, X, random_state=0, n_repeats=1, model="logistic")
    assert auto.params["model_used"] == "mlp"
    ll = auto.params["held_out_log_loss"]
    assert ll["mlp"] < 0.7 * ll["logistic"] and auto.params["mlp_gain_z"] > 7
    assert lin.params["model_used"] == "logistic" and "held_out_log_loss" not in lin.params
    ap_auto = average_precision_score(err, auto.label_issue_score)
    ap_lin = average_precision_score(err, lin.label_issue_score)
    assert ap_auto > ap_lin + 0.05, (ap_auto, ap_lin)
    # the model's own margin, without the neighbours: the MLP's is far better here
    assert (average_precision_score(err, 1 - auto.self_confidence)
            > average_precision_score(err, 1 - lin.self_confidence) + 0.2)


def test_auto_keeps_the_logistic_regression_on_linear_classes():
    X, _, yn, _ = _blobs()
    r = score_label_issues(yn, X, random_state=0, n_repeats=1)
    assert "mlp" in r.params["held_out_log_loss"]
    assert r.params["model_used"] == "logistic"


def test_auto_skips_the_mlp_when_a_class_is_small(rings):
    X, _, yn, _ = rings
    yn = yn.copy()
    yn[:3] = 3
    with pytest.warns(UserWarning):  # the engine's warning about a class smaller than the folds
        r = score_label_issues(yn, X, random_state=0, n_repeats=1, classes=list("abcd"))
    assert r.params["model_used"] == "logistic"
    assert "[3]" in r.params["mlp_skipped"]
    with pytest.raises(ValueError, match=r"model='mlp' cannot be fitted here: classes \[3\]"), \
            pytest.warns(UserWarning):
        score_label_issues(yn, X, random_state=0, n_repeats=1, classes=list("abcd"), model="mlp")


def test_bad_model_arguments(rings):
    X, _, yn, _ = rings
    with pytest.raises(ValueError, match="model must be one of"):
        score_label_issues(yn, X, model="svm")
    with pytest.raises(ValueError, match="model='mlp' runs in this process only"):
        score_label_issues(yn, X, model="mlp", backend="ray")


@pytest.fixture(scope="module")
def rings_update(rings):
    """An MLP result on the rings, 150 of its errors fixed, and the full recompute of that."""
    X, y, yn, err = rings
    r = score_label_issues(yn, X, random_state=0, n_repeats=2)
    assert r.params["model_used"] == "mlp"
    fixed = np.flatnonzero(err)[:150]
    new = yn.copy()
    new[fixed] = y[fixed]
    full = score_label_issues(new, X, random_state=0, model="mlp", folds=r.fold_assignments)
    return r, new, fixed, full


def test_update_of_an_mlp_result_finetunes_its_fold_mlps(rings, rings_update):
    """The default update continues training the fitted fold MLPs (3 epochs): its ranking is
    closer to the full recompute than keeping the old probabilities is, and than a full
    recompute with another seed is (measured here: Spearman 0.959 / 0.939 / 0.937)."""
    from scipy.stats import spearmanr

    X, y, yn, err = rings
    r, new, fixed, full = rings_update
    before = [m.coefs_[0].copy() for m in r.model_state["mlp_models"][0]]
    u = update_label_issues(r, X, new)
    assert u.params["update_solver"] == "mlp_finetune"
    for m, c in zip(r.model_state["mlp_models"][0], before):  # the result it started from is intact
        np.testing.assert_array_equal(m.coefs_[0], c)
    assert not np.array_equal(u.model_state["mlp_models"][0][0].coefs_[0], before[0])
    kept = update_label_issues(r, X, new, refit=False)
    assert kept.params["update_solver"] == "none"
    other_seed = score_label_issues(new, X, random_state=1, model="mlp", folds=r.fold_assignments)

    def rho(a):
        return spearmanr(a.label_issue_score, full.label_issue_score)[0]

    assert rho(u) > max(rho(kept), rho(other_seed)), (rho(u), rho(kept), rho(other_seed))
    assert u.self_confidence[fixed].mean() > kept.self_confidence[fixed].mean()
    # a second round with removals continues from the trained copies, folds aligned
    removed = np.flatnonzero(~err)[:100]
    u2 = update_label_issues(u, X, new, removed=removed)
    keep = np.setdiff1d(np.arange(len(yn)), removed)
    assert u2.params["update_solver"] == "mlp_finetune" and len(u2) == keep.size
    np.testing.assert_array_equal(u2.fold_assignments, r.fold_assignments[:, keep])
    # the fine-tune's mini-batch order follows the run's random_state, like the refit's
    from dataclasses import replace

    from label_audit.scoring.mlp import finetune_fold_mlps

    r5 = replace(r, params=dict(r.params, random_state=5))
    u5 = update_label_issues(r5, X, new)
    Z = r.model_state["preprocessor"].transform_rows(X, np.arange(len(yn)))
    P5, _ = finetune_fold_mlps(r.model_state["mlp_models"], Z, new, list(r.fold_assignments), n_classes=len(r.classes),
                               random_state=5)
    np.testing.assert_allclose(u5.pred_probs, P5, atol=1e-6)
    assert np.abs(u5.pred_probs - u.pred_probs).max() > 1e-3
    with pytest.raises(ValueError, match="mlp_update"):
        update_label_issues(r, X, new, mlp_update="retrain")
    with pytest.raises(ValueError, match="mlp_epochs"):
        update_label_issues(r, X, new, mlp_epochs=0)


@pytest.mark.parametrize("K,absent", [(4, None), (2, None), (4, 3)])
def test_batched_finetune_step_equals_sklearn_partial_fit(K, absent):
    """The batched torch fine-tune does what scikit-learn's partial_fit does: with every fold's
    training rows in one mini-batch (<= 200 rows, so the shuffling cannot matter) two epochs give
    the same weights, Adam state and probabilities; also for binary models (one logistic output)
    and for a model without an output for a class absent from its training rows."""
    import copy

    from label_audit.scoring.mlp import _new_mlp, _train_batched

    rng = np.random.default_rng(0)
    n = 240
    Z = rng.normal(size=(n, 6)).astype(np.float32)
    y = rng.integers(0, K, n)
    if absent is not None:
        y[y == absent] = 0
    folds = np.arange(n) % 2
    models, jobs = [], []
    for f in range(2):
        train, test = np.flatnonzero(folds != f)[:150], np.flatnonzero(folds == f)
        models.append(_new_mlp(16, 1e-2, 0, 30).fit(Z[train], y[train]))
        jobs.append((train, test))
    new = y.copy()
    flip = rng.choice(n, 30, replace=False)
    new[flip] = 0 if absent is not None else rng.integers(0, K, 30)
    ours = [copy.deepcopy(m) for m in models]
    P = _train_batched(ours, jobs, Z, new, K, 2, 0)
    for old, mine, (train, test), Pt in zip(models, ours, jobs, P):
        ref = copy.deepcopy(old)
        ref.set_params(early_stopping=False)
        ref.best_loss_ = np.inf
        for _ in range(2):
            ref.partial_fit(Z[train], new[train])
        for a, b in zip(ref.coefs_ + ref.intercepts_, mine.coefs_ + mine.intercepts_):
            np.testing.assert_allclose(a, b, atol=1e-6)
        for a, b in zip(ref._optimizer.ms + ref._optimizer.vs, mine._optimizer.ms + mine._optimizer.vs):
            np.testing.assert_allclose(a, b, atol=1e-7)
        assert ref._optimizer.t == mine._optimizer.t
        expected = np.zeros((test.size, K), np.float32)
        expected[:, ref.classes_] = ref.predict_proba(Z[test])
        np.testing.assert_allclose(Pt, expected, atol=1e-6)
        assert not np.allclose(old.coefs_[0], mine.coefs_[0])  # it did train


def test_update_of_an_mlp_result_can_refit_to_the_full_recompute(rings, rings_update):
    X, y, yn, err = rings
    r, new, fixed, full = rings_update
    u = update_label_issues(r, X, new, mlp_update="refit")
    assert u.params["update_solver"] == "mlp"
    np.testing.assert_allclose(u.pred_probs, full.pred_probs, atol=1e-6)
    np.testing.assert_allclose(u.label_issue_score, full.label_issue_score, atol=1e-5)
    # the corrected rows now agree with their labels
    assert u.self_confidence[fixed].mean() > r.self_confidence[fixed].mean() + 0.1
    # removals: the kept rows, the repeats' fold arrays aligned with them
    removed = np.flatnonzero(~err)[:100]
    u2 = update_label_issues(u, X, new, removed=removed, mlp_update="refit")
    keep = np.setdiff1d(np.arange(len(yn)), removed)
    assert len(u2) == keep.size and u2.fold_assignments.shape == (2, keep.size)
    np.testing.assert_array_equal(u2.fold_assignments, r.fold_assignments[:, keep])
    assert u2.params["update_solver"] == "mlp"
    full2 = score_label_issues(new[keep], X[keep], random_state=0, model="mlp", folds=u2.fold_assignments)
    # the full recompute re-standardises the kept rows, so the MLPs start from other inputs
    assert np.corrcoef(u2.label_issue_score, full2.label_issue_score)[0, 1] > 0.9


def test_small_data_keeps_the_logistic_regression_without_fitting_the_mlp(rings):
    X, _, yn, _ = rings
    r = score_label_issues(yn[:1500], X[:1500], random_state=0, n_repeats=1)
    assert r.params["model_used"] == "logistic" and "MLP_AUTO_MIN_ROWS" in r.params["mlp_skipped"]
    assert "held_out_log_loss" not in r.params
    forced = score_label_issues(yn[:1500], X[:1500], random_state=0, n_repeats=1, model="mlp")
    assert forced.params["model_used"] == "mlp" and "mlp" in forced.params["held_out_log_loss"]
