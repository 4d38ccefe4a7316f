"""Per-box and per-image detection label issues, on plain numpy arrays.

Given the ground-truth boxes of each image and the boxes a detector predicted
on it (any detector: only boxes, classes and confidences are used), scores
five kinds of annotation error:

* **missing**: an object the labellers did not box: a confident prediction
  with no ground truth that it matches (scored on predictions);
* **spurious**: a ground-truth box no prediction supports (a box on the
  background, a duplicate box);
* **swapped**: a ground-truth box whose class is probably wrong: a
  prediction of another class at high IoU outweighs those of its own class
  (with the suggested class);
* **mislocated**: a ground-truth box drawn in the wrong place or size: low
  IoU with the prediction it matches;
* **no annotations**: an image without any ground truth on which the
  detector is confident.

Definitions, per image, with ground-truth boxes ``b_i`` (labels ``y_i``) and
predictions ``d_j`` (labels ``z_j``, confidences ``c_j`` in [0, 1]):

* ``M[i, j] = IoU(b_i, d_j)``;
* gate ``g(u) = 0`` if ``u < min_iou`` else ``min(1, u / iou_thresh)``: how
  far an overlap counts as "the same object" (fully from ``iou_thresh``);
* support ``S[i, j] = c_j * g(M[i, j])``: how strongly prediction ``j``
  vouches for box ``i``;
* matching: one-to-one, greedy in decreasing ``S`` (then IoU) over pairs
  with ``M >= min_iou``, classes ignored (a swapped class must still match);
  ``m(i)`` is the prediction matched to box ``i``, ``J_i`` the predictions
  that are unmatched or matched to ``i`` (predictions claimed by a
  neighbouring box do not count for box ``i``).

Scores, all in [0, 1], higher = more likely an error:

=====================  ==================================================
``spurious[i]``        ``(1 - max_{j in J_i} S[i, j]) * r(area_i)`` (the
                       first factor is 1 if no prediction is left)
``swapped[i]``         ``max(0, max_{j in J_i, z_j != y_i} S[i, j] -
                       max_{j in J_i, z_j == y_i} S[i, j])``; the
                       suggested label is ``z`` of the first maximum
``localization[i]``    ``c_m(i) * (1 - M[i, m(i)])``; 0 if unmatched
``missing[j]``         ``c_j * (1 - max_{i in I_j} g(M[i, j]))`` where
                       ``I_j`` = the box matched to ``j`` plus every box
                       of class ``z_j`` (an unmatched prediction on a box
                       of its own class is a duplicate, not a missed
                       object); ``c_j`` if ``I_j`` is empty
``no_annotations``     ``max_j c_j`` on an image with no ground truth
                       (and at least one prediction), else 0
=====================  ==================================================

``r(area)`` is how well the detector supports boxes of that size in this
data set: the mean of ``max_{j in J} S`` over the ground-truth boxes in the
same quantile bin of ``log(w h)`` (``size_bins`` bins, at least 50 boxes
each), divided by the largest such mean (``size_prior=False`` sets
``r = 1``). Detectors miss small objects, so
an unsupported small box is less suspicious than an unsupported large one.

A box's ``issue_score`` is the maximum of its three scores; an image's is
the maximum over its boxes' issue scores, its predictions' ``missing`` and
its ``no_annotations``. Flags compare each score with its threshold
(``>=``); the thresholds are parameters, not constants.
"""

import numpy as np

from .matching import as_boxes, box_iou, greedy_match

GT_ISSUES = ("spurious", "swapped", "mislocated")

#: default thresholds (see :func:`score_detection_issues`)
DEFAULTS = dict(
    iou_thresh=0.5,
    min_iou=0.1,
    missing_threshold=0.45,
    spurious_threshold=0.75,
    swap_threshold=0.6,
    localization_threshold=0.35,
    no_annotations_threshold=0.5,
)


def iou_gate(iou, iou_thresh=0.5, min_iou=0.1):
    """``g(u)``: 0 below ``min_iou``, ``u / iou_thresh`` up to 1 above it.

    Args:
        iou: array of IoUs in [0, 1]
        iou_thresh (0.5): IoU from which an overlap fully counts
        min_iou (0.1): IoU below which boxes do not overlap at all

    Returns:
        float64 array of the same shape, in [0, 1]
    """
    iou = np.asarray(iou, dtype=np.float64)
    return np.where(iou < min_iou, 0.0, np.minimum(1.0, iou / iou_thresh))


def size_support(area, support, size_bins=10, min_per_bin=50):
    """``r(area)``: the mean support of boxes in the same quantile bin of log
    area, divided by the largest bin mean.

    Args:
        area: ``(n,)`` box areas ``w * h`` (any unit, > 0)
        support: ``(n,)`` best support ``max_j S[i, j]`` of each box, in [0, 1]
        size_bins (10): at most this many equal-count bins of ``log(area)``
        min_per_bin (50): fewer bins when needed so that each has at least
            this many boxes (one bin: the overall mean)

    Returns:
        ``(n,)`` float64 in [0, 1]; 1 for the sizes the detector supports
        best in this data set, lower for sizes it often misses (all ones if
        no box is supported)
    """
    area = np.asarray(area, dtype=np.float64).reshape(-1)
    support = np.asarray(support, dtype=np.float64).reshape(-1)
    n = len(area)
    if n == 0:
        return np.zeros(0)
    n_bins = int(max(1, min(size_bins, n // max(1, min_per_bin))))
    logs = np.log(np.maximum(area, 1e-12))
    edges = np.quantile(logs, np.linspace(0, 1, n_bins + 1)[1:-1]) if n_bins > 1 else []
    bins = np.searchsorted(edges, logs, side="right")
    total = np.bincount(bins, weights=support, minlength=n_bins)
    count = np.bincount(bins, minlength=n_bins)
    means = np.where(count > 0, total / np.maximum(count, 1), support.mean())
    top = means.max()
    return means[bins] / top if top > 0 else np.ones(n)


def score_image(gt_boxes, gt_labels, pred_boxes, pred_labels, pred_confidence,
                iou_thresh=0.5, min_iou=0.1):
    """Issue scores of one image (see the module docstring for the formulas).

    Args:
        gt_boxes: ``(n, 4)`` ground-truth ``[x, y, w, h]`` (relative or pixels,
            the same unit as ``pred_boxes``)
        gt_labels: ``(n,)`` class labels (ints or strings)
        pred_boxes: ``(m, 4)`` predicted boxes
        pred_labels: ``(m,)`` predicted labels, comparable with ``gt_labels``
        pred_confidence: ``(m,)`` floats in [0, 1]
        iou_thresh (0.5), min_iou (0.1): the IoU gate

    Returns:
        a dict of arrays: ``support`` (``max_{j in J_i} S[i, j]``),
        ``spurious`` (``1 - support``, before the size prior), ``swapped``, ``localization``, ``iou``
        (IoU with the matched prediction, NaN if unmatched), ``match``
        (matched prediction index or -1), ``suggested`` (index of the
        prediction whose class is suggested, or -1), all of shape ``(n,)``;
        ``missing`` and ``pred_match`` (matched box index or -1) of shape
        ``(m,)``; ``no_annotations`` (float)
    """
    gb = as_boxes(gt_boxes)
    pb = as_boxes(pred_boxes)
    n, m = len(gb), len(pb)
    gl = np.asarray(gt_labels).reshape(-1)
    pl = np.asarray(pred_labels).reshape(-1)
    conf = np.asarray(pred_confidence, dtype=np.float64).reshape(-1)
    if len(gl) != n or len(pl) != m or len(conf) != m:
        raise ValueError("Got %d boxes with %d labels and %d predictions with %d labels and "
                         "%d confidences" % (n, len(gl), m, len(pl), len(conf)))
    ious = box_iou(gb, pb)
    support = conf[None, :] * iou_gate(ious, iou_thresh, min_iou)
    # greedy one-to-one: strongest support first, then IoU (support is 0 for
    # zero-confidence predictions, which may still match by IoU)
    # boxes that do not overlap at all never match, even with min_iou=0
    match, pred_match = greedy_match(support + 1e-6 * ious, (ious >= min_iou) & (ious > 0))

    # J_i: predictions unmatched or matched to i
    owner = pred_match[None, :]
    allowed = (owner < 0) | (owner == np.arange(n)[:, None])
    s = np.where(allowed, support, 0.0)
    same = gl[:, None] == pl[None, :] if n and m else np.zeros((n, m), dtype=bool)

    support_best = s.max(axis=1) if m else np.zeros(n)
    spurious = 1.0 - support_best
    s_same = np.where(same, s, 0.0).max(axis=1) if m else np.zeros(n)
    s_other_all = np.where(same, 0.0, s)
    s_other = s_other_all.max(axis=1) if m else np.zeros(n)
    suggested = np.where(s_other > 0, s_other_all.argmax(axis=1) if m else -1, -1)
    swapped = np.maximum(0.0, s_other - s_same)

    matched = match >= 0
    iou = np.full(n, np.nan)
    localization = np.zeros(n)
    if matched.any():
        rows = np.nonzero(matched)[0]
        iou[rows] = ious[rows, match[rows]]
        localization[rows] = conf[match[rows]] * (1.0 - iou[rows])

    # I_j: the matched box plus every box of the prediction's class
    gate = iou_gate(ious, iou_thresh, min_iou)
    mine = same.copy()
    pm = np.nonzero(pred_match >= 0)[0]
    mine[pred_match[pm], pm] = True
    cover = np.where(mine, gate, 0.0).max(axis=0) if n else np.zeros(m)
    missing = conf * (1.0 - cover)

    no_annotations = float(conf.max()) if n == 0 and m > 0 else 0.0
    return dict(support=support_best, spurious=spurious, swapped=swapped, localization=localization, iou=iou,
                match=match, suggested=suggested, missing=missing, pred_match=pred_match,
                no_annotations=no_annotations)


class DetectionIssueResult:
    """Per-box, per-prediction and per-image detection issues of a set of images.

    Ground-truth rows (``n_gt`` boxes of all images, image by image):

    * ``gt_image``: ``(n_gt,)`` int, the image of each box;
    * ``spurious``, ``swapped``, ``localization``, ``issue_score``:
      ``(n_gt,)`` float32 in [0, 1], higher = more likely wrong;
      ``issue_score`` = max of the three;
    * ``support``: ``(n_gt,)`` float32, the strongest support of the box by
      a prediction; ``size_prior``: ``r(area)`` of the box;
    * ``iou``: ``(n_gt,)`` float32, IoU with the matched prediction (NaN if
      none matched);
    * ``match``: ``(n_gt,)`` int, the matched prediction (row in the
      prediction arrays) or -1;
    * ``suggested_label``: ``(n_gt,)`` object, the class of the strongest
      prediction of another class overlapping the box (None if none);
    * ``is_spurious``, ``is_swapped``, ``is_mislocated``: ``(n_gt,)`` bool
      flags (score >= threshold);
    * ``issue``: ``(n_gt,)`` object, the flagged issue with the highest
      score (``"spurious"``, ``"swapped"``, ``"mislocated"``) or None.

    Prediction rows (``n_pred``): ``pred_image``, ``missing`` (float32),
    ``is_missing`` (bool), ``pred_match`` (matched ground-truth row or -1).

    Image rows (``n_images``): ``num_gt``, ``num_pred``, ``num_missing``,
    ``num_spurious``, ``num_swapped``, ``num_mislocated``, ``num_issues``
    (int), ``no_annotations_score`` and ``image_issue_score`` (float32),
    ``no_annotations`` (bool).

    ``params``: the thresholds used.
    """

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    @property
    def n_images(self):
        return len(self.num_gt)

    def counts(self):
        """Flag counts: ``{"missing": int, "spurious": ..., "swapped": ...,
        "mislocated": ..., "no_annotations": ...}``."""
        return dict(missing=int(self.is_missing.sum()), spurious=int(self.is_spurious.sum()),
                    swapped=int(self.is_swapped.sum()),
                    mislocated=int(self.is_mislocated.sum()),
                    no_annotations=int(self.no_annotations.sum()))

    def summary(self):
        c = self.counts()
        return ("%d images, %d ground-truth boxes, %d predictions: %d possibly missing "
                "objects, %d spurious boxes, %d swapped classes, %d mislocated boxes, "
                "%d images without annotations"
                % (self.n_images, len(self.gt_image), len(self.pred_image), c["missing"],
                   c["spurious"], c["swapped"], c["mislocated"], c["no_annotations"]))

    def __repr__(self):
        return "DetectionIssueResult(%s)" % self.summary()


def _py(value):
    return value.item() if isinstance(value, np.generic) else value


def _check_confidence(conf, image):
    if conf.size and (not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1):
        bad = conf[~(np.isfinite(conf) & (conf >= 0) & (conf <= 1))][:3]
        raise ValueError("Prediction confidences must be finite and in [0, 1]; image %d has %s"
                         % (image, bad.tolist()))


def score_detection_issues(gt_boxes, gt_labels, pred_boxes, pred_labels, pred_confidence,
                           iou_thresh=0.5, min_iou=0.1, missing_threshold=0.45,
                           spurious_threshold=0.75, swap_threshold=0.6,
                           localization_threshold=0.35, no_annotations_threshold=0.5,
                           size_prior=True, size_bins=10):
    """Scores missing, spurious, swapped and mislocated boxes of many images.

    Each argument is a list with one entry per image (the same length):

    Args:
        gt_boxes: ``(n_k, 4)`` ``[x, y, w, h]`` ground-truth boxes of image k
            (relative coordinates, or pixels if the predictions use pixels)
        gt_labels: ``(n_k,)`` their classes (ints or strings)
        pred_boxes: ``(m_k, 4)`` predicted boxes of image k
        pred_labels: ``(m_k,)`` predicted classes
        pred_confidence: ``(m_k,)`` confidences in [0, 1]
        iou_thresh (0.5): IoU from which a prediction fully supports a box
            (the gate ``g``; see the module docstring)
        min_iou (0.1): IoU below which a prediction and a box are unrelated
        missing_threshold (0.45): flag a prediction as a missing object when
            ``missing >= missing_threshold``
        spurious_threshold (0.75): flag a box as spurious when
            ``spurious >= spurious_threshold`` (e.g. no prediction supports
            it with more than 0.25, at a size the detector finds best)
        swap_threshold (0.6): flag a box as swapped when
            ``swapped >= swap_threshold``
        localization_threshold (0.35): flag a box as mislocated when
            ``localization >= localization_threshold`` (e.g. IoU <= 0.5 with
            a prediction of confidence 0.7, IoU <= 0.65 at confidence 1)
        no_annotations_threshold (0.5): flag an image without ground truth
            when a prediction on it has at least this confidence
        size_prior (True): scale ``spurious`` by ``r(area)``, how well the
            detector supports boxes of that size across these images (see
            :func:`size_support`); False: ``r = 1``
        size_bins (10): bins of :func:`size_support`

    Returns:
        a :class:`DetectionIssueResult`

    Raises:
        ValueError: if the lists differ in length, a box is not finite, or a
            confidence is outside [0, 1]
    """
    params = dict(iou_thresh=float(iou_thresh), min_iou=float(min_iou),
                  missing_threshold=float(missing_threshold),
                  spurious_threshold=float(spurious_threshold),
                  swap_threshold=float(swap_threshold),
                  localization_threshold=float(localization_threshold),
                  no_annotations_threshold=float(no_annotations_threshold),
                  size_prior=bool(size_prior), size_bins=int(size_bins))
    if not 0 <= min_iou <= iou_thresh <= 1 or iou_thresh <= 0:
        raise ValueError("Need 0 <= min_iou <= iou_thresh <= 1 and iou_thresh > 0; got "
                         "min_iou=%r, iou_thresh=%r" % (min_iou, iou_thresh))
    n_images = len(gt_boxes)
    lengths = {len(gt_labels), len(pred_boxes), len(pred_labels), len(pred_confidence)}
    if lengths != {n_images}:
        raise ValueError("gt_boxes, gt_labels, pred_boxes, pred_labels and pred_confidence "
                         "must be lists with one entry per image; got lengths %s"
                         % ([n_images, len(gt_labels), len(pred_boxes), len(pred_labels),
                             len(pred_confidence)],))
    gt_cols = {k: [] for k in ("support", "swapped", "localization", "iou", "match", "area")}
    gt_image, pred_image, missing, pred_match, sugg = [], [], [], [], []
    no_ann = np.zeros(n_images, dtype=np.float32)
    num_gt = np.zeros(n_images, dtype=np.int64)
    num_pred = np.zeros(n_images, dtype=np.int64)
    gt_offset = pred_offset = 0
    for k in range(n_images):
        gb, pb = as_boxes(gt_boxes[k]), as_boxes(pred_boxes[k])
        for name, boxes in (("ground-truth", gb), ("predicted", pb)):
            if not np.all(np.isfinite(boxes)):
                raise ValueError("Image %d has %s boxes with non-finite coordinates"
                                 % (k, name))
        conf = np.asarray(pred_confidence[k], dtype=np.float64).reshape(-1)
        _check_confidence(conf, k)
        r = score_image(gb, gt_labels[k], pb, pred_labels[k], conf,
                        iou_thresh=iou_thresh, min_iou=min_iou)
        n, m = len(gb), len(pb)
        num_gt[k], num_pred[k] = n, m
        for name in ("support", "swapped", "localization", "iou"):
            gt_cols[name].append(r[name])
        gt_cols["area"].append(gb[:, 2] * gb[:, 3])
        gt_cols["match"].append(np.where(r["match"] >= 0, r["match"] + pred_offset, -1))
        pl = np.asarray(pred_labels[k]).reshape(-1)
        sugg.extend(_py(pl[s]) if s >= 0 else None for s in r["suggested"])
        pred_match.append(np.where(r["pred_match"] >= 0, r["pred_match"] + gt_offset, -1))
        missing.append(r["missing"])
        gt_image.append(np.full(n, k, dtype=np.int64))
        pred_image.append(np.full(m, k, dtype=np.int64))
        no_ann[k] = r["no_annotations"]
        gt_offset += n
        pred_offset += m

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    support = cat(gt_cols["support"], np.float64)
    area = cat(gt_cols["area"], np.float64)
    prior = size_support(area, support, size_bins) if size_prior else np.ones(len(support))
    spurious = ((1.0 - support) * prior).astype(np.float32)
    swapped = cat(gt_cols["swapped"], np.float32)
    localization = cat(gt_cols["localization"], np.float32)
    iou = cat(gt_cols["iou"], np.float32)
    match = cat(gt_cols["match"], np.int64)
    missing = cat(missing, np.float32)
    pred_match = cat(pred_match, np.int64)
    gt_image = cat(gt_image, np.int64)
    pred_image = cat(pred_image, np.int64)
    suggested_label = np.empty(len(sugg), dtype=object)
    suggested_label[:] = sugg

    stacked = np.stack([spurious, swapped, localization], axis=1) if len(spurious) else \
        np.zeros((0, 3), dtype=np.float32)
    issue_score = stacked.max(axis=1) if len(stacked) else np.zeros(0, dtype=np.float32)
    is_spurious = (spurious >= spurious_threshold) & (spurious > 0)  # a threshold of 0 flags no clean box
    is_swapped = (swapped >= swap_threshold) & (swapped > 0)
    is_mislocated = (localization >= localization_threshold) & (localization > 0)
    flags = np.stack([is_spurious, is_swapped, is_mislocated], axis=1) if len(spurious) else \
        np.zeros((0, 3), dtype=bool)
    flagged_scores = np.where(flags, stacked, -1.0)
    issue = np.empty(len(spurious), dtype=object)
    top = flagged_scores.argmax(axis=1) if len(spurious) else np.zeros(0, dtype=np.int64)
    for r_, t in enumerate(top):
        issue[r_] = GT_ISSUES[t] if flags[r_, t] else None
    is_missing = (missing >= missing_threshold) & (missing > 0)
    no_annotations = (num_gt == 0) & (no_ann >= no_annotations_threshold) & (no_ann > 0)

    def per_image(mask, image):
        return np.bincount(image[mask], minlength=n_images).astype(np.int64)

    image_score = no_ann.astype(np.float32).copy()
    if len(issue_score):
        np.maximum.at(image_score, gt_image, issue_score)
    if len(missing):
        np.maximum.at(image_score, pred_image, missing)
    num_missing = per_image(is_missing, pred_image)
    num_spurious = per_image(is_spurious, gt_image)
    num_swapped = per_image(is_swapped, gt_image)
    num_mislocated = per_image(is_mislocated, gt_image)
    num_issues = per_image(flags.any(axis=1), gt_image) + num_missing + \
        no_annotations.astype(np.int64)
    return DetectionIssueResult(
        params=params, gt_image=gt_image, spurious=spurious,
        support=support.astype(np.float32), size_prior=prior.astype(np.float32), swapped=swapped,
        localization=localization, iou=iou, match=match, suggested_label=suggested_label,
        issue_score=issue_score.astype(np.float32), is_spurious=is_spurious,
        is_swapped=is_swapped, is_mislocated=is_mislocated, issue=issue,
        pred_image=pred_image, missing=missing, is_missing=is_missing, pred_match=pred_match,
        num_gt=num_gt, num_pred=num_pred, num_missing=num_missing, num_spurious=num_spurious,
        num_swapped=num_swapped, num_mislocated=num_mislocated, num_issues=num_issues,
        no_annotations_score=no_ann, no_annotations=no_annotations,
        image_issue_score=image_score)
