"""compute_detection_issues on real FiftyOne datasets (private MongoDB): the
COCO-imported demo set of real digit canvases, bad input, atomic writes, the
operator (immediate and delegated), and the benchmark end to end."""

import numpy as np
import pytest

PLUGIN = "@label-audit/label-audit"


@pytest.fixture(scope="module")
def det_data():
    from label_audit.detection.synthetic import build_detection_set

    return build_detection_set("digits", n_images=24, n_train_images=120, random_state=0)


@pytest.fixture
def det_ds(det_data, tmp_path):
    """Canvases written as PNGs, noisy ground truth imported from COCO json."""
    from label_audit.demo_detection import build_dataset

    ds, _ = build_dataset("digits", name=None, folder=tmp_path, persistent=False,
                          data=det_data)
    yield ds
    if not ds.deleted:
        ds.delete()


@pytest.fixture
def box_dataset(digits_dir):
    """Builds small datasets of real digit PNGs with hand-made boxes.

    Call it with a list of (ground_truth, predictions), each None or a list
    of (label, [x, y, w, h], confidence or None) tuples.
    """
    import fiftyone as fo

    _, paths, _ = digits_dir
    made = []

    def dets(rows):
        if rows is None:
            return None
        return fo.Detections(detections=[
            fo.Detection(label=l_, bounding_box=b, **({} if c is None else {"confidence": c}))
            for l_, b, c in rows])

    def build(samples):
        ds = fo.Dataset()
        ds.add_samples([fo.Sample(filepath=paths[i], ground_truth=dets(g), predictions=dets(p))
                        for i, (g, p) in enumerate(samples)])
        made.append(ds)
        return ds

    yield build
    for ds in made:
        if not ds.deleted:
            ds.delete()


BOX = [0.1, 0.1, 0.3, 0.3]
FAR = [0.6, 0.6, 0.3, 0.3]


def test_coco_import_and_scores_written(det_ds, det_data):
    import label_audit as la
    from label_audit.detection.issues import score_detection_issues

    ds = det_ds
    # the COCO importer brought every canvas and every noisy box, truth attached
    assert len(ds) == 24
    n_boxes = sum(len(r["boxes"]) for r in det_data["noisy"])
    assert ds.count("ground_truth.detections") == n_boxes
    assert set(ds.distinct("ground_truth.detections.injected_error")) >= {"spurious", "swapped"}
    assert all(fp.endswith(".png") for fp in ds.values("filepath"))

    res = la.compute_detection_issues(ds, "ground_truth", "predictions", progress=False)
    f = res.fields
    # written values equal the numpy scores of the same boxes
    gp = "ground_truth.detections."
    sp = [v for vs in ds.values(gp + f["gt"]["spurious"]) for v in (vs or [])]
    ids = [v for vs in ds.values(gp + "id") for v in (vs or [])]
    pos = {lid: i for i, lid in enumerate(res.gt_ids)}
    np.testing.assert_allclose([sp[i] for i in range(len(ids))],
                               [res.result.spurious[pos[lid]] for lid in ids], rtol=1e-6)
    # sortable: images, boxes (patches) and predictions
    top = ds.sort_by(f["sample"]["issue_score"], reverse=True).first()
    assert top[f["sample"]["issue_score"]] == pytest.approx(res.result.image_issue_score.max())
    patches = ds.to_patches("ground_truth").sort_by("ground_truth." + f["gt"]["issue_score"],
                                                    reverse=True)
    assert patches.first().ground_truth[f["gt"]["issue_score"]] == pytest.approx(
        res.result.issue_score.max())
    assert ds.count("predictions.detections." + f["pred"]["missing"]) == len(res.pred_ids)
    assert ds.count(f["sample"]["num_issues"]) == len(ds)
    # images left without annotations by the injection are flagged
    flagged = ds.match({f["sample"]["no_annotations"]: True}).values("injected_no_annotations")
    assert flagged and np.mean(flagged) >= 0.5
    # the run is recorded
    info = ds.get_run_info("det_audit")
    assert info.config.method == "label_audit.detection_issues"
    assert ds.load_run_results("det_audit").counts == res.result.counts()
    # the SDK on arrays gives the same scores from the same boxes
    S = det_data["canvas_size"]
    canvas = [int(fp.rsplit("_", 1)[-1][:5]) for fp in ds.values("filepath")]
    assert res.sample_ids == [ds.values("id")[k] for k in range(len(ds))]
    direct = score_detection_issues(
        [n["boxes"] / S for n in det_data["noisy"]], [n["labels"] for n in det_data["noisy"]],
        [p["boxes"] / S for p in det_data["preds"]], [p["labels"] for p in det_data["preds"]],
        [p["confidence"] for p in det_data["preds"]])
    np.testing.assert_allclose(direct.image_issue_score[canvas],
                               res.result.image_issue_score, atol=1e-4)


def test_missing_label_field_and_none_ground_truth(box_dataset):
    import label_audit as la

    ds = box_dataset([(None, [("3", BOX, 0.9)]), ([("1", BOX, None)], [("1", BOX, 0.9)])])
    try:
        with pytest.raises(ValueError, match="'boxes' does not exist"):
            la.compute_detection_issues(ds, "boxes", "predictions", progress=False)
        res = la.compute_detection_issues(ds, "ground_truth", "predictions", progress=False)
        s0, s1 = ds.values("det_audit_no_annotations")
        assert s0 is True and s1 is False  # sample without ground truth, confident prediction
        assert ds.first()["det_audit_no_annotations_score"] == pytest.approx(0.9)
        assert res.result.num_missing.tolist() == [1, 0]
    finally:
        ds.delete()


def test_empty_and_absent_predictions(box_dataset):
    import label_audit as la

    ds = box_dataset([([("1", BOX, None)], []),          # predicted: nothing there
                       ([("2", BOX, None)], None),        # not run through the detector
                       ([("3", BOX, None)], [("3", BOX, 0.9)])])
    try:
        res = la.compute_detection_issues(ds, "ground_truth", "predictions", progress=False,
                                          size_prior=False)
        sp = [d[0] if d else None for d in ds.values("ground_truth.detections.det_audit_spurious")]
        assert sp[0] == pytest.approx(1.0)        # empty predictions: unsupported box
        assert sp[1] is None                      # skipped sample: left unscored
        assert sp[2] == pytest.approx(0.1)
        assert list(res.skipped) == [ds.values("id")[1]]
        assert ds.values("det_audit_issue_score")[1] is None
        ds.set_values("predictions", [None] * 3)
        with pytest.raises(ValueError, match="No sample in this view has predictions"):
            la.compute_detection_issues(ds, "ground_truth", "predictions", progress=False)
    finally:
        ds.delete()


def test_nan_boxes_raise_or_are_skipped(box_dataset):
    import label_audit as la

    ds = box_dataset([([("1", BOX, None), ("2", [np.nan, 0.1, 0.2, 0.2], None)],
                        [("1", BOX, 0.9)])])
    try:
        sid = ds.first().id
        with pytest.raises(ValueError, match="sample %s, 'ground_truth'.*on_invalid='skip'" % sid):
            la.compute_detection_issues(ds, "ground_truth", "predictions", progress=False)
        assert not ds.has_field("ground_truth.detections.det_audit_spurious")  # nothing written
        res = la.compute_detection_issues(ds, "ground_truth", "predictions", progress=False,
                                          on_invalid="skip")
        bad_id = ds.first().ground_truth.detections[1].id
        assert bad_id in res.skipped
        scores = ds.first().ground_truth.detections
        assert scores[0]["det_audit_spurious"] is not None and scores[1]["det_audit_spurious"] is None
    finally:
        ds.delete()


def test_predictions_without_confidence(box_dataset):
    import fiftyone as fo
    import label_audit as la

    ds = box_dataset([([("1", BOX, None)], [("1", BOX, 0.9)])])
    try:
        s = ds.first()
        s.predictions.detections.append(fo.Detection(label="7", bounding_box=FAR))
        s.save()
        with pytest.raises(ValueError, match="have no confidence.*default_confidence=1.0"):
            la.compute_detection_issues(ds, "ground_truth", "predictions", progress=False)
        res = la.compute_detection_issues(ds, "ground_truth", "predictions", progress=False,
                                          default_confidence=1.0)
        assert res.result.missing.tolist() == [0.0, 1.0]
        # the operator form offers the same fallback
        import fiftyone.operators as foo

        out = foo.execute_operator(
            PLUGIN + "/compute_detection_issues",
            ctx=dict(dataset=ds, view=ds.view(),
                     params=dict(label_field="ground_truth", pred_field="predictions",
                                 audit_key="op", default_confidence=1.0)))
        assert out.error is None, out.error
        assert out.result["num_missing"] == 1
    finally:
        ds.delete()


def test_label_fields_of_different_types(box_dataset):
    import fiftyone as fo
    import label_audit as la

    ds = box_dataset([([("1", BOX, None)], [("1", BOX, 0.9)])])
    try:
        ds.set_values("cls", [fo.Classification(label="1", confidence=0.9)])
        with pytest.raises(ValueError, match="'cls' is Classification"):
            la.compute_detection_issues(ds, "ground_truth", "cls", progress=False)
        with pytest.raises(ValueError, match="label_field 'cls' is Classification"):
            la.compute_detection_issues(ds, "cls", "predictions", progress=False)
        with pytest.raises(ValueError, match="both 'ground_truth'"):
            la.compute_detection_issues(ds, "ground_truth", "ground_truth", progress=False)
    finally:
        ds.delete()


def test_failed_later_write_restores_earlier_ones(det_ds, monkeypatch):
    import label_audit as la
    from label_audit import writes

    ds = det_ds
    la.compute_detection_issues(ds, "ground_truth", "predictions", progress=False)
    gp, pp = "ground_truth.detections.", "predictions.detections."
    before = (ds.values(gp + "det_audit_swapped"), ds.values(gp + "det_audit_is_swapped"),
              ds.values(pp + "det_audit_is_missing"), ds.values("det_audit_num_missing"))

    real = writes.write_rows
    calls = []

    def failing(samples, columns, *args, **kwargs):
        calls.append(kwargs.get("label_path"))
        if len(calls) == 3:  # ground truth and predictions written, samples fail
            raise RuntimeError("disk full")
        return real(samples, columns, *args, **kwargs)

    monkeypatch.setattr(writes, "write_rows", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        # other thresholds: the flags would change if the write went through
        la.compute_detection_issues(ds, "ground_truth", "predictions", progress=False,
                                    swap_threshold=0.01, missing_threshold=0.01,
                                    iou_thresh=0.9)
    monkeypatch.setattr(writes, "write_rows", real)
    assert calls[:3] == ["ground_truth.detections", "predictions.detections", None]
    ds.reload()
    after = (ds.values(gp + "det_audit_swapped"), ds.values(gp + "det_audit_is_swapped"),
             ds.values(pp + "det_audit_is_missing"), ds.values("det_audit_num_missing"))
    assert after == before

    # on a fresh key the fields the first writes added leave the schema again
    calls.clear()
    monkeypatch.setattr(writes, "write_rows", failing)
    with pytest.raises(RuntimeError):
        la.compute_detection_issues(ds, "ground_truth", "predictions", audit_key="fresh",
                                    progress=False)
    ds.reload()
    assert not ds.has_field("ground_truth.detections.fresh_spurious")
    assert not ds.has_field("predictions.detections.fresh_missing")
    assert "fresh" not in ds.list_runs()


def test_a_failed_run_record_restores_the_fields_and_patches_views_are_refused(det_ds, monkeypatch):
    """Saving the run record is part of the write: if it fails, the fields are restored.
    Evaluation-patches views are refused (their samples are temporary copies)."""
    import label_audit as la
    from label_audit import runs

    ds = det_ds
    la.compute_detection_issues(ds, "ground_truth", "predictions", progress=False)
    gp = "ground_truth.detections."
    before = (ds.values(gp + "det_audit_swapped"), ds.values("det_audit_num_missing"))

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "save_run", fail)
    with pytest.raises(KeyboardInterrupt):
        la.compute_detection_issues(ds, "ground_truth", "predictions", progress=False, iou_thresh=0.9,
                                    swap_threshold=0.01, missing_threshold=0.01)
    monkeypatch.undo()
    ds.reload()
    assert (ds.values(gp + "det_audit_swapped"), ds.values("det_audit_num_missing")) == before
    ds.evaluate_detections("predictions", gt_field="ground_truth", eval_key="ev")
    with pytest.raises(ValueError, match="not a patches/frames/clips view.*Nothing was written"):
        la.compute_detection_issues(ds.to_evaluation_patches("ev"), "ground_truth", "predictions",
                                    audit_key="onpatches", progress=False)
    with pytest.raises(ValueError, match="not a patches/frames/clips view"):
        la.compute_embeddings(ds.to_patches("ground_truth"), embeddings_field="e", progress=False)
    assert "onpatches" not in ds.list_runs()
    ds.clone_sample_field("predictions", "predictions2")
    with pytest.raises(ValueError, match="holds the detection run of 'ground_truth' / 'predictions'"):
        la.compute_detection_issues(ds, "ground_truth", "predictions2", progress=False)


@pytest.mark.parametrize("delegated", [False, True])
def test_operator(det_ds, delegated):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    ds = det_ds
    result = foo.execute_operator(
        PLUGIN + "/compute_detection_issues",
        ctx=dict(dataset=ds, view=ds.view(),
                 params=dict(label_field="ground_truth", pred_field="predictions",
                             audit_key="op", swap_threshold=0.5, delegate=delegated)),
        request_delegation=delegated)
    if delegated:
        assert result.delegated and not ds.has_field("op_issue_score")
        DelegatedOperationService().execute_queued_operations(dataset_name=ds.name)
        ds.reload()
    else:
        assert result.error is None, result.error
        assert result.result["num_images"] == len(ds)
        assert result.result["sort_field"] == "op_issue_score"
    assert ds.count("op_issue_score") == len(ds)
    assert ds.get_run_info("op").config.swap_threshold == 0.5


def test_operator_rejects_missing_fields(det_ds):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    with pytest.raises(ExecutionError):
        foo.execute_operator(PLUGIN + "/compute_detection_issues", ctx=dict(
            dataset=det_ds, view=det_ds.view(),
            params=dict(label_field="ground_truth", pred_field="nope")))


def test_benchmark_end_to_end(monkeypatch):
    """Both methods on the same small set; label-audit finds missed objects and
    badly drawn boxes far better than Brain's fixed-threshold flags."""
    from label_audit.benchmarks import detection as bench
    from label_audit.detection import synthetic

    real = synthetic.build_detection_set
    monkeypatch.setattr(synthetic, "build_detection_set",
                        lambda *a, **k: real(*a, **dict(k, n_train_images=120)))
    out = bench.run_detection("digits", n_images=40, seed=0)
    tables = out["tables"]
    assert set(tables) == set(bench.ISSUES)
    for issue in bench.ISSUES:
        methods = [row["method"] for row in tables[issue]]
        assert methods == ["label-audit", "fiftyone-brain"]
        assert tables[issue][0]["errors"] > 0
    la_row, brain_row = tables["missing"]
    assert la_row["auprc"] > brain_row["auprc"]
    la_row, brain_row = tables["mislocated"]
    assert la_row["auprc"] > brain_row["auprc"]
    clean = {row["ground_truth"]: row for row in out["cleaning"]}
    assert clean["true"]["f1_vs_true"] == pytest.approx(1.0)
    assert clean["cleaned by label-audit"]["f1_vs_true"] > clean["noisy"]["f1_vs_true"]
    assert "[cleaning" in bench.format_report([out])


def test_demo_main_builds_persistent_dataset(tmp_path, monkeypatch, capsys):
    import fiftyone as fo
    from label_audit import demo_detection
    from label_audit.detection import synthetic

    real = synthetic.build_detection_set
    monkeypatch.setattr(synthetic, "build_detection_set",
                        lambda *a, **k: real(*a, **dict(k, n_train_images=120)))
    monkeypatch.setenv("LABEL_AUDIT_DATA_DIR", str(tmp_path))
    name = "label-audit-detection-demo-test"
    try:
        assert demo_detection.main(["--no-app", "--n", "16", "--name", name]) == 0
        out = capsys.readouterr().out
        assert "no annotations" in out and "precision" in out
        ds = fo.load_dataset(name)
        assert ds.persistent and len(ds) == 16
        assert (tmp_path / "detection-digits-16-0" / "labels.json").exists()
        assert ds.count("det_audit_issue_score") == 16
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
