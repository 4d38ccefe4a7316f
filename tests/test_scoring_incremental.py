"""update_label_issues matches a full recompute (same folds) within the documented tolerance."""

import time

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

from label_audit.scoring import score_label_issues, update_label_issues


@pytest.fixture(scope="module")
def setup():
    X, y = load_digits(return_X_y=True)
    X = ((X - X.mean(0)) / (X.std(0) + 1e-6)).astype(np.float32)
    rng = np.random.default_rng(0)
    err = rng.random(len(y)) < 0.1
    yn = y.copy()
    yn[err] = (y[err] + 1) % 10
    r = score_label_issues(yn, X)
    return X, y, yn, err, r, rng


def _compare(a, b):
    d = np.abs(a.label_issue_score - b.label_issue_score)
    rho = spearmanr(a.label_issue_score, b.label_issue_score)[0]
    agree = (a.is_label_issue == b.is_label_issue).mean()
    return d.max(), rho, agree


def test_relabel_and_remove_matches_full(setup):
    X, y, yn, err, r, rng = setup
    n = len(y)
    ch = rng.choice(np.flatnonzero(err), n // 100, replace=False)  # reviewer fixes 1%
    y2 = yn.copy()
    y2[ch] = y[ch]
    rem = rng.choice(np.setdiff1d(np.arange(n), ch), n // 100, replace=False)  # and removes 1%
    t0 = time.perf_counter()
    ri = update_label_issues(r, X, y2, changed=ch, removed=rem)
    t_inc = time.perf_counter() - t0
    keep = np.setdiff1d(np.arange(n), rem)
    t0 = time.perf_counter()
    rf = score_label_issues(y2[keep], X[keep], folds=r.fold_assignments[:, keep])
    t_full = time.perf_counter() - t0
    np.testing.assert_array_equal(ri.index, keep)
    np.testing.assert_array_equal(ri.labels, y2[keep])
    assert ri.params["update_solver"] == "newton"
    dmax, rho, agree = _compare(ri, rf)
    assert dmax <= 0.05 and rho >= 0.99 and agree >= 0.99, (dmax, rho, agree)
    # fixed samples are no longer flagged
    pos = np.searchsorted(keep, ch)
    assert ri.is_label_issue[pos].mean() < 0.2
    print(f"incremental {t_inc:.3f}s vs full {t_full:.3f}s")


def test_relabel_only_no_refit_keeps_graph(setup):
    X, y, yn, err, r, rng = setup
    y2 = yn.copy()
    y2[:5] = (y2[:5] + 3) % 10
    ri = update_label_issues(r, X, y2, refit=False)
    np.testing.assert_array_equal(ri.neighbor_indices, r.neighbor_indices)
    np.testing.assert_array_equal(ri.pred_probs, r.pred_probs)
    assert (ri.label_issue_score[:5] > r.label_issue_score[:5]).mean() >= 0.8


def test_removal_repairs_neighbors(setup):
    X, y, yn, err, r, rng = setup
    rem = np.arange(0, 60)
    ri = update_label_issues(r, X, yn, removed=rem, refit=False)
    assert ri.neighbor_indices.max() < len(y) - 60 and ri.neighbor_indices.min() >= 0
    assert not (ri.neighbor_indices == np.arange(len(ri))[:, None]).any()


def test_bad_update(setup):
    X, y, yn, err, r, rng = setup
    with pytest.raises(ValueError, match="All samples removed"):
        update_label_issues(r, X, yn, removed=np.ones(len(y), bool))
    with pytest.raises(ValueError, match="same samples"):
        update_label_issues(r, X, yn[:-1])


def test_folds_stay_aligned_after_removal_without_refit():
    X, y = load_digits(return_X_y=True)
    X, y = X[:300].astype(np.float32), y[:300]
    r = score_label_issues(y, features=X, n_folds=3)
    removed = np.zeros(300, bool)
    removed[::10] = True
    r2 = update_label_issues(r, X, y, removed=removed, refit=False)
    assert len(r2.model_state["folds"]) == len(r2.folds) == 270
    np.testing.assert_array_equal(r2.model_state["folds"], r.folds[~removed])
    assert r.fold_assignments.shape == (r.params["n_repeats_used"], 300) and r.params["n_repeats_used"] > 1
    np.testing.assert_array_equal(r2.fold_assignments, r.fold_assignments[:, ~removed])
    # a later refit uses the right fold of every remaining row
    X2, y2 = X[~removed], y[~removed].copy()
    y2[:5] = (y2[:5] + 1) % 10
    changed = np.zeros(270, bool)
    changed[:5] = True
    r3 = update_label_issues(r2, X2, y2, changed=changed, refit=True)
    full = score_label_issues(y2, features=X2, n_folds=3, folds=r2.fold_assignments)
    assert np.abs(r3.label_issue_score - full.label_issue_score).max() < 0.1


def test_labels_of_removed_rows_are_ignored():
    X, y = load_digits(return_X_y=True)
    X, y = X[:200].astype(np.float32), y[:200]
    r = score_label_issues(y, features=X, n_folds=3)
    removed = np.zeros(200, bool)
    removed[:4] = True
    placeholder = y.copy()
    placeholder[:4] = -1  # a sentinel for rows being removed
    a = update_label_issues(r, X, placeholder, removed=removed, refit=False)
    b = update_label_issues(r, X, y, removed=removed, refit=False)
    np.testing.assert_array_equal(a.label_issue_score, b.label_issue_score)
    bad = y.copy()
    bad[10] = -1  # a kept row with an invalid label is still refused
    with pytest.raises(ValueError):
        update_label_issues(r, X, bad, removed=removed, refit=False)


# --------------------------------------------------------------------------- #
# the Newton refit (default): semantics checked with autograd, independent of newton.py
# --------------------------------------------------------------------------- #
def _fold_gradients(X, labels, folds, state, coef, intercept):
    """Per fold, the gradient of ``sum_{train} CE + ||W||^2 / 2C`` at (coef[f], intercept[f]) in
    the preprocessed coordinates of ``state`` (torch autograd), flattened: (F, d K + K)."""
    import torch

    prep = state["preprocessor"]
    Z = torch.from_numpy(((X - prep.mean) / prep.scale).astype(np.float32))
    y = torch.from_numpy(np.asarray(labels, np.int64))
    out = []
    for f in range(coef.shape[0]):
        W = torch.tensor(coef[f], requires_grad=True)
        b = torch.tensor(intercept[f], requires_grad=True)
        tr = torch.from_numpy(np.asarray(folds) != f)
        loss = torch.nn.functional.cross_entropy(Z[tr] @ W + b, y[tr], reduction="sum")
        (loss + (W * W).sum() / (2 * state["C"])).backward()
        out.append(torch.cat([W.grad.flatten(), b.grad]).numpy())
    return np.stack(out)


def _change(setup, frac=0.01, seed=1):
    X, y, yn, err, r, _ = setup
    rng = np.random.default_rng(seed)
    n = len(y)
    ch = rng.choice(np.flatnonzero(err), max(1, int(frac * n)), replace=False)
    y2 = yn.copy()
    y2[ch] = y[ch]
    rem = rng.choice(np.setdiff1d(np.arange(n), ch), max(1, int(frac * n)), replace=False)
    keep = np.setdiff1d(np.arange(n), rem)
    return y2, ch, rem, keep


def test_newton_update_is_the_exact_response_to_the_change(setup):
    """The default refit solves grad F_new(W) = grad F_old(W_old): the new models carry the
    previous fit's gradient (optimisation gap) and nothing else."""
    X, y, yn, err, r, _ = setup
    y2, ch, rem, keep = _change(setup)
    st = r.model_state
    g_old = _fold_gradients(X, r.labels, r.folds, st, st["coef"], st["intercept"])
    g_start = _fold_gradients(X[keep], y2[keep], r.folds[keep], st, st["coef"], st["intercept"])
    initial = np.linalg.norm(g_start - g_old, axis=1)  # what the change does to the gradient
    res = {}
    for steps in (1, 2, 3):
        ri = update_label_issues(r, X, y2, changed=ch, removed=rem, newton_steps=steps, newton_rtol=0)
        assert ri.params["update_solver"] == "newton"
        info = ri.model_state["update_info"]["newton"]
        assert info["target"] == "previous_gap" and info["newton_steps"] == steps
        assert info["removed_with_features"] == len(rem)
        g = _fold_gradients(X[keep], y2[keep], r.folds[keep], st, ri.model_state["coef"],
                            ri.model_state["intercept"])
        res[steps] = np.linalg.norm(g - g_old, axis=1) / initial
    # relabelled samples leave the quadratic regime: one step leaves a visible residual, every
    # further (Krylov-started, 3 CG iterations) step removes most of what is left
    assert res[1].max() > 0.1, res
    assert res[2].max() < 0.5 * res[1].max(), res
    assert res[3].max() < 0.05, res


def test_converge_reaches_the_optimum_of_the_new_objective(setup):
    """converge=True ends at the optimum: compared with fold models refined by L-BFGS to a
    gradient below 1e-6 (an independent solver)."""
    from label_audit.benchmarks.incremental import converged_probabilities

    X, y, yn, err, _, _ = setup
    # one fold assignment: the optimum below is that of one set of fold models
    r = score_label_issues(yn, X, n_repeats=1)
    y2, ch, rem, keep = _change(setup, seed=2)
    ri = update_label_issues(r, X, y2, changed=ch, removed=rem, converge=True, newton_steps=8, cg_max_iter=10,
                             newton_rtol=1e-3)
    info = ri.model_state["update_info"]["newton"]
    # steps make progress until float32 precision stops the line search (then step size 0)
    assert info["target"] == "optimum" and info["step_size"][0] > 0 and min(info["gradient_ratio"]) < 0.02
    st = dict(r.model_state, folds=r.folds[keep])  # the optimum in the same coordinates
    P_opt = converged_probabilities(X[keep], y2[keep], r.folds[keep], st)
    assert np.abs(ri.pred_probs - P_opt).max() < 0.01
    # the default (previous gap kept) is further from the optimum than converge=True
    rd = update_label_issues(r, X, y2, changed=ch, removed=rem)
    assert np.abs(rd.pred_probs - P_opt).max() > np.abs(ri.pred_probs - P_opt).max()


def test_fold_without_changed_training_rows_keeps_its_model(setup):
    X, y, yn, err, r, _ = setup
    i = int(np.flatnonzero(err)[0])
    y2 = yn.copy()
    y2[i] = y[i]  # one relabel: its own fold's training set is unchanged
    ri = update_label_issues(r, X, y2)
    assert r.fold_assignments.shape[0] > 1  # checked in every repeat of the out-of-fold fit
    new_reps = [ri.model_state] + ri.model_state["more_repeats"]
    for rep, old, new, info in zip(range(5), [r.model_state] + r.model_state["more_repeats"], new_reps,
                                   ri.model_state["update_info"]["newton_repeats"]):
        f = int(r.fold_assignments[rep, i])
        assert f not in info["folds_refit"] and len(info["folds_refit"]) == 4
        np.testing.assert_array_equal(new["coef"][f], old["coef"][f])
        assert not np.array_equal(new["coef"][(f + 1) % 5], old["coef"][(f + 1) % 5])
    # one repeat: the rows its fold holds out (the relabelled one among them) keep their probabilities
    r1 = score_label_issues(yn, X, n_repeats=1)
    ri1 = update_label_issues(r1, X, y2)
    own = r1.folds == r1.folds[i]
    np.testing.assert_allclose(ri1.pred_probs[own], r1.pred_probs[own], atol=1e-6)
    # the relabelled row now agrees with its neighbours and model
    assert ri.label_issue_score[i] < r.label_issue_score[i]


def test_removed_rows_given_as_zeros_keep_their_pull(setup):
    """Without the removed samples' features the models keep their contribution: the update
    then solves grad F_new(W) = grad F_old-on-kept-rows(W_old); with the features the removal
    is taken out of the models."""
    X, y, yn, err, r, _ = setup
    y2, ch, rem, keep = _change(setup)
    Xz = X.copy()
    Xz[rem] = 0.0  # placeholders, as the review workflow passes them
    rz = update_label_issues(r, Xz, y2, changed=ch, removed=rem)
    assert rz.model_state["update_info"]["newton"]["removed_with_features"] == 0
    st = r.model_state
    g_old_kept = _fold_gradients(X[keep], r.labels[keep], r.folds[keep], st, st["coef"], st["intercept"])
    g_start = _fold_gradients(X[keep], y2[keep], r.folds[keep], st, st["coef"], st["intercept"])
    g = _fold_gradients(X[keep], y2[keep], r.folds[keep], st, rz.model_state["coef"], rz.model_state["intercept"])
    ratio = np.linalg.norm(g - g_old_kept, axis=1) / np.linalg.norm(g_start - g_old_kept, axis=1)
    assert ratio.max() < 0.1, ratio
    rf = update_label_issues(r, X, y2, changed=ch, removed=rem)
    assert np.abs(rf.model_state["coef"] - rz.model_state["coef"]).max() > 1e-3
    full = score_label_issues(y2[keep], X[keep], folds=r.fold_assignments[:, keep])
    dz, df = _compare(rz, full), _compare(rf, full)
    assert df[0] <= 0.05 and df[1] >= 0.99 and df[2] >= 0.99, df
    assert dz[0] <= 0.1 and dz[1] >= 0.99 and dz[2] >= 0.99, dz


def test_two_hop_repair_is_a_valid_graph_close_to_exact(setup):
    X, y, yn, err, r, _ = setup
    rem = np.random.default_rng(4).choice(len(y), 90, replace=False)  # 5%: many rows lose a neighbour
    import dataclasses

    # without spare neighbours every row that lost one is repaired by a search
    r = dataclasses.replace(r, model_state={k: v for k, v in r.model_state.items() if not k.startswith("spare_")})
    a = update_label_issues(r, X, yn, removed=rem, refit=False, knn_repair="two_hop")
    b = update_label_issues(r, X, yn, removed=rem, refit=False, knn_repair="exact")
    assert a.model_state["update_info"]["knn_repair"] == "two_hop"
    assert b.model_state["update_info"]["knn_repair"] == "exact"
    m = len(y) - len(rem)
    for res in (a, b):
        nb = res.neighbor_indices
        assert nb.min() >= 0 and nb.max() < m
        assert not (nb == np.arange(m)[:, None]).any()
        assert (np.diff(res.neighbor_distances, axis=1) >= -1e-6).all()
        assert all(len(set(row)) == len(row) for row in nb)
    keep = np.setdiff1d(np.arange(len(y)), rem)
    full = score_label_issues(yn[keep], X[keep], folds=r.fold_assignments[:, keep])
    np.testing.assert_array_equal(np.sort(b.neighbor_indices, 1), np.sort(full.neighbor_indices, 1))
    repaired = a.model_state["update_info"]["knn_repaired"]
    assert repaired > 100
    same = (np.sort(a.neighbor_indices, 1) == np.sort(b.neighbor_indices, 1)).all(axis=1)
    assert same.mean() > 0.9  # two-hop finds the exact new neighbours for most repaired rows
    # where it does not, the neighbour it found is nearly as close
    assert np.abs(a.neighbor_distances - b.neighbor_distances).max() < 0.1


def test_spare_neighbours_give_the_exact_graph_without_a_search(setup):
    """A row that lost neighbours takes the next ones from its spares: the graph equals a full
    recompute's exactly, and a second round still does (spares carried over)."""
    X, y, yn, err, r, _ = setup
    n = len(y)
    assert r.model_state["spare_neighbors"].shape == (n, 5)
    assert (r.model_state["spare_distances"] >= r.neighbor_distances[:, -1:] - 1e-6).all()
    rem = np.random.default_rng(4).choice(n, 90, replace=False)
    a = update_label_issues(r, X, yn, removed=rem, refit=False)
    info = a.model_state["update_info"]
    assert info["knn_from_spares"] > 100 and info["knn_repaired"] < info["knn_from_spares"] / 10
    keep = np.setdiff1d(np.arange(n), rem)
    full = score_label_issues(yn[keep], X[keep], folds=r.fold_assignments[:, keep])
    np.testing.assert_array_equal(np.sort(a.neighbor_indices, 1), np.sort(full.neighbor_indices, 1))
    np.testing.assert_allclose(a.neighbor_distances, full.neighbor_distances, atol=1e-5)
    rem2 = np.random.default_rng(5).choice(len(keep), 60, replace=False)
    b = update_label_issues(a, X[keep], yn[keep], removed=rem2, refit=False)
    keep2 = keep[np.setdiff1d(np.arange(len(keep)), rem2)]
    full2 = score_label_issues(yn[keep2], X[keep2], folds=r.fold_assignments[:, keep2])
    np.testing.assert_array_equal(np.sort(b.neighbor_indices, 1), np.sort(full2.neighbor_indices, 1))


def test_used_up_spares_are_not_read_as_neighbours(setup):
    """A spare slot marked -1 (used up in an earlier round) is empty, not row -1 (the last row):
    a row whose spares are used up and that loses a neighbour is searched again."""
    import dataclasses

    X, y, yn, err, r, _ = setup
    n = len(y)
    st = dict(r.model_state)
    st["spare_neighbors"] = st["spare_neighbors"].copy()
    st["spare_distances"] = st["spare_distances"].copy()
    i = 0
    st["spare_neighbors"][i] = -1
    st["spare_distances"][i] = np.inf
    rem = np.array([r.neighbor_indices[i, 0]])
    assert n - 1 not in r.neighbor_indices[i] and n - 1 != rem[0]
    a = update_label_issues(dataclasses.replace(r, model_state=st), X, yn, removed=rem, refit=False)
    keep = np.setdiff1d(np.arange(n), rem)
    full = score_label_issues(yn[keep], X[keep], folds=r.fold_assignments[:, keep])
    assert np.isfinite(a.neighbor_distances).all()
    np.testing.assert_array_equal(np.sort(a.neighbor_indices, 1), np.sort(full.neighbor_indices, 1))


def test_knn_weight_choice_and_chained_updates_match_full(setup):
    """Two review rounds in a row, each compared with a full recompute; the 'auto' kNN weight
    is chosen as the full recompute chooses it."""
    X, y, yn, err, r, _ = setup
    y2, ch, rem, keep = _change(setup, seed=5)
    r1 = update_label_issues(r, X, y2, changed=ch, removed=rem)
    X1, y1 = X[keep], y2[keep].copy()
    err1 = np.flatnonzero(y1 != y[keep])
    y1[err1[:20]] = y[keep][err1[:20]]
    r2 = update_label_issues(r1, X1, y1)
    full = score_label_issues(y1, X1, folds=r1.fold_assignments)
    # the same rule on nearly the same accuracies: the weight is continuous in them (measured
    # 0.504 vs 0.5; the former grid rule could differ by a whole 0.1 step at a near-tie)
    assert abs(r2.params["knn_weight_used"] - full.params["knn_weight_used"]) < 0.02
    dmax, rho, agree = _compare(r2, full)
    assert dmax <= 0.05 and rho >= 0.99 and agree >= 0.99, (dmax, rho, agree)
    np.testing.assert_array_equal(r2.index, keep)


def test_lbfgs_solver_still_available(setup):
    X, y, yn, err, r, _ = setup
    y2, ch, rem, keep = _change(setup, seed=6)
    ri = update_label_issues(r, X, y2, changed=ch, removed=rem, solver="lbfgs")
    assert ri.params["update_solver"] == "lbfgs" and "newton" not in ri.model_state["update_info"]
    full = score_label_issues(y2[keep], X[keep], folds=r.fold_assignments[:, keep])
    dmax, rho, agree = _compare(ri, full)
    assert dmax <= 0.05 and rho >= 0.99 and agree >= 0.99, (dmax, rho, agree)
    assert update_label_issues(r, X, y2, refit=False).params["update_solver"] == "none"


def test_bad_solver_and_repair_names(setup):
    X, y, yn, err, r, _ = setup
    with pytest.raises(ValueError, match="solver"):
        update_label_issues(r, X, yn, solver="sgd")
    with pytest.raises(ValueError, match="knn_repair"):
        update_label_issues(r, X, yn, knn_repair="approx")
    for bad in (-1, 2.5, "many"):
        with pytest.raises(ValueError, match="exact_rows must be a non-negative int"):
            update_label_issues(r, X, yn, exact_rows=bad)
    with pytest.raises(ValueError, match="hessian_rows"):
        update_label_issues(r, X, yn, hessian_rows=-5)


def test_incremental_benchmark_table():
    from label_audit.benchmarks.incremental import format_table, run

    out = run(sizes=[(1500, 16, 4)], fractions=[0.02], floor=True, seeds=(0, 1))
    assert sorted({r["seed"] for r in out["rows"]}) == [0, 1]
    rows = {r["method"]: r for r in out["rows"] if "fraction" in r and r["seed"] == 1}
    assert set(rows) == {"full (anchor)", "full, random_state+1", "refit=True (auto: newton)", "refit=False"}
    newton = rows["refit=True (auto: newton)"]
    # AUPRC for the errors left after the change, for the anchor and each update
    assert all(0 < rows[m]["auprc"] <= 1 for m in rows)
    assert newton["update_s"] > 0 and newton["speedup"] == pytest.approx(newton["full_s"] / newton["update_s"])
    assert 0 <= newton["max_d"] <= 1 and -1 <= newton["spearman"] <= 1 and 0 <= newton["flags_agree"] <= 1
    # the refit moves the scores towards the full recompute
    assert newton["spearman"] >= rows["refit=False"]["spearman"] - 1e-3
    text = format_table(out)
    assert "refit=True (auto: newton)" in text and "1500x16x4" in text


def test_incremental_bench_rejects_bad_lists(capsys):
    from label_audit.benchmarks.incremental import main

    with pytest.raises(SystemExit) as e:
        main(["--mlp-epochs", "abc"])
    assert e.value.code == 2
    assert "--mlp-epochs: expected comma-separated integers, got 'abc'" in capsys.readouterr().err


def test_newton_update_on_pca_features(setup):
    """d > max_dim: the models live on PCA coordinates (not an affine map of the input)."""
    X, y, yn, err, r, _ = setup
    r16 = score_label_issues(yn, X, max_dim=16)
    assert not r16.model_state["preprocessor"].folds_into_weights
    y2, ch, rem, keep = _change(setup, seed=7)
    ri = update_label_issues(r16, X, y2, changed=ch, removed=rem)
    assert ri.params["update_solver"] == "newton" and ri.model_state["coef"].shape[1] == 16
    full = score_label_issues(y2[keep], X[keep], folds=r16.fold_assignments[:, keep], max_dim=16)
    dmax, rho, agree = _compare(ri, full)
    assert dmax <= 0.05 and rho >= 0.99 and agree >= 0.99, (dmax, rho, agree)
    # the fixed samples are no longer flagged
    pos = np.searchsorted(keep, ch)
    assert ri.is_label_issue[pos].mean() < 0.2
    # the subsampled refit reads the PCA coordinates too (row norms, sampled Hessian)
    rs = update_label_issues(r16, X, y2, changed=ch, removed=rem, solver="subsampled", hessian_rows=600,
                             exact_rows=100)
    info = rs.model_state["update_info"]["newton"]
    assert 400 < info["hessian_rows"] < 800 and info["exact_rows"] > 80
    dmax, rho, agree = _compare(rs, full)
    assert dmax <= 0.05 and rho >= 0.99 and agree >= 0.99, (dmax, rho, agree)


def test_removals_without_features_leave_the_models_alone(setup):
    X, y, yn, err, r, _ = setup
    rem = np.arange(0, 1797, 50)
    Xz = X.copy()
    Xz[rem] = 0.0
    ri = update_label_issues(r, Xz, yn, removed=rem)
    keep = np.setdiff1d(np.arange(len(y)), rem)
    assert ri.params["update_solver"] == "newton"
    np.testing.assert_allclose(ri.model_state["coef"], r.model_state["coef"], atol=1e-6)
    np.testing.assert_allclose(ri.pred_probs, r.pred_probs[keep], atol=1e-5)
    # given pred_probs there are no fold models to refit
    rp = score_label_issues(yn, X, pred_probs=r.pred_probs)
    y2 = yn.copy()
    y2[:3] = (y2[:3] + 1) % 10
    assert update_label_issues(rp, X, y2).params["update_solver"] == "none"


@pytest.fixture(scope="module")
def synthetic_12k():
    """12k x 32 x 10 pooled-CNN-like features, 10% uniform noise, scored once; a change of 1%
    fixed labels + 1% removed rows and the full recompute on the kept rows (same folds)."""
    from label_audit.benchmarks.datasets import make_synthetic_features
    from label_audit.benchmarks.incremental import make_change
    from label_audit.benchmarks.noise import uniform_noise

    X, y, _ = make_synthetic_features(n=12_000, d=32, n_classes=10, n_superclasses=3, random_state=0)
    X = X.astype(np.float32)
    yn = uniform_noise(y, 0.1, 10, random_state=0)
    r = score_label_issues(yn, X, model="logistic")  # the refits under test are the LR's
    y2, ch, rem, keep = make_change(y, yn, 0.01, np.random.default_rng(1))
    full = score_label_issues(y2[keep], X[keep], folds=r.fold_assignments[:, keep], model="logistic")
    return X, r, y2, ch, rem, keep, full


def test_subsampled_newton_solves_its_model_of_the_change(synthetic_12k):
    """solver='subsampled' keeps the untouched rows' gradient linear around the previous weights
    (Hessian from sampled rows) and the relabelled rows exact.  With every row in the Hessian
    its steps solve that model (model gradient -> 0), and the true fold gradients then carry
    the previous fit's gradient up to the linearisation (measured 0.065 of the change's
    gradient, 0.164 before the 1024 largest-norm rows were evaluated exactly; Newton-CG on all
    rows: 0.030)."""
    X, r, y2, ch, rem, keep, full = synthetic_12k
    st = r.model_state
    g_old = _fold_gradients(X, r.labels, r.folds, st, st["coef"], st["intercept"])
    g_start = _fold_gradients(X[keep], y2[keep], r.folds[keep], st, st["coef"], st["intercept"])
    initial = np.linalg.norm(g_start - g_old, axis=1)
    ri = update_label_issues(r, X, y2, changed=ch, removed=rem, solver="subsampled", hessian_rows=10**6,
                             newton_steps=5, newton_rtol=0, cg_max_iter=10, cg_correction_iter=10)
    info = ri.model_state["update_info"]["newton"]
    assert ri.params["update_solver"] == "subsampled"
    assert info["hessian_rows"] == len(keep) - len(ch) - info["exact_rows"] and info["exact_rows"] > 1000
    assert info["newton_steps"] == 5 and info["removed_with_features"] == len(rem)
    assert info["gradient_ratio"][-1] < 0.01, info["gradient_ratio"]  # measured 0.0021 after 5 steps
    g = _fold_gradients(X[keep], y2[keep], r.folds[keep], st, ri.model_state["coef"], ri.model_state["intercept"])
    assert (np.linalg.norm(g - g_old, axis=1) / initial).max() < 0.15  # measured 0.065
    dmax, rho, agree = _compare(ri, full)
    assert dmax <= 0.05 and rho >= 0.999 and agree >= 0.99, (dmax, rho, agree)  # 0.004, 1.0000, 0.9991


def test_subsampled_newton_with_a_sampled_hessian_stays_within_tolerance(synthetic_12k):
    X, r, y2, ch, rem, keep, full = synthetic_12k
    ri = update_label_issues(r, X, y2, changed=ch, removed=rem, solver="subsampled")  # 8192 sampled rows
    info = ri.model_state["update_info"]["newton"]
    assert 7000 < info["hessian_rows"] < 9500 and info["preconditioner"] == "reused"
    dmax, rho, agree = _compare(ri, full)
    assert dmax <= 0.05 and rho >= 0.999 and agree >= 0.99, (dmax, rho, agree)  # 0.010, 1.0000, 0.9981
    # even 2000 sampled rows are closer to the full recompute than keeping the old models
    small = _compare(update_label_issues(r, X, y2, changed=ch, removed=rem, solver="subsampled",
                                         hessian_rows=2000), full)
    stale = _compare(update_label_issues(r, X, y2, changed=ch, removed=rem, refit=False), full)
    assert small[0] < stale[0] and small[1] > stale[1], (small, stale)  # 0.018 vs 0.096


def test_subsampled_newton_evaluates_the_rows_far_from_the_data_exactly(synthetic_12k):
    """Rows of large norm move their logits by ||z|| ||dW||: linearised, their loss is far from
    quadratic over the step.  With the ``exact_rows`` largest-norm rows evaluated exactly, the
    subsampled refit gives the exact Newton-CG refit's probabilities; without, not (measured
    max |dP| 0.008 vs 0.043 here; at 30k x 128 x 20 seed 2 the scores went 0.198 -> 0.035 from the
    full recompute)."""
    from label_audit.scoring.newton import newton_refit_fold_models, subsampled_newton_refit_fold_models

    X, r, y2, ch, rem, keep, full = synthetic_12k
    st = r.model_state
    exact = newton_refit_fold_models(X, y2, st, old_labels=r.labels)[0]
    gaps = {}
    for n_far in (0, 1024):
        P, _, info = subsampled_newton_refit_fold_models(X, y2, st, old_labels=r.labels, hessian_rows=10**6,
                                                         exact_rows=n_far, hessian_probs=r.pred_probs)
        assert info["exact_rows"] == n_far - np.isin(np.flatnonzero(y2 != r.labels), _far_rows(X, st, n_far)).sum()
        gaps[n_far] = float(np.abs(P - exact).max())
    assert gaps[1024] < 0.015 and gaps[0] > 2 * gaps[1024], gaps


def _far_rows(X, st, m):
    Z = st["preprocessor"].transform(X)
    return np.argsort(-(Z * Z).sum(1), kind="stable")[:m]


def test_hessian_sample_is_unbiased_and_favours_uncertain_rows():
    from label_audit.scoring.incremental import auto_refit_solver
    from label_audit.scoring.newton import _hessian_sample

    rng = np.random.default_rng(0)
    n, K = 20_000, 10
    P = rng.dirichlet(np.full(K, 0.2), size=n)
    confident = rng.random(n) < 0.9  # most rows are predicted confidently (tiny Hessian)
    P[confident] = 0.001
    P[confident, rng.integers(0, K, confident.sum())] = 1.0 - 0.001 * (K - 1)
    rows, w = _hessian_sample(n, 2_000, P, random_state=1)
    assert abs(rows.size - 2_000) < 200 and np.all(np.diff(rows) > 0)
    # Horvitz-Thompson weights: the weighted sample sums estimate sums over all rows
    u = 1.0 - P.max(1)
    assert w.sum() == pytest.approx(n, rel=0.1)
    assert (w * u[rows]).sum() == pytest.approx(u.sum(), rel=0.05)
    # uncertain rows are sampled more often than confident ones
    assert (~confident[rows]).mean() > 5 * (~confident).mean()
    again, _ = _hessian_sample(n, 2_000, P, random_state=1)
    np.testing.assert_array_equal(rows, again)
    # with squared norms, long rows are sampled more, and the estimate stays unbiased
    sq = rng.lognormal(0.0, 1.0, n) * 50.0
    rows2, w2 = _hessian_sample(n, 2_000, P, random_state=1, sq_norms=sq)
    assert (w2 * u[rows2] * sq[rows2]).sum() == pytest.approx((u * sq).sum(), rel=0.05)
    long_ = sq > np.quantile(sq, 0.9)
    assert long_[rows2].mean() > 1.8 * long_[rows].mean()  # measured 0.214 vs 0.097
    allrows, ones = _hessian_sample(n, n, P, random_state=1)
    assert allrows.size == n and np.all(ones == 1.0)
    # solver="auto": Newton-CG up to 1e8 = N x d' x K x repeats, the subsampled Hessian above
    assert auto_refit_solver(30_000, np.zeros((5, 128, 20))) == "newton"
    assert auto_refit_solver(30_000, np.zeros((5, 128, 20)), 5) == "subsampled"
    assert auto_refit_solver(1_797, np.zeros((5, 64, 10)), 5) == "newton"
    assert auto_refit_solver(100_000, np.zeros((5, 256, 80))) == "subsampled"
