"""Multi-task label quality: one run per task, the combined ranking, per-task
review that leaves the other tasks alone, the per-task export, bad input."""

import csv

import numpy as np
import pytest

from test_multitask_helpers import TASKS, mt, mt_base, multitask_digits  # noqa: F401
from test_review_helpers import raw_docs, run_operator

PLUGIN = "@label-audit/label-audit"


def _floats(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


# --- science ---------------------------------------------------------------------


def test_combine_task_scores_max_and_noisy_or():
    from label_audit.multitask import combine_task_scores

    S = np.array([[0.1, 0.7, np.nan],
                  [np.nan, np.nan, np.nan],
                  [0.5, 0.5, 0.5],
                  [0.0, np.nan, 0.9]])
    comb, worst = combine_task_scores(S, "max")
    assert np.allclose(comb[[0, 2, 3]], [0.7, 0.5, 0.9]) and np.isnan(comb[1])
    assert worst.tolist() == [1, -1, 0, 2]
    comb, worst = combine_task_scores(S, "noisy_or")
    assert np.allclose(comb[[0, 2, 3]], [1 - 0.9 * 0.3, 1 - 0.5 ** 3, 0.9])
    assert np.isnan(comb[1]) and worst.tolist() == [1, -1, 0, 2]
    with pytest.raises(ValueError, match="combine"):
        combine_task_scores(S, "mean")


# --- compute ---------------------------------------------------------------------


def test_each_task_is_an_ordinary_run_and_combined_fields_agree(mt, digits_dir):
    import label_audit as la
    from label_audit.multitask import GROUP_METHOD

    ds = mt
    assert ds.list_runs(method=GROUP_METHOD) == ["audit"]
    assert sorted(ds.list_runs(method="label_audit.label_quality")) == sorted(
        "audit_" + t for t in TASKS)
    # a task's scores are exactly those of a single-field run on that field
    single = la.compute_label_quality(ds, "parity", audit_key="alone", progress=False)
    assert np.allclose(_floats(ds.values("audit_parity_label_issue_score")),
                       _floats(ds.values("alone_label_issue_score")))
    assert ds.values("audit_parity_suggested_label") == ds.values("alone_suggested_label")
    assert int(np.sum(ds.values("audit_parity_is_label_issue"))) == int(
        single.result.is_label_issue.sum())
    # combined fields
    S = np.stack([_floats(ds.values("audit_%s_label_issue_score" % t)) for t in TASKS], 1)
    F = np.stack([np.array(ds.values("audit_%s_is_label_issue" % t), bool) for t in TASKS], 1)
    A = np.stack([np.array(ds.values("audit_%s_is_ambiguous" % t), bool) for t in TASKS], 1)
    assert np.allclose(_floats(ds.values("audit_label_issue_score")), S.max(axis=1))
    assert ds.values("audit_worst_task") == [TASKS[i] for i in S.argmax(axis=1)]
    assert ds.values("audit_num_label_issues") == F.sum(axis=1).tolist()
    assert ds.values("audit_num_ambiguous") == A.sum(axis=1).tolist()
    assert ds.values("audit_is_label_issue") == F.any(axis=1).tolist()
    # the summary, read back from the run record, counts per task
    from label_audit.multitask import group_summary

    text = group_summary(ds, "audit")
    for j, t in enumerate(TASKS):
        line = next(l for l in text.splitlines() if l.startswith(t + " "))
        assert line.split()[1] == "audit_" + t
        assert int(line.split()[5]) == int(F[:, j].sum())   # flagged
        assert int(line.split()[6]) == int(A[:, j].sum())   # ambiguous


def test_rankings_find_the_injected_errors_of_every_task(mt):
    ds = mt
    any_flip = np.zeros(len(ds), bool)
    for t in TASKS:
        flipped = np.array(ds.values(t + "_flipped"), bool)
        any_flip |= flipped
        score = _floats(ds.values("audit_%s_label_issue_score" % t))
        top = np.argsort(-score)[: flipped.sum()]
        # random ranking would give ~0.12; the pixel features separate digits well
        assert flipped[top].mean() >= 0.6, (t, flipped[top].mean())
    comb = _floats(ds.values("audit_label_issue_score"))
    top = np.argsort(-comb)[: any_flip.sum()]
    assert any_flip[top].mean() >= 0.6


def test_noisy_or_combination_and_results_object(digits_dir):
    import label_audit as la

    ds = multitask_digits(digits_dir, n=120)
    try:
        res = la.compute_label_quality(ds, ["parity", "magnitude"], audit_key="mt",
                                       combine="noisy_or", progress=False)
        assert res.task_keys == {"parity": "mt_parity", "magnitude": "mt_magnitude"}
        assert set(res.tasks) == {"parity", "magnitude"}
        s = np.stack([_floats(ds.values("mt_%s_label_issue_score" % t))
                      for t in ("parity", "magnitude")], 1)
        expect = 1 - np.prod(1 - s, axis=1)
        assert np.allclose(_floats(ds.values("mt_label_issue_score")), expect)
        assert np.allclose(res.label_issue_score, expect)
        assert "parity" in res.summary() and "mt_magnitude" in res.summary()
        assert res.task("parity").audit_key == "mt_parity"
    finally:
        ds.delete()


# --- bad input ------------------------------------------------------------------


def test_label_fields_of_different_types_are_refused_before_writing(digits_dir):
    import fiftyone as fo

    import label_audit as la

    ds = multitask_digits(digits_dir, n=60)
    try:
        ds.set_values("boxes", [fo.Detections(detections=[fo.Detection(
            label="a", bounding_box=[0.1, 0.1, 0.5, 0.5])])] * len(ds))
        ds.set_values("note", ["x"] * len(ds))
        before = raw_docs(ds)
        with pytest.raises(ValueError, match=r"different types.*'boxes' is Detections"):
            la.compute_label_quality(ds, ["digit", "boxes"], progress=False)
        with pytest.raises(ValueError, match=r"'note' is StringField"):
            la.compute_label_quality(ds, ["digit", "parity", "note"], progress=False)
        with pytest.raises(ValueError, match="no such field"):
            la.compute_label_quality(ds, ["digit", "nope"], progress=False)
        with pytest.raises(ValueError, match="more than once"):
            la.compute_label_quality(ds, ["digit", "digit"], progress=False)
        assert raw_docs(ds) == before and ds.list_runs() == []
    finally:
        ds.delete()


def test_a_task_with_one_class_is_refused_before_writing(digits_dir):
    import fiftyone as fo

    import label_audit as la

    ds = multitask_digits(digits_dir, n=60)
    try:
        ds.set_values("species", [fo.Classification(label="human")] * len(ds))
        before = raw_docs(ds)
        with pytest.raises(ValueError, match=r"Task 'species' cannot be audited.*1 distinct"):
            la.compute_label_quality(ds, ["digit", "parity", "species"], progress=False)
        assert raw_docs(ds) == before and ds.list_runs() == []
        assert not ds.has_field("audit_digit_label_issue_score")
    finally:
        ds.delete()


def test_an_unlabelled_sample_with_another_embedding_size_is_ignored(digits_dir):
    import label_audit as la

    ds = multitask_digits(digits_dir, n=60)
    try:
        s = ds.first()
        for task in ("digit", "parity", "magnitude"):
            s[task] = None  # no label in any task: not scored, its embedding not read
        s.embeddings = [1.0, 2.0, 3.0]
        s.save()
        res = la.compute_label_quality(ds, ["digit", "parity", "magnitude"], progress=False)
        assert ds.count("audit_label_issue_score") == len(ds) - 1
        assert ds.first()["audit_label_issue_score"] is None
        assert res is not None
    finally:
        ds.delete()


def test_task_errors_name_the_task_and_nothing_is_written(digits_dir):
    """Embedding sizes that differ between tasks, an engine error inside one task and an
    invalid audit key: clear errors naming the task/key, raised before anything is written."""
    import fiftyone as fo

    import label_audit as la

    ds = multitask_digits(digits_dir, n=60)
    try:
        ids = ds.values("id")
        ds.select(ids[:30]).set_values("parity", [None] * 30)  # parity: the last 30 only
        ds.select(ids[30:]).set_values("digit", [None] * 30)  # digit: the first 30 only
        ds.select(ids[30:]).set_values("magnitude", [None] * 30)  # magnitude: the first 30
        ds.select(ids[30:]).set_values("embeddings", [[1.0, 2.0, 3.0]] * 30)
        before = raw_docs(ds)
        with pytest.raises(ValueError, match=r"different dimensions across tasks \(64 for task 'digit', "
                                             r"3 for task 'parity'"):
            la.compute_label_quality(ds, ["digit", "parity"], progress=False)
        with pytest.raises(ValueError, match=r"Task 'digit': Only N=30 samples for k=40"):
            la.compute_label_quality(ds, ["digit", "magnitude"], k=40, progress=False)
        with pytest.raises(ValueError, match=r"Invalid audit_key 'my-audit'"):
            la.compute_label_quality(ds, ["digit", "magnitude"], audit_key="my-audit", progress=False)
        assert raw_docs(ds) == before and ds.list_runs() == []
    finally:
        ds.delete()


def test_default_classes_of_another_field_do_not_leak_into_a_task(mt):
    """dataset.default_classes naming the digits is not the class list of the parity task."""
    import label_audit as la

    ds = mt
    ds.classes = {}  # no per-field classes: the dataset-wide default is all there is
    ds.default_classes = [str(i) for i in range(10)]
    res = la.compute_label_quality(ds, ["digit", "parity"], progress=False)
    assert ds.get_run_info(res.task_keys["parity"]).config.classes == ["even", "odd"]
    assert ds.get_run_info(res.task_keys["digit"]).config.classes == [str(i) for i in range(10)]
    from label_audit.review.context import ReviewContext

    assert ReviewContext(ds, res.task_keys["parity"]).classes() == ["even", "odd"]


def test_keys_that_would_overwrite_another_run_are_refused(mt):
    import label_audit as la

    with pytest.raises(ValueError, match="multi-task group"):
        la.compute_label_quality(mt, "digit", audit_key="audit", progress=False)
    la.compute_label_quality(mt, "digit", audit_key="single", progress=False)
    with pytest.raises(ValueError, match="already holds a label_audit.label_quality run"):
        la.compute_label_quality(mt, ["digit", "parity"], audit_key="single", progress=False)
    # a task key already used by a run on another field
    la.compute_label_quality(mt, "digit", audit_key="other_parity", progress=False)
    with pytest.raises(ValueError, match="Task 'parity'.*'other_parity'.*on 'digit'"):
        la.compute_label_quality(mt, ["digit", "parity"], audit_key="other", progress=False)
    # re-running the same multi-task audit is fine
    la.compute_label_quality(mt, list(TASKS), progress=False)


# --- review per task ---------------------------------------------------------------


def _task_state(ds, task):
    """Everything of one task on every sample: label field and its audit fields."""
    names = [f for f in ds.get_field_schema() if f == task or f.startswith("audit_%s_" % task)]
    return {n: ds.values(n) for n in sorted(names)}


def test_review_one_task_without_touching_the_others(mt):
    import label_audit as la

    ds = mt
    others = {t: _task_state(ds, t) for t in ("digit", "magnitude")}
    view = la.suspects(ds, audit_key="audit_parity", n=6)
    scores = view.values("audit_parity_label_issue_score")
    assert scores == sorted(scores, reverse=True)
    ids = view.values("id")
    la.tag_decisions(ds.select(ids[:5]), "accept", audit_key="audit_parity")
    la.tag_decisions(ds.select(ids[5:]), "delete", audit_key="audit_parity")
    before = raw_docs(ds)
    report = la.apply_decisions(ds, audit_key="audit_parity")
    assert report.num_applied == 6
    sugg = dict(zip(*ds.select(ids[:5]).values(["id", "audit_parity_original_label"])))
    assert all(v is not None for v in sugg.values())
    assert ds.select(ids[5:]).values("audit_parity_excluded") == [True]
    # the other tasks: labels, scores and state untouched
    for t, state in others.items():
        assert _task_state(ds, t) == state
    # the combined fields follow the re-scored task (excluded row: parity left out)
    S = np.stack([_floats(ds.values("audit_%s_label_issue_score" % t)) for t in TASKS], 1)
    excl = np.array([bool(v) for v in ds.values("audit_parity_excluded")])
    S[excl, 1] = np.nan
    assert np.allclose(_floats(ds.values("audit_label_issue_score")), np.nanmax(S, axis=1))
    assert la.cleaning_rounds(ds, audit_key="audit_parity").rounds
    assert la.cleaning_rounds(ds, audit_key="audit_digit").rounds == []

    # another task's decisions taken after the apply survive undoing parity's apply
    la.tag_decisions(ds.select(ids[:2]), "ok", audit_key="audit_digit")
    la.undo_decisions(ds, audit_key="audit_parity")
    after = raw_docs(ds)
    for sid, doc in after.items():
        tags = doc["tags"]
        expect_digit = ["audit_digit:ok"] if str(sid) in ids[:2] else []
        assert [t for t in tags if t.startswith("audit_digit:")] == expect_digit
        doc["tags"] = [t for t in tags if not t.startswith("audit_digit:")]
        doc.pop("audit_digit_decision_label", None)
        before[sid].pop("audit_digit_decision_label", None)
    assert after == before   # parity restored exactly, combined fields included


def test_group_key_is_not_a_review_run(mt):
    import label_audit as la

    with pytest.raises(ValueError, match=r"multi-task group.*'audit_digit'"):
        la.tag_decisions(mt, "ok", audit_key="audit")
    with pytest.raises(ValueError, match="multi-task group"):
        la.apply_decisions(mt, audit_key="audit")
    with pytest.raises(ValueError, match="multi-task group"):
        la.cleaning_rounds(mt, audit_key="audit")
    # suspects on the group: samples by the combined score
    view = la.suspects(mt, audit_key="audit", n=10)
    s = view.values("audit_label_issue_score")
    assert len(s) == 10 and s == sorted(s, reverse=True)
    assert s[0] == max(mt.values("audit_label_issue_score"))
    view = la.suspects(mt, audit_key="audit", score="num_label_issues", n=5)
    assert view.first()["audit_num_label_issues"] == max(mt.values("audit_num_label_issues"))
    with pytest.raises(ValueError, match="one task"):
        la.suspects(mt, audit_key="audit", classes=["odd"])
    # a sample decided in a task leaves the combined suspects (as reviewed rows do per task)
    top = la.suspects(mt, audit_key="audit", n=2).values("id")
    la.tag_decisions(mt.select(top[:1]), "ok", audit_key="audit_parity")
    after = la.suspects(mt, audit_key="audit", n=2).values("id")
    assert top[0] not in after and after[0] == top[1]
    assert la.suspects(mt, audit_key="audit", n=2, include_reviewed=True).values("id") == top


def test_export_multitask_labels(mt, tmp_path):
    import label_audit as la

    ds = mt
    ids = la.suspects(ds, audit_key="audit_digit", n=4).values("id")
    la.tag_decisions(ds.select(ids[:3]), "accept", audit_key="audit_digit")
    la.tag_decisions(ds.select(ids[3:]), "delete", audit_key="audit_digit")
    la.apply_decisions(ds, audit_key="audit_digit", rescore="none")
    la.tag_decisions(ds.select(ids[:1]), "ok", audit_key="audit_magnitude")
    report = la.export_multitask_labels(ds, str(tmp_path), audit_key="audit")
    with open(report.csv_path) as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    assert len(rows) == len(ds) == report.num_rows
    for sid, orig, cur, sugg, excl in zip(*ds.values(
            ["id", "audit_digit_original_label", "digit.label", "audit_digit_suggested_label",
             "audit_digit_excluded"])):
        r = rows[sid]
        assert r["digit_original"] == (orig or cur)
        assert r["digit_cleaned"] == ("" if excl else cur)
        assert r["digit_suggested"] == sugg
        assert r["parity_original"] == r["parity_cleaned"]  # parity untouched
    assert rows[ids[3]]["digit_cleaned"] == "" and rows[ids[3]]["digit_applied"] == "delete"
    assert rows[ids[0]]["magnitude_decision"] == "ok"
    assert report.tasks["digit"]["excluded"] == 1
    assert report.tasks["digit"]["relabeled"] == sum(
        rows[i]["digit_original"] != rows[i]["digit_cleaned"] for i in ids[:3])
    with pytest.raises(ValueError, match="exists"):
        la.export_multitask_labels(ds, str(tmp_path), audit_key="audit")
    with pytest.raises(ValueError, match="No multi-task audit 'audit_digit'"):
        la.export_multitask_labels(ds, str(tmp_path), audit_key="audit_digit", overwrite=True)


# --- operators -------------------------------------------------------------------


_run = run_operator


def _choices(name, ds, params):
    """The audit-key choices an operator's form offers."""
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    ctx = ExecutionContext(request_params=dict(dataset_name=ds.name, params=params))
    prop = foo.get_operator(PLUGIN + "/" + name).resolve_input(ctx)
    return [c.value for c in prop.type.properties["audit_key"].view.choices]


def test_operators_multitask_round_trip(digits_dir, tmp_path):
    import label_audit as la

    ds = multitask_digits(digits_dir, n=120)
    ds.persistent = False
    ds.select(ds.values("id")[:10]).set_values("digit", [None] * 10)
    ds.select(ds.values("id")[:10]).set_values("parity", [None] * 10)  # unlabelled: not scored
    try:
        out = _run("compute_label_quality", ds, dict(
            multitask=True, label_fields=["digit", "parity"], audit_key="audit")).result
        assert sorted(out["task_keys"]) == ["audit_digit", "audit_parity"]
        assert out["sort_field"] == "audit_label_issue_score"
        assert out["num_scored"] == 110 == ds.count("audit_label_issue_score")
        assert out["num_label_issues"] == ds.count_values("audit_is_label_issue").get(True, 0)
        # review operators offer the task runs, never the group record
        for op in ("relabel", "apply_decisions", "undo_decisions", "cleaning_rounds",
                   "find_confused_classes"):
            assert _choices(op, ds, {}) == ["audit_digit", "audit_parity"], op
        # show_suspects and export also offer the group (combined ranking / CSV)
        assert _choices("show_suspects", ds, {})[0] == "audit"
        assert _choices("export_cleanset", ds, {})[0] == "audit"
        assert _choices("evaluate_cleaning", ds, {})[0] == "audit"
        assert _run("show_suspects", ds, dict(audit_key="audit", n=7)).result["count"] == 7
        # run without the form (no audit_key): the key the form offers first, so a review
        # operator gets a task run, never the group record (which it would refuse)
        rounds = _run("cleaning_rounds", ds, {})
        assert rounds.error is None and "round" in rounds.result["summary"], rounds.error
        assert _run("show_suspects", ds, dict(n=4)).result["count"] == 4
        # the panel offers every key (groups first) and shows the one picked
        from label_audit.operators.panel import default_panel_key, panel_data, panel_keys

        assert panel_keys(ds) == ["audit", "audit_digit", "audit_parity"]
        assert default_panel_key(ds) == "audit"
        one = panel_data(ds, "audit_parity")
        assert sum(one["histogram"][0]["y"]) == 110 and "audit_digit" not in one["summary"]  # scored ones
        both = panel_data(ds, "audit")
        assert "audit_digit" in both["summary"] and "audit_parity" in both["summary"]
        ids = la.suspects(ds, audit_key="audit_parity", n=3).values("id")
        _run("accept_suggested_labels", ds, dict(audit_key="audit_parity"), selected=ids)
        res = _run("apply_decisions", ds, dict(audit_key="audit_parity")).result
        assert res["num_applied"] == 3
        exp = _run("export_cleanset", ds, dict(audit_key="audit", output_dir=str(tmp_path)))
        assert exp.result["csv_path"].endswith("multitask_labels.csv")
        assert exp.result["num_rows"] == 120
    finally:
        ds.delete()


def test_a_failed_group_record_leaves_no_fields_behind(mt, monkeypatch):
    import label_audit as la
    from label_audit import runs
    from label_audit.multitask import GROUP_METHOD

    real = runs.save_run

    def fail_on_group(samples, run_key, method, *args, **kwargs):
        if method == GROUP_METHOD:
            raise KeyboardInterrupt
        return real(samples, run_key, method, *args, **kwargs)

    before = set(mt.get_field_schema())
    monkeypatch.setattr(runs, "save_run", fail_on_group)
    with pytest.raises(KeyboardInterrupt):
        la.compute_label_quality(mt, ["digit", "parity"], audit_key="mt2", progress=False)
    monkeypatch.undo()
    assert set(mt.get_field_schema()) == before
    assert not [k for k in mt.list_runs() if k.startswith("mt2")]
