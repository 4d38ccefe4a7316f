"""evaluate_cleaning: per task, a probe trained on the original, cleaned and
suggested labels; scored against its own labels or against reference labels."""

import numpy as np
import pytest

from test_multitask_helpers import TASKS, mt, mt_base  # noqa: F401 (fixtures)

PLUGIN = "@label-audit/label-audit"
TRUE = {t: t + "_true" for t in TASKS}


# --- science ---------------------------------------------------------------------


def _digits(n=400):
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data[:n].astype(np.float32), d.target[:n].astype(np.int64)


def test_assign_folds_is_stratified_and_covers_unlabelled_rows():
    from label_audit.review.probe import assign_folds

    _, y = _digits()
    y = y.copy()
    y[:7] = -1
    folds, K = assign_folds(y, n_folds=5, random_state=0)
    assert K == 5 and folds.min() == 0 and folds.max() == 4
    lab = y >= 0
    for c in range(10):  # each class spread evenly over the folds
        counts = np.bincount(folds[lab & (y == c)], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(folds, assign_folds(y, 5, 0)[0])  # seeded


def test_fold_features_never_see_the_held_out_fold():
    from label_audit.review.probe import assign_folds, fold_features

    rng = np.random.RandomState(0)
    X = rng.randn(300, 80).astype(np.float32)
    folds, _ = assign_folds(rng.randint(3, size=300), 3, 0)
    feats = fold_features(X, folds, max_dim=16)
    assert feats[0].shape == (300, 16) and feats[0].dtype == np.float32
    X2 = X.copy()
    X2[folds == 0] *= 50.0   # change only the held-out rows of fold 0
    feats2 = fold_features(X2, folds, max_dim=16)
    out = folds != 0
    assert np.allclose(feats[0][out], feats2[0][out], atol=1e-4)   # same projection
    assert not np.allclose(feats[1][folds != 1], feats2[1][folds != 1], atol=1e-2)


def test_cross_validated_scores_against_reference_labels():
    from label_audit.demo import inject_noise
    from label_audit.review.probe import assign_folds, cross_validated_scores

    X, y = _digits()
    noisy, flipped = inject_noise(y, 0.3, 10, random_state=0)
    folds, _ = assign_folds(y, 5, 0)
    clean = cross_validated_scores(X, y, 10, folds)
    vs_truth = cross_validated_scores(X, noisy, 10, folds, y_eval=y)
    vs_own = cross_validated_scores(X, noisy, 10, folds)
    # a probe trained on noisy labels predicts the truth worse than one trained on clean ones
    assert clean["accuracy"] > vs_truth["accuracy"] > 0.5
    # scored against its own noisy labels, it looks much worse still (30% of them are wrong)
    assert vs_own["accuracy"] < vs_truth["accuracy"] - 0.15
    assert clean["n_eval"] == len(y) and 0.9 < clean["auc_macro"] <= 1.0
    # untrained rows (-1) are still predicted when they have an evaluation label
    dropped = noisy.copy()
    dropped[flipped] = -1
    out = cross_validated_scores(X, dropped, 10, folds, y_eval=y)
    assert out["n_train"] == int((~flipped).sum()) and out["n_eval"] == len(y)
    assert out["accuracy"] > vs_truth["accuracy"]
    with pytest.raises(ValueError, match="two classes"):
        cross_validated_scores(X, np.zeros(len(y), np.int64), 10, folds)
    # precomputed per-fold features give the same numbers
    from label_audit.review.probe import fold_features

    again = cross_validated_scores(X, noisy, 10, folds, y_eval=y,
                                   features=fold_features(X, folds))
    assert again["accuracy"] == vs_truth["accuracy"]


# --- evaluate_cleaning --------------------------------------------------------------


def test_evaluate_cleaning_before_and_after_a_review(mt):
    import label_audit as la

    ds = mt
    table = la.evaluate_cleaning(ds, reference_fields=TRUE)
    assert [(r["task"], r["variant"]) for r in table.rows] == [
        (t, v) for t in TASKS for v in ("original", "cleaned", "suggested")]
    text = repr(table)
    assert "reference labels" in text and text.count("\n") == 2 + len(table.rows)
    for t in TASKS:
        orig, clean, sugg = (table.get(t, v) for v in ("original", "cleaned", "suggested"))
        assert orig["n_eval"] == clean["n_eval"] == sugg["n_eval"] == len(ds)
        # nothing applied yet: cleaned labels are the original ones (same folds, same numbers)
        assert clean["changed"] == 0 and clean["accuracy"] == orig["accuracy"]
        assert sugg["changed"] == sum(a != b for a, b in zip(
            ds.values("audit_%s_suggested_label" % t), ds.values(t + ".label")))
        # the suggested labels are closer to the truth, so the probe predicts the truth better
        assert sugg["accuracy"] > orig["accuracy"], t
        assert orig["against"] == t + "_true"
        # the labels themselves: the original ones are right except the injected flips
        flipped = np.array(ds.values(t + "_flipped"), bool)
        assert orig["label_agreement"] == pytest.approx(1 - flipped.mean())

    # review the digit task: accept the suggestions of its flagged samples
    flagged = ds.match({"audit_digit_is_label_issue": True})
    la.tag_decisions(flagged, "accept", audit_key="audit_digit")
    report = la.apply_decisions(ds, audit_key="audit_digit")
    after = la.evaluate_cleaning(ds, reference_fields=TRUE)
    c = after.get("digit", "cleaned")
    assert c["changed"] == report.applied.get("relabel", 0) > 0
    assert c["accuracy"] > after.get("digit", "original")["accuracy"]
    assert after.get("digit", "original")["accuracy"] == table.get("digit", "original")["accuracy"]
    for t in ("parity", "magnitude"):   # other tasks: cleaned still == original
        assert after.get(t, "cleaned")["accuracy"] == after.get(t, "original")["accuracy"]

    # recorded, and shown by the panel for the group key
    loaded = la.load_evaluation(ds, "audit")
    assert [r["accuracy"] for r in loaded.rows] == [r["accuracy"] for r in after.rows]
    from label_audit.operators.panel import panel_data

    data = panel_data(ds, "audit")
    assert data["evaluation"].count("| digit |") == 3
    assert [tr["name"] for tr in data["auc"]] == ["digit macro AUC"]
    assert "audit_parity" in data["summary"] and sum(data["histogram"][0]["y"]) == len(ds)


def test_own_labels_mode_and_exclusions(mt):
    import label_audit as la

    ds = mt
    ids = la.suspects(ds, audit_key="audit_parity", n=5).values("id")
    la.tag_decisions(ds.select(ids), "delete", audit_key="audit_parity")
    la.apply_decisions(ds, audit_key="audit_parity", rescore="none")
    table = la.evaluate_cleaning(ds, "parity", audit_key="audit", variants=["original", "cleaned"],
                                 record=False)
    assert "own held-out labels" in repr(table)
    orig, clean = table.get("parity", "original"), table.get("parity", "cleaned")
    # scored against each variant's own labels: excluded rows leave training and scoring
    assert orig["n_eval"] == len(ds) and clean["n_eval"] == clean["n_train"] == len(ds) - 5
    assert orig["against"] == "own labels" and orig["label_agreement"] is None
    assert la.load_evaluation(ds, "audit") is None  # record=False
    # with a reference, excluded rows are still scored (the same rows for every variant)
    ref = la.evaluate_cleaning(ds, ["parity"], reference_fields="parity_true",
                               variants="cleaned", record=False)
    assert ref.get("parity", "cleaned")["n_eval"] == len(ds)
    assert ref.get("parity", "cleaned")["n_train"] == len(ds) - 5


def test_evaluate_cleaning_bad_input(mt):
    import label_audit as la

    with pytest.raises(ValueError, match="variants"):
        la.evaluate_cleaning(mt, variants=["cleaned", "best"])
    with pytest.raises(ValueError, match=r"Reference field 'digit_flipped' of task 'digit'"):
        la.evaluate_cleaning(mt, reference_fields={"digit": "digit_flipped"})
    with pytest.raises(ValueError, match="not evaluated"):
        la.evaluate_cleaning(mt, ["digit"], reference_fields={"parity": "parity_true"})
    with pytest.raises(ValueError, match=r"No label-quality run for field 'digit_true'"):
        la.evaluate_cleaning(mt, ["digit_true"])
    with pytest.raises(ValueError, match="No label-quality run 'nope'"):
        la.evaluate_cleaning(mt, audit_key="nope")
    # a bad embedding (even on a sample no task scored) is named, not averaged into NaN
    s = mt.first()
    good = np.array(s.embeddings, dtype=np.float32)
    s.embeddings = np.full_like(good, np.nan)
    s.save()
    with pytest.raises(ValueError, match="embedding of sample %s .*not finite" % s.id):
        la.evaluate_cleaning(mt)
    s.embeddings = good[:10]
    s.save()
    with pytest.raises(ValueError, match="different dimensions.*sample %s" % s.id):
        la.evaluate_cleaning(mt)


def test_evaluate_cleaning_operator_immediate_and_delegated(mt):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    ds = mt
    params = dict(audit_key="audit", reference_0="digit_true", n_folds=3,
                  variants=["original", "suggested"])
    result = foo.execute_operator(PLUGIN + "/evaluate_cleaning",
                                  ctx=dict(dataset=ds, view=ds.view(), params=params))
    assert result.error is None, result.error
    rows = result.result["rows"]
    assert [(r["task"], r["variant"]) for r in rows] == [
        (t, v) for t in TASKS for v in ("original", "suggested")]
    assert rows[0]["against"] == "digit_true" and rows[2]["against"] == "own labels"
    assert "digit" in result.result["table"]
    params = dict(params, audit_key="audit_magnitude", reference_0="magnitude_true",
                  delegate=True)
    result = foo.execute_operator(PLUGIN + "/evaluate_cleaning", ctx=dict(
        dataset=ds, view=ds.view(), params=params), request_delegation=True)
    assert result.delegated
    DelegatedOperationService().execute_queued_operations(dataset_name=ds.name)
    from label_audit.review.evaluate import load_evaluation

    table = load_evaluation(ds, "audit_magnitude")
    assert [r["task"] for r in table.rows] == ["magnitude", "magnitude"]
    assert table.rows[0]["against"] == "magnitude_true"
