"""Box geometry and one-to-one matching on plain numpy arrays.

Boxes are FiftyOne's ``[x, y, w, h]``: top-left corner, width and height,
relative to the image size (floats in [0, 1]). IoU does not change when the
x and y axes are scaled by different factors, so IoUs of relative boxes equal
the IoUs of the same boxes in pixels. The results agree with
:func:`fiftyone.utils.iou.compute_ious` on ``Detection`` objects (which it
returns transposed, predictions first); this module needs no database and is
vectorised over all pairs of one image.
"""

import numpy as np


def as_boxes(boxes):
    """``boxes`` as a float64 ``(n, 4)`` array (an empty list gives ``(0, 4)``)."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError("Boxes must have shape (n, 4) as [x, y, w, h]; got shape %s"
                         % (arr.shape,))
    return arr


def valid_boxes(boxes):
    """Boolean ``(n,)`` mask: all four numbers finite, ``w >= 0`` and ``h >= 0``.

    Args:
        boxes: ``(n, 4)`` array-like of ``[x, y, w, h]`` (NaN allowed)
    """
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.isfinite(arr).all(axis=1) & (arr[:, 2] >= 0) & (arr[:, 3] >= 0)


def box_iou(boxes_a, boxes_b):
    """Pairwise intersection over union of two sets of ``[x, y, w, h]`` boxes.

    Args:
        boxes_a: ``(n, 4)`` array-like
        boxes_b: ``(m, 4)`` array-like

    Returns:
        ``(n, m)`` float64 array in [0, 1]; 0 where the boxes do not overlap
        or where the union is empty (two zero-area boxes)
    """
    a = as_boxes(boxes_a)
    b = as_boxes(boxes_b)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    ax1, ay1 = a[:, 0:1], a[:, 1:2]
    ax2, ay2 = ax1 + a[:, 2:3], ay1 + a[:, 3:4]
    bx1, by1 = b[:, 0], b[:, 1]
    bx2, by2 = bx1 + b[:, 2], by1 + b[:, 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0.0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0.0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.clip(iou, 0.0, 1.0)


def greedy_match(priority, eligible):
    """One-to-one matching of rows to columns, best pairs first.

    Pairs are taken in decreasing ``priority`` (ties: lower row, then lower
    column index first); a pair is taken if it is ``eligible`` and neither its
    row nor its column is matched yet. This is the greedy matching of COCO
    evaluation with a free choice of what "best" means.

    Args:
        priority: ``(n, m)`` float array; higher pairs are matched first
        eligible: ``(n, m)`` boolean array; only these pairs may match

    Returns:
        ``(row_match, col_match)``: int arrays of shape ``(n,)`` and ``(m,)``
        holding the matched column (row) index, or -1 where unmatched
    """
    priority = np.asarray(priority, dtype=np.float64)
    eligible = np.asarray(eligible, dtype=bool)
    n, m = priority.shape
    row_match = np.full(n, -1, dtype=np.int64)
    col_match = np.full(m, -1, dtype=np.int64)
    rows, cols = np.nonzero(eligible)
    if len(rows) == 0:
        return row_match, col_match
    order = np.lexsort((cols, rows, -priority[rows, cols]))
    for k in order:
        r, c = rows[k], cols[k]
        if row_match[r] < 0 and col_match[c] < 0:
            row_match[r] = c
            col_match[c] = r
    return row_match, col_match
