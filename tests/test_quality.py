"""compute_label_quality on real FiftyOne datasets: fields, runs, bad input, atomic writes."""

import numpy as np
import pytest

import label_audit as la
from label_audit.demo import inject_noise
from label_audit.quality import field_names

MODEL = "efficientnet-lite0"


@pytest.fixture
def noisy_digits(digits_embeddings):
    """300 digits with 10% flipped labels and precomputed embeddings."""
    import fiftyone as fo

    from label_audit.demo_data import DIGITS_CLASSES, images_dataset

    filepaths, targets, X = digits_embeddings
    noisy, flipped = inject_noise(targets, 0.1, 10, random_state=1)
    ds = images_dataset(filepaths, noisy, DIGITS_CLASSES)
    ds.set_values("embeddings", list(X))
    ds.set_values("flipped", flipped.tolist())
    yield ds, flipped, X, noisy
    ds.delete()


def test_scores_written_as_sortable_fields_and_find_errors(noisy_digits):
    ds, flipped, X, noisy = noisy_digits
    res = la.compute_label_quality(ds, "ground_truth", progress=False)
    names = field_names("audit")
    for name in names.values():
        assert ds.has_sample_field(name)
    assert len(res.ids) == 300 and not res.skipped
    # the sorted view puts the flipped labels first
    k = int(flipped.sum())
    top = ds.sort_by(names["label_issue_score"], reverse=True).limit(k)
    precision = np.mean(top.values("flipped"))
    assert precision > 0.5, precision  # random would be 0.1
    # fields agree with the array-level engine on the same inputs
    r = la.score_label_issues(noisy, features=X, classes=ds.default_classes)
    np.testing.assert_allclose(ds.values(names["label_issue_score"]), r.label_issue_score,
                               rtol=1e-5, atol=1e-6)
    assert ds.values(names["suggested_label"]) == [ds.default_classes[i] for i in r.suggested_label]
    assert ds.count_values(names["is_label_issue"]).get(True, 0) == int(r.is_label_issue.sum())


def test_run_recorded_listable_loadable_deletable(noisy_digits):
    ds, *_ = noisy_digits
    la.compute_label_quality(ds, "ground_truth", audit_key="round1", progress=False)
    assert "round1" in ds.list_runs(method="label_audit.label_quality")
    info = ds.get_run_info("round1")
    assert info.config.label_field == "ground_truth"
    results = ds.load_run_results("round1")
    nm = np.array(results.noise_matrix)
    assert nm.shape == (10, 10)
    np.testing.assert_allclose(nm.sum(axis=0), 1.0, atol=1e-6)  # columns: P(given | true)
    assert sum(results.issue_counts.values()) == results.num_label_issues
    ds.delete_run("round1")
    assert "round1" not in ds.list_runs()


def test_patches_scored_per_object(tmp_path, digits_dir, dataset):
    import fiftyone as fo

    _, filepaths, targets = digits_dir
    noisy, flipped = inject_noise(targets[:120], 0.1, 10, random_state=0)
    # two digits per image, each boxed
    from PIL import Image

    samples = []
    for i in range(60):
        a, b = np.asarray(Image.open(filepaths[2 * i])), np.asarray(Image.open(filepaths[2 * i + 1]))
        path = str(tmp_path / ("pair_%03d.png" % i))
        Image.fromarray(np.concatenate([a, b], axis=1)).save(path)
        dets = [fo.Detection(label=str(noisy[2 * i]), bounding_box=[0, 0, 0.5, 1], flipped=bool(flipped[2 * i])),
                fo.Detection(label=str(noisy[2 * i + 1]), bounding_box=[0.5, 0, 0.5, 1], flipped=bool(flipped[2 * i + 1]))]
        samples.append(fo.Sample(filepath=path, objects=fo.Detections(detections=dets)))
    dataset.add_samples(samples, progress=False)
    la.compute_embeddings(dataset, model=MODEL, patches_field="objects", progress=False)
    res = la.compute_label_quality(dataset, "objects", progress=False)
    assert res.patches and len(res.ids) == 120
    scores = dataset.values("objects.detections.audit_label_issue_score", unwind=True)
    assert len(scores) == 120 and all(s is not None for s in scores)
    dataset.add_dynamic_sample_fields()
    patches = dataset.to_patches("objects").sort_by("objects.audit_label_issue_score",
                                                     reverse=True)
    top = patches.limit(int(flipped.sum())).values("objects.flipped")
    assert np.mean(top) > 0.3  # random: 0.1


# --- bad input ---------------------------------------------------------------


def test_progress_bar_and_callback_follow_the_scoring_stages(noisy_digits, capsys):
    """progress=True draws a tqdm bar named after the stage; the callback sees the scoring's own
    stages (fold models, neighbours, ...) inside its 10-80% share, in order, and ends at 1."""
    ds, *_ = noisy_digits
    seen = []
    la.compute_label_quality(ds, "ground_truth", n_repeats=2, progress=True,
                             progress_callback=lambda f, label: seen.append((f, label)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and seen[-1][1] == "Done"
    labels = [label for _, label in seen]
    folds = [f for f, label in seen if label.startswith("Fitting fold models (repeat")]
    assert len(folds) == 10 and 0.1 < folds[0] and folds[-1] <= 0.8  # 2 repeats x 5 folds
    assert "Fitting fold models (repeat 2 of 2)" in labels
    assert labels.index("Finding 10 neighbours per sample") < labels.index("Writing scores")
    err = capsys.readouterr().err
    assert "Label quality: Writing scores" in err or "Label quality: Done" in err
    assert "100%" in err


def test_missing_labels_are_skipped_and_reported(noisy_digits):
    ds, *_ = noisy_digits
    missing = ds.limit(5)
    ids = missing.values("id")
    missing.set_field("ground_truth", None).save()
    res = la.compute_label_quality(ds, "ground_truth", progress=False)
    assert set(res.skipped) == set(ids) and len(res.ids) == 295
    assert ds.select(ids).values("audit_label_issue_score") == [None] * 5


def test_labels_outside_class_list_refused(noisy_digits):
    ds, *_ = noisy_digits
    with pytest.raises(ValueError, match="not in the given classes"):
        la.compute_label_quality(ds, "ground_truth", classes=[str(i) for i in range(9)],
                                 progress=False)
    assert not ds.has_sample_field("audit_label_issue_score")


def test_single_class_refused(noisy_digits):
    ds, *_ = noisy_digits
    with pytest.raises(ValueError, match="at least two"):
        la.compute_label_quality(ds.match({"ground_truth.label": "3"}), "ground_truth",
                                 progress=False)


def test_missing_embeddings_and_wrong_field_type_refused(noisy_digits):
    ds, *_ = noisy_digits
    with pytest.raises(ValueError, match="compute_embeddings"):
        la.compute_label_quality(ds, "ground_truth", embeddings_field="nope", progress=False)
    with pytest.raises(ValueError, match="Classification field"):
        la.compute_label_quality(ds, "flipped", progress=False)


def test_empty_view_refused(noisy_digits):
    ds, *_ = noisy_digits
    with pytest.raises(ValueError, match="empty"):
        la.compute_label_quality(ds.limit(0), "ground_truth", progress=False)


def test_mismatched_embedding_dimensions_refused(noisy_digits):
    ds, *_ = noisy_digits
    s = ds.first()
    s["embeddings"] = np.ones(7, dtype=np.float32)
    s.save()
    with pytest.raises(ValueError, match="different dimensions"):
        la.compute_label_quality(ds, "ground_truth", progress=False)


def test_interrupted_write_restores_previous_values(noisy_digits):
    from label_audit.writes import write_rows

    ds, *_ = noisy_digits
    la.compute_label_quality(ds, "ground_truth", progress=False)
    before = ds.values("audit_label_issue_score")
    ids = ds.values("id")
    bad = [0.5] * len(ids)
    bad[250] = object()  # not BSON-encodable: the 3rd batch fails after two were written
    with pytest.raises(Exception):
        write_rows(ds, {"audit_label_issue_score": ("float", bad),
                        "audit_new_field": ("float", [1.0] * len(ids))},
                   ids, ids, batch_size=100)
    assert ds.values("audit_label_issue_score") == before
    assert not ds.has_sample_field("audit_new_field")


def test_nan_or_zero_embedding_refused_naming_the_sample(noisy_digits):
    ds, *_ = noisy_digits
    s = ds.first()
    s["embeddings"] = np.zeros_like(s["embeddings"])
    s.save()
    with pytest.raises(ValueError, match="sample %s .*all zeros" % s.id):
        la.compute_label_quality(ds, "ground_truth", progress=False)
    v = np.ones_like(s["embeddings"])
    v[3] = np.nan
    s["embeddings"] = v
    s.save()
    with pytest.raises(ValueError, match="sample %s .*not finite" % s.id):
        la.compute_label_quality(ds, "ground_truth", progress=False)
    assert not ds.has_sample_field("audit_label_issue_score")


def test_rollback_restores_nested_fields(noisy_digits):
    from label_audit.writes import write_rows

    ds, *_ = noisy_digits
    ids = ds.values("id")
    before = ds.values("ground_truth.label")
    bad = ["x"] * len(ids)
    bad[250] = object()  # fails in the 3rd batch
    with pytest.raises(Exception):
        write_rows(ds, {"ground_truth.label": ("str", bad)}, ids, ids, batch_size=100)
    assert ds.values("ground_truth.label") == before


def test_audit_keys_that_would_replace_another_run_are_refused_before_writing(noisy_digits):
    """Invalid keys, keys of other runs, of another field's run and the review/evaluation keys of
    another run are refused before anything is written (no field, no run left behind)."""
    ds, *_ = noisy_digits
    ds.clone_sample_field("ground_truth", "gt2")
    la.compute_label_quality(ds, "ground_truth", audit_key="audit", progress=False)
    from label_audit.runs import save_run

    save_run(ds, "emb_run", "label_audit.embeddings", dict(embeddings_field="embeddings"), dict(n=1))
    fields_before, runs_before = set(ds.get_field_schema()), ds.list_runs()
    cases = [("my-audit", "ground_truth", r"Invalid audit_key 'my-audit'.*'my_audit'"),
             ("emb_run", "ground_truth", r"'emb_run' already holds a label_audit.embeddings run"),
             ("audit", "gt2", r"holds the label-quality run of field 'ground_truth'"),
             ("audit_review", "gt2", r"reserved for the review record of audit run 'audit'"),
             ("audit_evaluation", "gt2", r"reserved for the evaluation record")]
    for key, field, match in cases:
        with pytest.raises(ValueError, match=match):
            la.compute_label_quality(ds, field, audit_key=key, progress=False)
        assert set(ds.get_field_schema()) == fields_before and ds.list_runs() == runs_before
    # a key whose review record is taken by another kind of run
    save_run(ds, "other_review", "label_audit.embeddings", dict(a=1), dict(n=1))
    with pytest.raises(ValueError, match=r"needs the key 'other_review' for its review record"):
        la.compute_label_quality(ds, "gt2", audit_key="other", progress=False)
    assert ds.get_run_info("emb_run").config.method == "label_audit.embeddings"
    # the same key and field is re-scored as before
    la.compute_label_quality(ds, "ground_truth", audit_key="audit", progress=False)


def test_a_failed_run_record_restores_the_written_fields(noisy_digits, monkeypatch):
    from label_audit import runs

    ds, *_ = noisy_digits
    la.compute_label_quality(ds, "ground_truth", progress=False)
    before = ds.values("audit_label_issue_score")

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "save_run", fail)
    with pytest.raises(KeyboardInterrupt):
        la.compute_label_quality(ds, "ground_truth", k=5, progress=False)
    monkeypatch.undo()
    assert ds.values("audit_label_issue_score") == before
    assert ds.get_run_info("audit").config.k == 10
