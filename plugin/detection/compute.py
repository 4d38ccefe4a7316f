"""``compute_detection_issues``: score a Detections field against a predictions
field and write the scores back as sortable fields, with a run record.

FiftyOne glue only: reading boxes in bulk, validating them, calling
:func:`label_audit.detection.issues.score_detection_issues` and writing the
results in bulk (all-or-nothing over the three targets: ground-truth labels,
predicted labels, samples).

Fields written, for ``audit_key="det_audit"``:

On each ground-truth detection (``<label_field>.detections``):

===============================  =============================================
``det_audit_issue_score``        max of the three scores below, in [0, 1];
                                 higher = more likely wrong
``det_audit_spurious``           no prediction supports the box (background or
                                 duplicate box)
``det_audit_swapped``            a prediction of another class outweighs
                                 those of the box's class at this place
``det_audit_suggested_label``    that other class (None if no prediction of
                                 another class overlaps)
``det_audit_localization``       confidence x (1 - IoU) of the matched
                                 prediction: the box is badly drawn
``det_audit_iou``                IoU with the matched prediction (None if
                                 none matched)
``det_audit_match_id``           id of the matched prediction (its box is the
                                 suggested fix of a mislocated box)
``det_audit_is_spurious``,       flags (score >= its threshold)
``det_audit_is_swapped``,
``det_audit_is_mislocated``
``det_audit_issue``              the flagged issue with the highest score
                                 ("spurious", "swapped", "mislocated") or None
===============================  =============================================

On each prediction (``<pred_field>.detections``): ``det_audit_missing``
(a confident prediction that matches no ground truth: an object the
labellers missed), ``det_audit_is_missing`` (flag), ``det_audit_match_id``
(id of the matched ground-truth box).

On samples: ``det_audit_num_missing``, ``det_audit_num_spurious``,
``det_audit_num_swapped``, ``det_audit_num_mislocated``,
``det_audit_num_issues`` (ints), ``det_audit_no_annotations`` (flag: no
ground truth but a confident prediction), ``det_audit_no_annotations_score``
(the highest confidence on an image with no ground truth), and
``det_audit_issue_score`` (the image's highest score of any kind; sort images
by it, descending).

The formulas are in :mod:`label_audit.detection.issues`.
"""

import logging

import numpy as np

from .issues import DEFAULTS, score_detection_issues

logger = logging.getLogger(__name__)

RUN_METHOD = "label_audit.detection_issues"

GT_FIELDS = (("issue_score", "float"), ("spurious", "float"), ("swapped", "float"),
             ("suggested_label", "label"), ("localization", "float"), ("iou", "float"),
             ("match_id", "str"), ("is_spurious", "bool"), ("is_swapped", "bool"),
             ("is_mislocated", "bool"), ("issue", "str"))
PRED_FIELDS = (("missing", "float"), ("is_missing", "bool"), ("match_id", "str"))
SAMPLE_FIELDS = (("num_missing", "int"), ("num_spurious", "int"), ("num_swapped", "int"),
                 ("num_mislocated", "int"), ("num_issues", "int"),
                 ("no_annotations", "bool"), ("no_annotations_score", "float"),
                 ("issue_score", "float"))


def field_names(audit_key):
    """``{"gt": {name: field}, "pred": {...}, "sample": {...}}`` for ``audit_key``."""
    return {part: {name: "%s_%s" % (audit_key, name) for name, _ in fields}
            for part, fields in (("gt", GT_FIELDS), ("pred", PRED_FIELDS),
                                 ("sample", SAMPLE_FIELDS))}


class DetectionIssuesResults:
    """What :func:`compute_detection_issues` computed and wrote.

    Attributes:
        audit_key, label_field, pred_field: the run's key and fields
        result: the :class:`label_audit.detection.issues.DetectionIssueResult`
            (rows: scored images, their ground-truth boxes, their predictions)
        sample_ids: ``(n_images,)`` ids of the scored samples
        gt_ids, pred_ids: ids of the scored ground-truth boxes / predictions,
            row-aligned with the result
        skipped: ``{id: reason}`` for samples or labels left unscored
        fields: ``field_names(audit_key)``
    """

    def __init__(self, audit_key, label_field, pred_field, result, sample_ids, gt_ids,
                 pred_ids, skipped, fields):
        self.audit_key = audit_key
        self.label_field = label_field
        self.pred_field = pred_field
        self.result = result
        self.sample_ids = sample_ids
        self.gt_ids = gt_ids
        self.pred_ids = pred_ids
        self.skipped = skipped
        self.fields = fields

    def summary(self):
        f = self.fields
        return "\n".join([
            "Detection issues %r (%r vs predictions %r): %s; %d skipped"
            % (self.audit_key, self.label_field, self.pred_field, self.result.summary(),
               len(self.skipped)),
            "Sort images by %r, boxes by to_patches(%r).sort_by(%r) and missed objects by "
            "to_patches(%r).sort_by(%r) (all descending)."
            % (f["sample"]["issue_score"], self.label_field,
               "%s.%s" % (self.label_field, f["gt"]["issue_score"]), self.pred_field,
               "%s.%s" % (self.pred_field, f["pred"]["missing"])),
        ])

    def __repr__(self):
        return self.summary()


def _detections_type(samples, field_name, role):
    import fiftyone as fo

    field = samples.get_field(field_name)
    doc_type = getattr(field, "document_type", None)
    if field is None:
        raise ValueError(
            "The %s field %r does not exist on this dataset: pass the name of a "
            "Detections field (fields: %s)"
            % (role, field_name, ", ".join(sorted(samples.get_field_schema()))[:300]))
    if doc_type is None or not issubclass(doc_type, fo.Detections):
        return getattr(doc_type, "__name__", type(field).__name__)
    return None


def _check_fields(samples, label_field, pred_field):
    if label_field == pred_field:
        raise ValueError("label_field and pred_field are both %r: pass the ground-truth "
                         "field and a field of model predictions" % label_field)
    bad_gt = _detections_type(samples, label_field, "label")
    bad_pred = _detections_type(samples, pred_field, "predictions")
    if bad_gt or bad_pred:
        raise ValueError(
            "Both fields must be Detections fields (boxes): label_field %r is %s and "
            "pred_field %r is %s. For Classification fields use "
            "label_audit.compute_label_quality" % (
                label_field, bad_gt or "Detections", pred_field, bad_pred or "Detections"))


def _box_ok(box):
    if box is None or len(box) != 4:
        return False
    try:
        arr = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return bool(np.all(np.isfinite(arr)) and arr[2] >= 0 and arr[3] >= 0)


def compute_detection_issues(samples, label_field, pred_field, audit_key="det_audit",
                             iou_thresh=DEFAULTS["iou_thresh"], min_iou=DEFAULTS["min_iou"],
                             missing_threshold=DEFAULTS["missing_threshold"],
                             spurious_threshold=DEFAULTS["spurious_threshold"],
                             swap_threshold=DEFAULTS["swap_threshold"],
                             localization_threshold=DEFAULTS["localization_threshold"],
                             no_annotations_threshold=DEFAULTS["no_annotations_threshold"],
                             size_prior=True, default_confidence=None, on_invalid="raise",
                             progress=None, progress_callback=None):
    """Scores missing, spurious, swapped and mislocated boxes and writes them.

    Args:
        samples: a FiftyOne dataset or view of images
        label_field: the ground-truth Detections field
        pred_field: a Detections field of predictions from any detector
            (boxes, labels and confidences are used)
        audit_key ("det_audit"): the run key and the prefix of the written
            fields (see :func:`field_names` and the module docstring)
        iou_thresh (0.5), min_iou (0.1), missing_threshold (0.45),
        spurious_threshold (0.75), swap_threshold (0.6),
        localization_threshold (0.35), no_annotations_threshold (0.5),
        size_prior (True): see
            :func:`label_audit.detection.issues.score_detection_issues`;
            the default thresholds maximise the flags' F1 on the benchmark's
            simulated detector (``label-audit bench detection``, seeds 0
            and 4): calibrate them for your detector by looking at the
            top of each ranking
        default_confidence (None): the confidence of predictions that have
            none; None raises an error naming them
        on_invalid ("raise"): boxes that are missing, not 4 finite numbers or
            of negative size: ``"raise"`` an error naming them, or ``"skip"``
            them (left unscored, listed in ``results.skipped``)
        progress (None): show a progress bar (tqdm) with the current stage; None
            uses ``fiftyone.config.show_progress_bars``
        progress_callback (None): called with ``(fraction, label)``

    Samples whose ``label_field`` is None count as images without ground
    truth (the ``no_annotations`` case). Samples whose ``pred_field`` is None
    were not run through the detector: they are not scored (their fields are
    set to None, listed in ``results.skipped``); an empty Detections is a
    prediction of "nothing here" and is scored.

    Everything is computed before anything is written; the three writes
    (ground-truth labels, predictions, samples) are one all-or-nothing
    operation: if one fails, the values before the call are restored.

    Returns:
        a :class:`DetectionIssuesResults`
    """
    from ..progress import ProgressReporter
    from ..runs import check_run_key, refuse_generated_view, save_run

    report = ProgressReporter(progress, progress_callback, desc="Detection issues")
    try:
        if on_invalid not in ("raise", "skip"):
            raise ValueError("on_invalid must be 'raise' or 'skip'; got %r" % (on_invalid,))
        refuse_generated_view(samples, "compute_detection_issues")
        if len(samples) == 0:
            raise ValueError("The view is empty: there is nothing to score")
        if samples.media_type != "image":
            raise ValueError("compute_detection_issues needs an image collection; this one has "
                             "media type %r" % samples.media_type)
        _check_fields(samples, label_field, pred_field)
        check_run_key(samples, audit_key, RUN_METHOD)
        if audit_key in samples._root_dataset.list_runs():  # a run of this method: same fields only
            prev = samples._root_dataset.get_run_info(audit_key).config.serialize()
            if (prev.get("label_field"), prev.get("pred_field")) != (label_field, pred_field):
                raise ValueError(
                    "Audit key %r holds the detection run of %r / %r; scoring %r / %r under it would "
                    "leave that run's fields stale. Choose another audit_key, or "
                    "dataset.delete_run(%r) first. Nothing was written"
                    % (audit_key, prev.get("label_field"), prev.get("pred_field"), label_field,
                       pred_field, audit_key))

        report(0.0, "Reading boxes")
        gp, pp = label_field + ".detections.", pred_field + ".detections."
        (sids, g_ids, g_boxes, g_labels, p_ids, p_boxes, p_labels, p_conf) = samples.values(
            ["id", gp + "id", gp + "bounding_box", gp + "label", pp + "id", pp + "bounding_box",
             pp + "label", pp + "confidence"])

        skipped = {}
        invalid = []
        no_conf = []
        bad_conf = []
        rows = []  # (sid, gt ids, gt boxes, gt labels, pred ids, pred boxes, pred labels, conf)
        all_gt_ids, all_gt_sids, all_pred_ids, all_pred_sids = [], [], [], []
        for k, sid in enumerate(sids):
            gi, gb, gl = g_ids[k] or [], g_boxes[k] or [], g_labels[k] or []
            pi, pb, pl, pc = p_ids[k], p_boxes[k] or [], p_labels[k] or [], p_conf[k] or []
            all_gt_ids.extend(gi)
            all_gt_sids.extend([sid] * len(gi))
            all_pred_ids.extend(pi or [])
            all_pred_sids.extend([sid] * len(pi or []))
            if pi is None:
                skipped[sid] = "no %r (sample not run through the detector)" % pred_field
                continue
            keep_g = []
            for j, lid in enumerate(gi):
                if _box_ok(gb[j]):
                    keep_g.append(j)
                else:
                    invalid.append((sid, label_field, lid, gb[j]))
            keep_p = []
            for j, lid in enumerate(pi):
                if not _box_ok(pb[j]):
                    invalid.append((sid, pred_field, lid, pb[j]))
                    continue
                c = pc[j] if j < len(pc) else None
                c = None if c is None else float(c)
                if c is None:
                    if default_confidence is None:
                        no_conf.append((sid, lid))
                        continue
                elif not (np.isfinite(c) and 0 <= c <= 1):
                    bad_conf.append((sid, lid, c))
                    continue
                keep_p.append(j)
            conf = [float(pc[j]) if j < len(pc) and pc[j] is not None else
                    float(default_confidence) for j in keep_p]
            rows.append((sid, [gi[j] for j in keep_g], [gb[j] for j in keep_g],
                         [gl[j] for j in keep_g], [pi[j] for j in keep_p],
                         [pb[j] for j in keep_p], [pl[j] for j in keep_p], conf))

        if no_conf:
            raise ValueError(
                "%d predictions in %r have no confidence (e.g. sample %s, label %s): store the "
                "detector's scores in `confidence`, or pass default_confidence=1.0 to treat "
                "them all as confident" % (len(no_conf), pred_field, no_conf[0][0], no_conf[0][1]))
        if bad_conf:
            raise ValueError(
                "%d predictions in %r have a confidence outside [0, 1] (e.g. sample %s, label "
                "%s: %r): rescale the detector's scores to probabilities"
                % (len(bad_conf), pred_field, bad_conf[0][0], bad_conf[0][1], bad_conf[0][2]))
        if invalid:
            if on_invalid == "raise":
                examples = "; ".join("sample %s, %r label %s: %r" % e for e in invalid[:5])
                raise ValueError(
                    "%d boxes are missing or not 4 finite numbers [x, y, w, h] with w, h >= 0 "
                    "(%s): fix or delete them, or pass on_invalid='skip' to leave them unscored"
                    % (len(invalid), examples))
            for sid, fld, lid, _ in invalid:
                skipped[lid] = "invalid bounding box in %r" % fld
        if not rows:
            raise ValueError(
                "No sample in this view has predictions in %r: run your detector and store its "
                "Detections in that field first" % pred_field)

        report(0.2, "Scoring %d images" % len(rows))
        result = score_detection_issues(
            [np.asarray(r[2], dtype=np.float64).reshape(-1, 4) for r in rows],
            [np.asarray(r[3], dtype=object) for r in rows],
            [np.asarray(r[5], dtype=np.float64).reshape(-1, 4) for r in rows],
            [np.asarray(r[6], dtype=object) for r in rows],
            [np.asarray(r[7], dtype=np.float64) for r in rows],
            iou_thresh=iou_thresh, min_iou=min_iou, missing_threshold=missing_threshold,
            spurious_threshold=spurious_threshold, swap_threshold=swap_threshold,
            localization_threshold=localization_threshold,
            no_annotations_threshold=no_annotations_threshold, size_prior=size_prior)

        report(0.6, "Writing scores")
        names = field_names(audit_key)
        scored_sids = [r[0] for r in rows]
        gt_ids = [lid for r in rows for lid in r[1]]
        pred_ids = [lid for r in rows for lid in r[4]]
        r = result

        def fval(x):
            x = float(x)
            return x if np.isfinite(x) else None

        gt_values = {
            "issue_score": [fval(v) for v in r.issue_score],
            "spurious": [fval(v) for v in r.spurious],
            "swapped": [fval(v) for v in r.swapped],
            "suggested_label": [None if v is None else str(v) for v in r.suggested_label],
            "localization": [fval(v) for v in r.localization],
            "iou": [fval(v) for v in r.iou],
            "match_id": [pred_ids[m] if m >= 0 else None for m in r.match],
            "is_spurious": [bool(v) for v in r.is_spurious],
            "is_swapped": [bool(v) for v in r.is_swapped],
            "is_mislocated": [bool(v) for v in r.is_mislocated],
            "issue": list(r.issue),
        }
        pred_values = {
            "missing": [fval(v) for v in r.missing],
            "is_missing": [bool(v) for v in r.is_missing],
            "match_id": [gt_ids[m] if m >= 0 else None for m in r.pred_match],
        }
        sample_values = {
            "num_missing": r.num_missing, "num_spurious": r.num_spurious,
            "num_swapped": r.num_swapped, "num_mislocated": r.num_mislocated,
            "num_issues": r.num_issues, "no_annotations": r.no_annotations,
            "no_annotations_score": r.no_annotations_score, "issue_score": r.image_issue_score,
        }

        def columns(specs, values, index, all_ids, part):
            cols = {}
            for name, kind in specs:
                col = [None] * len(all_ids)
                for src_row, v in enumerate(values[name]):
                    v = v.item() if isinstance(v, np.generic) else v
                    col[index[src_row]] = v
                cols[names[part][name]] = (kind, col)
            return cols

        gt_pos = {lid: i for i, lid in enumerate(all_gt_ids)}
        pred_pos = {lid: i for i, lid in enumerate(all_pred_ids)}
        sample_pos = {sid: i for i, sid in enumerate(sids)}
        parts = []
        if all_gt_ids:
            parts.append((columns(GT_FIELDS, gt_values, [gt_pos[x] for x in gt_ids], all_gt_ids,
                                  "gt"), all_gt_ids, all_gt_sids, label_field + ".detections"))
        if all_pred_ids:
            parts.append((columns(PRED_FIELDS, pred_values, [pred_pos[x] for x in pred_ids],
                                  all_pred_ids, "pred"), all_pred_ids, all_pred_sids,
                          pred_field + ".detections"))
        parts.append((columns(SAMPLE_FIELDS, sample_values, [sample_pos[x] for x in scored_sids],
                              list(sids), "sample"), list(sids), list(sids), None))
        from ..writes import write_all_or_nothing

        counts = result.counts()
        config = dict(label_field=label_field, pred_field=pred_field, fields=names,
                      default_confidence=default_confidence, on_invalid=on_invalid,
                      **result.params)
        # the run record is part of the write: if saving it fails, the fields are restored too
        write_all_or_nothing(samples, parts, then=lambda: save_run(
            samples, audit_key, RUN_METHOD, config, dict(
                num_images=len(rows), num_gt=len(gt_ids), num_predictions=len(pred_ids),
                num_skipped=len(skipped), counts=counts,
                skipped=dict(list(skipped.items())[:1000]))))
        report(0.9, "Recorded the run")
        report(1.0, "Done")
        return DetectionIssuesResults(audit_key, label_field, pred_field, result, scored_sids,
                                      gt_ids, pred_ids, skipped, names)
    finally:
        report.close()
