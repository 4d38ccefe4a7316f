"""Detection issues on plain arrays: IoU, matching, per-box / per-image scores,
and the offline detection set (real digits on canvases, simulated detector)."""

import numpy as np
import pytest

from label_audit.detection.issues import (DEFAULTS, iou_gate, score_detection_issues,
                                          score_image, size_support)
from label_audit.detection.matching import box_iou, greedy_match, valid_boxes


def test_box_iou_hand_cases():
    a = [[0.0, 0.0, 0.2, 0.2]]
    b = [[0.0, 0.0, 0.2, 0.2], [0.1, 0.0, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1], [0, 0, 0, 0]]
    iou = box_iou(a, b)
    assert iou.shape == (1, 4)
    np.testing.assert_allclose(iou[0], [1.0, 1.0 / 3.0, 0.0, 0.0], atol=1e-12)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)
    assert box_iou(a, []).shape == (1, 0)
    with pytest.raises(ValueError, match="shape"):
        box_iou([[0, 0, 1]], b)
    assert valid_boxes([[0, 0, 1, 1], [np.nan, 0, 1, 1], [0, 0, -1, 1]]).tolist() == [
        True, False, False]


def test_box_iou_matches_fiftyone_compute_ious():
    import fiftyone as fo
    from fiftyone.utils.iou import compute_ious

    rng = np.random.RandomState(0)
    xy = rng.uniform(0, 0.7, size=(12, 2))
    wh = rng.uniform(0.05, 0.3, size=(12, 2))
    boxes = np.hstack([xy, wh])
    gts = [fo.Detection(label="a", bounding_box=b.tolist()) for b in boxes[:5]]
    preds = [fo.Detection(label="b", bounding_box=b.tolist()) for b in boxes[5:]]
    ours = box_iou(boxes[:5], boxes[5:])
    theirs = compute_ious(preds, gts)  # (preds, gts), classwise=False
    assert (ours > 0).any()
    np.testing.assert_allclose(ours, np.asarray(theirs).T, atol=1e-9)


def test_greedy_match_is_one_to_one_in_priority_order():
    priority = np.array([[0.9, 0.8], [0.85, 0.1], [0.0, 0.0]])
    eligible = priority > 0.05
    rows, cols = greedy_match(priority, eligible)
    assert rows.tolist() == [0, 1, -1]  # row 0 takes col 0 (0.9), row 1 gets col 1
    assert cols.tolist() == [0, 1]
    rows, cols = greedy_match(np.zeros((2, 0)), np.zeros((2, 0), bool))
    assert rows.tolist() == [-1, -1] and cols.tolist() == []


BOX = [0.1, 0.1, 0.2, 0.2]


def _shift(box, dx):
    return [box[0] + dx, box[1], box[2], box[3]]


def test_score_image_correct_box_scores_low():
    r = score_image([BOX], ["cat"], [_shift(BOX, 0.01)], ["cat"], [0.95])
    assert r["match"].tolist() == [0] and r["pred_match"].tolist() == [0]
    assert r["spurious"][0] < 0.1
    assert r["swapped"][0] == 0.0
    assert r["localization"][0] < 0.1
    assert r["missing"][0] == 0.0


def test_score_image_each_issue_type():
    far = [0.7, 0.7, 0.2, 0.2]
    # spurious: a box nothing supports
    r = score_image([BOX], ["cat"], np.zeros((0, 4)), [], [])
    assert r["spurious"].tolist() == [1.0] and r["iou"][0] != r["iou"][0]  # NaN
    # missing: a confident prediction on nothing
    r = score_image([BOX], ["cat"], [BOX, far], ["cat", "dog"], [0.9, 0.8])
    assert r["missing"][0] == 0.0 and r["missing"][1] == pytest.approx(0.8)
    # swapped: another class at high IoU beats the box's class
    r = score_image([BOX], ["cat"], [BOX, BOX], ["dog", "cat"], [0.9, 0.3])
    assert r["swapped"][0] == pytest.approx(0.6)
    assert r["suggested"][0] == 0
    # the unmatched same-class prediction on the box is a duplicate, not a missed object
    assert r["missing"].max() == 0.0
    # mislocated: IoU 1/3 with a confident prediction
    r = score_image([BOX], ["cat"], [_shift(BOX, 0.1)], ["cat"], [0.9])
    assert r["iou"][0] == pytest.approx(1 / 3)
    assert r["localization"][0] == pytest.approx(0.9 * (1 - 1 / 3))
    # a duplicate ground-truth box: one is matched, the other is unsupported
    r = score_image([BOX, BOX], ["cat", "cat"], [BOX], ["cat"], [0.9])
    assert sorted(r["spurious"].round(6).tolist()) == [pytest.approx(0.1), 1.0]
    # no ground truth at all: the image's no-annotations score is the top confidence
    r = score_image(np.zeros((0, 4)), [], [BOX, far], ["a", "b"], [0.4, 0.7])
    assert r["no_annotations"] == pytest.approx(0.7)


def test_iou_gate_and_size_support():
    np.testing.assert_allclose(iou_gate([0.05, 0.1, 0.25, 0.5, 0.9]), [0, 0.2, 0.5, 1, 1])
    area = np.r_[np.full(100, 0.001), np.full(100, 0.05)]
    support = np.r_[np.full(100, 0.2), np.full(100, 0.8)]
    r = size_support(area, support, size_bins=2, min_per_bin=50)
    np.testing.assert_allclose(r, np.r_[np.full(100, 0.25), np.ones(100)])
    # too few boxes for two bins: one bin, no size effect
    assert np.unique(size_support(area[:60], support[:60], min_per_bin=50)).tolist() == [1.0]


def _images():
    far = [0.7, 0.7, 0.2, 0.2]
    gt_boxes = [[BOX], [BOX, far], np.zeros((0, 4)), [BOX]]
    gt_labels = [["cat"], ["cat", "dog"], [], ["cat"]]
    pred_boxes = [[BOX], [BOX, _shift(far, 0.1)], [BOX], [BOX, far]]
    pred_labels = [["cat"], ["dog", "dog"], ["cat"], ["cat", "cat"]]
    conf = [[0.9], [0.9, 0.9], [0.8], [0.9, 0.85]]
    return gt_boxes, gt_labels, pred_boxes, pred_labels, conf


def test_score_detection_issues_flags_and_aggregates():
    r = score_detection_issues(*_images(), size_prior=False)
    assert r.gt_image.tolist() == [0, 1, 1, 3]
    assert r.pred_image.tolist() == [0, 1, 1, 2, 3, 3]
    assert r.is_swapped.tolist() == [False, True, False, False]
    assert r.suggested_label[1] == "dog"
    assert r.is_mislocated.tolist() == [False, False, True, False]
    assert r.issue.tolist() == [None, "swapped", "mislocated", None]
    assert r.is_missing.tolist() == [False, False, False, True, False, True]
    assert r.no_annotations.tolist() == [False, False, True, False]
    assert r.num_missing.tolist() == [0, 0, 1, 1]
    assert r.num_issues.tolist() == [0, 2, 2, 1]
    # the image score is the max of its boxes' and predictions' scores
    assert r.image_issue_score[0] == pytest.approx(r.issue_score[0])
    assert r.image_issue_score[1] == pytest.approx(max(r.issue_score[1:3]))
    assert r.image_issue_score[2] == pytest.approx(0.8)
    assert r.spurious.dtype == np.float32 and r.match.dtype == np.int64
    assert r.counts() == dict(missing=2, spurious=0, swapped=1, mislocated=1, no_annotations=1)
    assert "1 images without annotations" in r.summary()


def test_thresholds_are_parameters():
    base = score_detection_issues(*_images(), size_prior=False)
    strict = score_detection_issues(*_images(), size_prior=False, swap_threshold=0.95,
                                    missing_threshold=0.99, no_annotations_threshold=0.9,
                                    localization_threshold=0.9)
    np.testing.assert_array_equal(base.swapped, strict.swapped)  # scores unchanged
    assert base.is_swapped.sum() == 1 and strict.is_swapped.sum() == 0
    assert strict.is_missing.sum() == 0 and strict.no_annotations.sum() == 0
    assert strict.is_mislocated.sum() == 0
    assert strict.params["swap_threshold"] == 0.95
    assert set(DEFAULTS) <= set(base.params)


def test_zero_thresholds_do_not_match_or_flag_what_does_not_overlap():
    """min_iou=0 must not match boxes that do not overlap at all (a far prediction used to
    make a box 'mislocated'); spurious_threshold=0 must not flag a perfectly supported box."""
    far = [0.7, 0.7, 0.2, 0.2]
    r = score_image([BOX], ["cat"], [far], ["cat"], [0.9], min_iou=0.0)
    assert r["match"].tolist() == [-1] and r["localization"][0] == 0.0
    ok = score_detection_issues([[BOX]], [["cat"]], [[BOX]], [["cat"]], [[1.0]], size_prior=False,
                                spurious_threshold=0.0)
    assert ok.spurious[0] == 0.0 and not ok.is_spurious[0]


def test_bad_arrays_raise_clear_errors():
    gt_boxes, gt_labels, pred_boxes, pred_labels, conf = _images()
    with pytest.raises(ValueError, match="one entry per image"):
        score_detection_issues(gt_boxes[:2], gt_labels, pred_boxes, pred_labels, conf)
    bad = list(pred_boxes)
    bad[0] = [[np.nan, 0.1, 0.2, 0.2]]
    with pytest.raises(ValueError, match="Image 0 has predicted boxes with non-finite"):
        score_detection_issues(gt_boxes, gt_labels, bad, pred_labels, conf)
    bad_conf = list(conf)
    bad_conf[1] = [0.9, 3.5]
    with pytest.raises(ValueError, match=r"\[0, 1\]; image 1"):
        score_detection_issues(gt_boxes, gt_labels, pred_boxes, pred_labels, bad_conf)
    with pytest.raises(ValueError, match="min_iou"):
        score_detection_issues(*_images(), min_iou=0.6, iou_thresh=0.5)


# --- the offline detection set: real digits on canvases ---------------------------

@pytest.fixture(scope="module")
def det_set():
    from label_audit.detection.synthetic import build_detection_set

    return build_detection_set("digits", n_images=60, n_train_images=120, random_state=0)


def test_canvases_hold_real_items_inside_their_boxes(det_set):
    inside, outside = [], []
    for img, boxes in zip(det_set["images"], det_set["true_boxes"]):
        mask = np.zeros(img.shape, dtype=bool)
        for x, y, w, h in boxes.astype(int):
            mask[y:y + h, x:x + w] = True
        inside.append(img[mask])
        outside.append(img[~mask])
    inside, outside = np.concatenate(inside), np.concatenate(outside)
    assert inside.mean() > 3 * outside.mean()
    assert np.percentile(outside, 99) < 60  # the background is noise, items are in boxes


def test_injected_errors_and_detector(det_set):
    noisy = det_set["noisy"]
    issues = np.concatenate([r["issue"] for r in noisy])
    kinds = set(issues.tolist())
    assert {"", "spurious", "swapped", "mislocated"} <= kinds
    assert any(r["no_annotations"] for r in noisy)
    assert sum((~r["annotated"]).sum() for r in noisy) > 0
    for r, tb, tl in zip(noisy, det_set["true_boxes"], det_set["true_labels"]):
        swapped = r["issue"] == "swapped"
        src = r["source"][swapped]
        assert (r["labels"][swapped] != tl[src]).all()
        mis = r["issue"] == "mislocated"
        for b, s in zip(r["boxes"][mis], r["source"][mis]):
            assert box_iou([b], [tb[s]])[0, 0] < 0.55
    # the detector: confidences in [0, 1], more recall on big objects than small ones
    conf = np.concatenate([p["confidence"] for p in det_set["preds"]])
    assert conf.min() >= 0.05 and conf.max() <= 1
    found, size = [], []
    for p, tb in zip(det_set["preds"], det_set["true_boxes"]):
        for t, (x, y, w, h) in enumerate(tb):
            size.append(np.sqrt(w * h))
            found.append(bool(((p["source"] == t) & (p["confidence"] > 0.3)).any()))
    found, size = np.array(found), np.array(size)
    assert found[size > 25].mean() > found[size < 13].mean()


def test_scores_rank_injected_errors_above_correct_boxes(det_set):
    from label_audit.benchmarks.metrics import auprc

    S = det_set["canvas_size"]
    noisy, preds = det_set["noisy"], det_set["preds"]
    r = score_detection_issues([n["boxes"] / S for n in noisy], [n["labels"] for n in noisy],
                               [p["boxes"] / S for p in preds], [p["labels"] for p in preds],
                               [p["confidence"] for p in preds])
    issues = np.concatenate([n["issue"] for n in noisy])
    missed = np.concatenate([[s >= 0 and not n["annotated"][s] for s in p["source"]]
                             for n, p in zip(noisy, preds)]).astype(bool)
    for truth, score in ((issues == "swapped", r.swapped), (issues == "mislocated",
                                                              r.localization),
                         (issues == "spurious", r.spurious), (missed, r.missing)):
        assert truth.any()
        assert auprc(truth, score) > 2 * truth.mean()  # well above chance
