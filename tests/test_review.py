"""Review workflow SDK on real datasets: suspects -> decide -> apply -> undo, rounds,
export, and bad input (each a test)."""

import csv

import numpy as np
import pytest

import label_audit as la
from test_review_helpers import base, raw_docs, schema, scored  # noqa: F401 (fixtures)


# --- science (no FiftyOne) -----------------------------------------------------


def test_probe_confusion_auc_and_plateau():
    from label_audit.review.probe import (auc_plateaued, cross_validated_auc,
                                          false_positives, most_confused_pairs,
                                          probe_confusion)
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.data[:400].astype(np.float32), d.target[:400]
    out = probe_confusion(X, y, 10, max_dim=16)
    m = out["matrix"]
    assert m.shape == (10, 10) and m.sum() == out["n_test"] == 100 and out["accuracy"] > 0.85
    np.testing.assert_array_equal(false_positives(m), m.sum(0) - np.diag(m))
    noisy = y.copy()
    noisy[y == 3] = np.where(np.arange((y == 3).sum()) % 3 == 0, 8, 3)  # a third of 3s -> 8
    pairs = most_confused_pairs(probe_confusion(X, noisy, 10)["matrix"], [str(i) for i in range(10)])
    assert {pairs[0]["a"], pairs[0]["b"]} == {"3", "8"}
    clean = cross_validated_auc(X, y, 10, class_of_interest=3)
    dirty = cross_validated_auc(X, noisy, 10, class_of_interest=3)
    assert clean["macro"] > dirty["macro"] and clean["class_of_interest"] > dirty["class_of_interest"]
    assert not auc_plateaued([0.90, 0.95]) and auc_plateaued([0.90, 0.95, 0.9501])


def test_confusion_probe_with_a_single_row_class():
    """A class with one row cannot be split: it stays in training (the unstratified split used to
    leave a single class in training and fail inside scikit-learn)."""
    from label_audit.review.probe import probe_confusion

    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 4)).astype(np.float32)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2])
    for seed in range(10):
        out = probe_confusion(X, y, 3, random_state=seed)
        assert 8 not in out["test_index"] and out["n_train"] + out["n_test"] == 9
    with pytest.raises(ValueError, match="at least two classes with 2 or more labelled rows"):
        probe_confusion(X[:5], np.array([0, 0, 0, 0, 1]), 2)


def test_plateau_and_class_of_interest_edge_cases():
    from label_audit.review.confusion import ConfusionReport
    from label_audit.review.rounds import CleaningRounds

    rounds = [dict(round=i, auc_macro=m, auc_class=c, class_of_interest=k)
              for i, (m, c, k) in enumerate([(0.80, 0.60, "cat"), (0.85, 0.95, "cat"), (0.90, 0.70, "dog")])]
    r = CleaningRounds(rounds, metric="auc_class")  # the class changed: its AUCs do not compare
    assert r.metric == "auc_macro" and not r.plateaued
    assert CleaningRounds(rounds[:2], metric="auc_class").metric == "auc_class"
    report = ConfusionReport(["a", "b"], np.eye(2, dtype=int) * 5, 1.0, [], {"a": 0, "b": 0}, 8, 10, "gt")
    assert report.class_of_interest is None and "review it first" not in report.summary()


# --- the round trip ------------------------------------------------------------


def test_round_trip_decide_apply_undo_restores_every_field(scored):
    ds = scored
    report = la.find_confused_classes(ds)
    assert report.class_of_interest in report.false_positives and report.pairs
    top = la.suspects(ds, n=8)
    assert len(top) == 8
    scores = top.values("audit_label_issue_score")
    assert scores == sorted(scores, reverse=True)
    ids = top.values("id")
    assert la.suspects(ds, n=3, bottom=True).values("audit_label_issue_score")[0] <= min(scores)
    in_class = la.suspects(ds, classes=[report.class_of_interest], score="importance", n=None)
    assert set(in_class.values("ground_truth.label")) == {report.class_of_interest}

    la.tag_decisions(ds.select(ids[:3]), "accept")
    la.tag_decisions(ds.select(ids[3:5]), "relabel", label="3")
    la.tag_decisions(ds.select(ids[5:7]), "delete")
    la.tag_decisions(ds.select(ids[7:]), "ok")
    tags = ds.count_sample_tags()
    assert sum(tags.values()) == 8 and tags["audit:delete"] == 2 and tags["audit:ok"] >= 1
    # reviewed rows leave the suspects view
    assert not set(ids) & set(la.suspects(ds, n=50).values("id"))

    before, before_schema = raw_docs(ds), schema(ds)
    given = dict(zip(ids, ds.select(ids, ordered=True).values("ground_truth.label")))
    target = dict(zip(ids, ds.select(ids, ordered=True).values("audit_decision_label")))
    rep = la.apply_decisions(ds, user="tester")
    assert rep.num_applied == 8 and not rep.stale
    view = ds.select(ids, ordered=True)
    for sid, lab, orig, excl in zip(ids, *view.values(
            ["ground_truth.label", "audit_original_label", "audit_excluded"])):
        if target[sid] is not None:
            assert lab == target[sid] and orig == given[sid]
        else:
            assert lab == given[sid]
        assert bool(excl) == (sid in ids[5:7])
    hist = ds.load_run_results("audit_review", cache=False).history
    assert hist[-1]["user"] == "tester" and len(hist[-1]["changes"]) == 8
    assert ds.count_values("audit_applied")[None] == 192

    undone = la.undo_decisions(ds)
    assert undone["id"] == rep.history_id
    assert raw_docs(ds) == before
    assert schema(ds) == before_schema


def test_apply_twice_is_idempotent(scored):
    ds = scored
    ids = la.suspects(ds, n=4).values("id")
    la.tag_decisions(ds.select(ids), "relabel", label="0")
    first = la.apply_decisions(ds, rescore="none", record_round=False)
    assert first.num_applied == 4
    state = raw_docs(ds)
    second = la.apply_decisions(ds, rescore="none", record_round=False)
    assert second.num_applied == 0 and "Nothing to apply" in second.summary()
    assert raw_docs(ds) == state
    assert len(ds.load_run_results("audit_review", cache=False).history) == 1


def test_incremental_rescore_rounds_and_plateau(scored):
    ds = scored
    flipped = ds.match({"flipped": True})
    ids = flipped.values("id")
    la.tag_decisions(ds.select(ids[:10]), "accept")
    seen = []
    r1 = la.apply_decisions(ds, progress_callback=lambda f, label: seen.append((f, label)))
    assert r1.rescore == "full"  # no scores in memory yet: full re-score
    # the full re-score's own stages show inside the apply's progress, in order
    stages = [(f, label) for f, label in seen if label.startswith("Re-scoring: Fitting fold models")]
    assert stages and all(0.5 <= f <= 0.8 for f, _ in stages)
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1] == (1.0, "Done")
    la.tag_decisions(ds.select(ids[10:]), "accept")
    seen = []
    r2 = la.apply_decisions(ds, progress_callback=lambda f, label: seen.append((f, label)))
    assert r2.rescore == "incremental"
    labels = [label for _, label in seen]
    assert labels.index("Re-scoring: Refitting the fold models") < labels.index("Re-scoring: Fusing the scores and flags")
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)
    rounds = la.cleaning_rounds(ds)
    assert [r["round"] for r in rounds.rounds] == [0, 1, 2]
    assert rounds.rounds[0]["reviewed"] == 0 and rounds.rounds[2]["reviewed"] == len(ids) - 10
    assert rounds.rounds[2]["auc_macro"] > rounds.rounds[0]["auc_macro"]
    assert 0 <= rounds.rounds[1]["fix_rate"] <= 1
    assert isinstance(rounds.plateaued, bool) and "round" in rounds.summary()
    # the scores were rewritten for the new labels
    r = ds.select(ids[10:]).values("audit_self_confidence")
    assert all(s is not None for s in r)


def test_apply_right_after_scoring_is_incremental(scored):
    """compute_label_quality leaves its result in memory for the next apply."""
    ds = scored
    la.compute_label_quality(ds, "ground_truth", progress=False)
    ids = ds.match({"flipped": True}).values("id")[:5]
    before = ds.select(ids).values("audit_self_confidence")
    la.tag_decisions(ds.select(ids), "accept")
    rep = la.apply_decisions(ds)
    assert rep.rescore == "incremental" and rep.num_applied == 5
    after = ds.select(ids).values("audit_self_confidence")
    assert after != before and all(a is not None for a in after)


def test_failed_rescore_after_apply_can_still_be_undone(scored):
    """The undo record is saved before re-scoring, which can fail."""
    ds = scored
    ids = ds.values("id")[:195]
    la.tag_decisions(ds.select(ids), "delete")
    before, before_schema = raw_docs(ds), schema(ds)
    with pytest.raises(ValueError):  # 5 samples left: too few to re-score (k=10)
        la.apply_decisions(ds, confirm_delete=True)
    assert len(ds) == 5
    la.undo_decisions(ds)
    assert len(ds) == 200
    assert raw_docs(ds) == before and schema(ds) == before_schema


def test_undo_refuses_to_overwrite_later_edits(scored):
    ds = scored
    ids = la.suspects(ds, n=3).values("id")
    original = ds[ids[0]].ground_truth.label
    la.tag_decisions(ds.select(ids), "relabel", label="0")
    la.apply_decisions(ds, rescore="none", record_round=False)
    s = ds[ids[0]]
    s.ground_truth.label = "5" if original != "5" else "6"  # a later edit
    s.save()
    after_edit = raw_docs(ds)
    with pytest.raises(ValueError, match="1 row.*edited after apply.*force=True"):
        la.undo_decisions(ds)
    assert raw_docs(ds) == after_edit
    la.undo_decisions(ds, force=True)
    ds.reload()
    assert ds[ids[0]].ground_truth.label == original


def test_export_cleanset_csv_exclude_list_and_clone(scored, tmp_path):
    ds = scored
    ids = la.suspects(ds, n=4).values("id")
    la.tag_decisions(ds.select(ids[:2]), "relabel", label="1")
    la.tag_decisions(ds.select(ids[2:]), "delete")
    la.apply_decisions(ds, rescore="none", record_round=False)
    name = "cleanset-%s" % ds.name
    out = la.export_cleanset(ds, tmp_path, clone_name=name)
    rows = list(csv.DictReader(open(out.csv_path)))
    assert len(rows) == 200 and out.num_excluded == 2
    by_id = {r["id"]: r for r in rows}
    assert by_id[ids[0]]["final_label"] == "1" and by_id[ids[0]]["decision"] == "relabel"
    assert by_id[ids[2]]["final_label"] == "" and by_id[ids[2]]["excluded"] == "True"
    lines = open(out.exclude_path).read().splitlines()
    assert sorted(lines) == sorted(ds.select(ids[2:]).values("filepath"))
    assert len(out.dataset) == 198 and not set(ids[2:]) & set(out.dataset.values("id"))
    out.dataset.delete()
    with pytest.raises(ValueError, match="overwrite"):
        la.export_cleanset(ds, tmp_path)


# --- bad input -----------------------------------------------------------------


def test_decisions_on_samples_without_label(scored):
    ds = scored
    ids = ds.take(3, seed=0).values("id")
    ds.select(ids[:2]).set_field("ground_truth", None).save()
    with pytest.raises(ValueError, match="no label in 'ground_truth'"):
        la.tag_decisions(ds.select(ids[:2]), "relabel", label="1")
    rep = la.tag_decisions(ds.select(ids), "ok")
    assert rep.num_tagged == 1 and set(rep.skipped) == set(ids[:2])
    assert "skipped 2" in rep.summary()
    # deleting a sample without a label is fine
    assert la.tag_decisions(ds.select(ids[:1]), "delete").num_tagged == 1


def test_relabel_to_unknown_class_refused(scored):
    ds = scored
    before = raw_docs(ds)
    with pytest.raises(ValueError, match="not one of the classes of 'ground_truth'"):
        la.tag_decisions(ds.limit(2), "relabel", label="eleven")
    with pytest.raises(ValueError, match="Unknown decision"):
        la.tag_decisions(ds.limit(2), "maybe")
    assert raw_docs(ds) == before


def test_undo_with_nothing_to_undo(scored):
    with pytest.raises(ValueError, match="Nothing to undo"):
        la.undo_decisions(scored)
    ids = la.suspects(scored, n=2).values("id")
    la.tag_decisions(scored.select(ids), "ok")
    la.apply_decisions(scored, rescore="none", record_round=False)
    la.undo_decisions(scored)
    with pytest.raises(ValueError, match="Nothing to undo"):
        la.undo_decisions(scored)


def test_stale_scores_detected_and_reported(scored):
    from label_audit.review.apply import StaleScoresError

    ds = scored
    ids = la.suspects(ds, n=4).values("id")  # the scored labels are recorded here
    la.tag_decisions(ds.select(ids), "ok")
    edited = ds[ids[0]]
    edited.ground_truth.label = "9" if edited.ground_truth.label != "9" else "8"
    edited.save()
    before = raw_docs(ds)
    with pytest.raises(StaleScoresError, match="1 of the 4 samples .* edited after"):
        la.apply_decisions(ds)
    assert raw_docs(ds) == before
    rep = la.apply_decisions(ds, on_stale="skip", rescore="none", record_round=False)
    assert rep.num_applied == 3 and list(rep.stale) == [ids[0]]
    assert "1 stale" in rep.summary()


def test_edit_right_after_scoring_is_detected_as_stale(scored):
    """The label scored per row is recorded by compute_label_quality itself."""
    from label_audit.review.apply import StaleScoresError

    ds = scored
    ids = ds.sort_by("audit_label_issue_score", reverse=True).limit(2).values("id")
    edited = ds[ids[0]]  # edited before any review call
    edited.ground_truth.label = "9" if edited.ground_truth.label != "9" else "8"
    edited.save()
    la.tag_decisions(ds.select(ids), "ok")
    with pytest.raises(StaleScoresError, match="1 of the 2 samples"):
        la.apply_decisions(ds)
    rep = la.apply_decisions(ds, on_stale="skip", rescore="none", record_round=False)
    assert rep.num_applied == 1 and list(rep.stale) == [ids[0]]


def test_hard_delete_refused_while_a_saved_view_references_it(scored):
    ds = scored
    ids = la.suspects(ds, n=3).values("id")
    ds.save_view("picked", ds.select(ids[:1]))
    la.tag_decisions(ds.select(ids), "delete")
    before = raw_docs(ds)
    with pytest.raises(ValueError, match="saved view.*'picked'.*Nothing was changed"):
        la.apply_decisions(ds, confirm_delete=True)
    assert raw_docs(ds) == before and len(ds.load_saved_view("picked")) == 1
    ds.delete_saved_view("picked")
    rep = la.apply_decisions(ds, confirm_delete=True, rescore="none", record_round=False)
    assert sorted(rep.hard_deleted) == sorted(ids) and len(ds) == 197
    la.undo_decisions(ds)
    assert raw_docs(ds) == before and len(ds) == 200


def _objects_dataset(digits_dir, labels):
    """Digits images with two objects each (left/right half boxes), object ``2i+j``
    labelled ``labels[2i+j]`` and embedded with its digit's 64 pixels."""
    import fiftyone as fo
    from sklearn.datasets import load_digits

    _, filepaths, _ = digits_dir
    X = load_digits().data[:len(labels)].astype(np.float32)
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=filepaths[i], objects=fo.Detections(detections=[
        fo.Detection(label=str(labels[2 * i + j]), bounding_box=[0.5 * j, 0, 0.5, 1],
                     embeddings=X[2 * i + j]) for j in range(2)])) for i in range(len(labels) // 2)],
        progress=False)
    ds.add_sample_field("objects.detections.embeddings", fo.VectorField)
    return ds


def test_objects_decided_through_labels_and_patches(digits_dir):
    from label_audit.demo import inject_noise

    _, _, targets = digits_dir
    noisy, _ = inject_noise(targets[:160], 0.1, 10, random_state=0)
    ds = _objects_dataset(digits_dir, noisy)
    try:
        la.compute_label_quality(ds, "objects", progress=False)
        patches = la.suspects(ds, n=6)
        assert patches._is_patches and len(patches) == 6
        lids = patches.values("objects.id")
        # decide on selected labels (as the App passes them) and on a patches view
        selected = [dict(label_id=lid, sample_id=sid, field="objects") for lid, sid in
                    zip(lids[:2], patches.values("sample_id")[:2])]
        rep = la.tag_decisions(ds.select_labels(labels=selected), "relabel", label="7")
        assert rep.num_tagged == 2
        la.tag_decisions(patches.select(patches.values("id")[2:4]), "delete")
        la.tag_decisions(patches.select(patches.values("id")[4:]), "accept")
        tags = ds.count_label_tags("objects")
        assert tags.get("audit:delete") == 2 and sum(tags.values()) == 6
        before, before_schema = raw_docs(ds), schema(ds)
        rep = la.apply_decisions(ds, confirm_delete=True)
        assert rep.num_applied == 6 and len(rep.hard_deleted) == 2
        labels = dict(zip(*ds.values(["objects.detections.id", "objects.detections.label"],
                                     unwind=True)))
        assert labels[lids[0]] == "7" and labels[lids[1]] == "7"
        assert lids[2] not in labels and len(labels) == 158
        la.undo_decisions(ds)
        assert raw_docs(ds) == before and schema(ds) == before_schema
    finally:
        ds.delete()


def _relabel_top_object(ds, **apply_kwargs):
    """Scores the objects, relabels the top suspect and applies; returns
    ``(label id, sample id, old label, new label)``."""
    la.compute_label_quality(ds, "objects", progress=False)
    patches = la.suspects(ds, n=1)
    lid, sid = patches.values("objects.id")[0], patches.values("sample_id")[0]
    old_label = patches.values("objects.label")[0]
    new_label = "0" if old_label != "0" else "1"
    la.tag_decisions(patches, "relabel", label=new_label)
    la.apply_decisions(ds, rescore="none", **apply_kwargs)
    return lid, sid, old_label, new_label


def test_undo_on_objects_keeps_later_box_edits_and_other_runs_attributes(digits_dir):
    """Undo restores what the apply owned (label, audit_* attributes, audit: tags)
    and keeps what changed on the objects since (a moved box, another run's scores)."""
    _, _, targets = digits_dir
    ds = _objects_dataset(digits_dir, targets[:120])
    try:
        lid, sid, old_label, new_label = _relabel_top_object(ds)
        # after the apply: the user moves the box, another run writes an attribute
        sample = ds[sid]
        for det in sample.objects.detections:
            if det.id == lid:
                assert det.label == new_label
                det.bounding_box = [0.1, 0.1, 0.3, 0.3]
                det["det_audit_spurious"] = 0.25
        sample.save()
        la.undo_decisions(ds)
        det = [d for d in ds[sid].objects.detections if d.id == lid][0]
        assert det.label == old_label
        assert det.bounding_box == [0.1, 0.1, 0.3, 0.3]
        assert det["det_audit_spurious"] == 0.25
        assert det.get_field("audit_original_label") is None if det.has_field(
            "audit_original_label") else True
        assert det.tags == ["audit:relabel"]  # the decision is pending again, as before the apply
    finally:
        ds.delete()


def test_undo_keeps_later_edits_the_apply_did_not_make(scored):
    """An undo puts back what the apply wrote and nothing else: the Classification's later
    confidence/attribute/tag edits stay, and a soft-deleted or ok row's later label edit
    stays (the apply never wrote those labels)."""
    ds = scored
    ids = la.suspects(ds, n=3).values("id")
    relabelled, deleted, ok = ids
    old = ds[relabelled].ground_truth.label
    la.tag_decisions(ds.select([relabelled]), "relabel", label="0" if old != "0" else "1")
    la.tag_decisions(ds.select([deleted]), "delete")
    la.tag_decisions(ds.select([ok]), "ok")
    la.apply_decisions(ds, rescore="none", record_round=False)
    edits = {}
    for sid in ids:
        s = ds[sid]
        s.ground_truth.confidence = 0.123
        s.ground_truth["reviewer"] = "bob"
        s.ground_truth.tags = ["checked"]
        if sid != relabelled:
            s.ground_truth.label = "9" if s.ground_truth.label != "9" else "8"
            edits[sid] = s.ground_truth.label
        s.save()
    la.undo_decisions(ds)
    ds.reload()
    for sid in ids:
        gt = ds[sid].ground_truth
        assert (gt.confidence, gt["reviewer"], gt.tags) == (0.123, "bob", ["checked"])
    assert ds[relabelled].ground_truth.label == old
    assert {sid: ds[sid].ground_truth.label for sid in edits} == edits
    assert not ds.has_sample_field("audit_excluded")  # declared by the apply: gone with it


def test_a_new_decision_replaces_an_applied_soft_deletion(scored):
    ds = scored
    sid = la.suspects(ds, n=1).values("id")[0]
    la.tag_decisions(ds.select([sid]), "delete")
    la.apply_decisions(ds, rescore="none", record_round=False)
    assert ds[sid].audit_excluded is True
    la.tag_decisions(ds.select([sid]), "ok")
    la.apply_decisions(ds, rescore="none", record_round=False)
    assert ds[sid].audit_applied == "ok" and ds[sid].audit_excluded is False
    la.undo_decisions(ds)
    assert ds[sid].audit_excluded is True and ds[sid].audit_applied == "delete"


def test_summary_says_stale_rows_were_applied_with_on_stale_ignore(scored):
    ds = scored
    ids = la.suspects(ds, n=2).values("id")
    la.tag_decisions(ds.select(ids), "ok")
    s = ds[ids[0]]
    s.ground_truth.label = "9" if s.ground_truth.label != "9" else "8"
    s.save()
    rep = la.apply_decisions(ds, rescore="none", record_round=False, on_stale="ignore")
    assert rep.num_applied == 2 and "1 stale sample(s) (edited since scoring) applied anyway" in rep.summary()


def test_hard_delete_refused_on_video_datasets(tmp_path):
    import fiftyone as fo

    ds = fo.Dataset()
    try:
        ds.add_samples([fo.Sample(filepath=str(tmp_path / ("v%d.mp4" % i)),
                                  gt=fo.Classification(label=str(i % 2))) for i in range(30)])
        for s in ds:
            s.frames[1] = fo.Frame(x=1)
            s.save()
        rng = np.random.default_rng(0)
        ds.set_values("embeddings", list(rng.normal(size=(30, 4)).astype(np.float32)))
        la.compute_label_quality(ds, "gt", k=3, progress=False)
        sid = ds.first().id
        la.tag_decisions(ds.select([sid]), "delete")
        before = raw_docs(ds)
        with pytest.raises(ValueError, match="on a video dataset an undo could not restore"):
            la.apply_decisions(ds, confirm_delete=True, rescore="none", record_round=False)
        assert raw_docs(ds) == before and ds.count("frames") == 30
    finally:
        ds.delete()


def test_undo_on_objects_leaves_objects_the_apply_did_not_change(digits_dir):
    """Only the applied objects get their label and this key's attributes back: another
    object of the same sample keeps its later edit, and another audit key's attributes
    (audit_v2_*, which also start with 'audit_') survive on every object."""
    _, _, targets = digits_dir
    ds = _objects_dataset(digits_dir, targets[:120])
    try:
        lid, sid, old_label, _ = _relabel_top_object(ds, record_round=False)
        la.compute_label_quality(ds, "objects", audit_key="audit_v2", progress=False)
        sample = ds[sid]
        other = [d for d in sample.objects.detections if d.id != lid][0]
        other.label = "5" if other.label != "5" else "6"
        sample.save()
        la.undo_decisions(ds)
        dets = {d.id: d for d in ds[sid].objects.detections}
        assert dets[lid].label == old_label and dets[other.id].label == other.label
        for det in dets.values():
            assert det["audit_v2_label_issue_score"] is not None
    finally:
        ds.delete()


def test_an_interrupted_export_leaves_the_previous_files_whole(scored, tmp_path, monkeypatch):
    import csv as csv_module

    from label_audit.review import export as export_module

    ds = scored
    la.tag_decisions(ds.select(la.suspects(ds, n=2).values("id")), "delete")
    la.apply_decisions(ds, rescore="none", record_round=False)
    la.export_cleanset(ds, str(tmp_path))
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert len(before["exclude.txt"].splitlines()) == 2

    real_writer = csv_module.writer

    class Interrupted:
        def __init__(self, f):
            self.w, self.n = real_writer(f), 0

        def writerow(self, row):
            self.n += 1
            if self.n == 10:
                raise KeyboardInterrupt
            self.w.writerow(row)

    monkeypatch.setattr(export_module.csv, "writer", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        la.export_cleanset(ds, str(tmp_path), overwrite=True)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before  # no .tmp files left


def test_an_undo_cut_off_after_restoring_the_labels_can_be_run_again(scored, monkeypatch):
    from label_audit.review import apply as apply_module

    ds = scored
    ids = la.suspects(ds, n=2).values("id")
    before = raw_docs(ds)
    la.tag_decisions(ds.select(ids), "relabel", label="0")
    tagged = raw_docs(ds)
    la.apply_decisions(ds, rescore="none", record_round=False)
    real_save = apply_module.save_state

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(apply_module, "save_state", fail)
    with pytest.raises(KeyboardInterrupt):
        la.undo_decisions(ds)  # labels restored, the record not saved
    monkeypatch.setattr(apply_module, "save_state", real_save)
    la.undo_decisions(ds)  # no "edited after apply" refusal: the labels are the originals
    assert raw_docs(ds) == tagged and tagged != before


def test_stale_error_says_when_an_apply_without_rescore_made_the_change(scored):
    ds = scored
    sid = la.suspects(ds, n=1).values("id")[0]
    la.tag_decisions(ds.select([sid]), "relabel", label="0" if ds[sid].ground_truth.label != "0" else "1")
    la.apply_decisions(ds, rescore="none", record_round=False)
    la.tag_decisions(ds.select([sid]), "ok")
    with pytest.raises(ValueError, match=r"1 relabelled by an earlier apply that did not re-score"):
        la.apply_decisions(ds, rescore="none", record_round=False)


def test_evaluate_cleaning_refuses_object_level_audits(digits_dir):
    _, _, targets = digits_dir
    ds = _objects_dataset(digits_dir, targets[:60])
    try:
        la.compute_label_quality(ds, "objects", audit_key="objaudit", k=5, progress=False)
        with pytest.raises(ValueError, match="'objaudit' scored the objects of 'objects'.*Classification"):
            la.evaluate_cleaning(ds, audit_key="objaudit")
    finally:
        ds.delete()


def test_review_on_a_frames_view_is_a_clear_error(tmp_path):
    import fiftyone as fo

    ds = fo.Dataset()
    try:
        s = fo.Sample(filepath=str(tmp_path / "v.mp4"), gt=fo.Classification(label="a"))
        s.frames[1] = fo.Frame(x=1)
        ds.add_sample(s)
        frames = ds.to_frames(sample_frames="dynamic")
        with pytest.raises(ValueError, match="frames/clips view"):
            la.suspects(frames, label_field="gt")
    finally:
        ds.delete()
