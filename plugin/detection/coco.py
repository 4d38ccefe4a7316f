"""COCO-format annotations and COCO mAP from per-image arrays (pycocotools).

* :func:`coco_dataset`: a COCO detection dict (``images``, ``annotations``,
  ``categories``) from pixel ``[x, y, w, h]`` boxes, for a json file that
  FiftyOne's ``COCODetectionDataset`` importer and pycocotools read;
* :func:`load_coco`: a ``pycocotools.coco.COCO`` from such a dict or file;
* :func:`coco_map`: COCO mAP@[.5:.95] and AP50 of predictions against
  ground truth with ``pycocotools.cocoeval.COCOeval``.
"""

import contextlib
import io
import json

import numpy as np


def coco_dataset(file_names, sizes, boxes, labels, classes, extra=None):
    """A COCO detection dataset as a dict.

    Args:
        file_names: image file names (relative to the images folder)
        sizes: ``(width, height)`` of each image in pixels
        boxes: per image, ``(k, 4)`` pixel ``[x, y, w, h]`` boxes
        labels: per image, ``(k,)`` int class indices into ``classes``
        classes: class names; category ids are ``1 + index``
        extra (None): per image, a list of ``k`` dicts of additional
            annotation attributes (FiftyOne loads them onto the Detections)

    Returns:
        ``{"images": [...], "annotations": [...], "categories": [...]}``
    """
    images, anns = [], []
    ann_id = 1
    for i, (name, (w, h)) in enumerate(zip(file_names, sizes)):
        images.append(dict(id=i + 1, file_name=str(name), width=int(w), height=int(h)))
        for k, (box, lab) in enumerate(zip(np.asarray(boxes[i], dtype=np.float64).reshape(-1, 4),
                                           labels[i])):
            ann = dict(id=ann_id, image_id=i + 1, category_id=int(lab) + 1,
                       bbox=[round(float(v), 3) for v in box],
                       area=round(float(box[2] * box[3]), 3), iscrowd=0)
            if extra is not None:
                ann.update(extra[i][k])
            anns.append(ann)
            ann_id += 1
    cats = [dict(id=c + 1, name=str(name), supercategory="object")
            for c, name in enumerate(classes)]
    return dict(images=images, annotations=anns, categories=cats)


def load_coco(source):
    """A ``pycocotools.coco.COCO`` index of a dict or a json path (quietly)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(source, dict):
            coco = COCO()
            coco.dataset = json.loads(json.dumps(source))
            coco.createIndex()
        else:
            coco = COCO(str(source))
    return coco


def coco_map(gt, boxes, labels, scores):
    """COCO box mAP of predictions against ground truth.

    Args:
        gt: a COCO dict from :func:`coco_dataset` (its image order defines
            the images of the prediction lists)
        boxes, labels, scores: per image, ``(m, 4)`` pixel boxes, ``(m,)`` int
            class indices and ``(m,)`` confidences

    Returns:
        ``{"map": mAP@[.5:.95], "ap50": AP@.5}`` (pycocotools' ``stats[0]``
        and ``stats[1]``; -1 where undefined)
    """
    from pycocotools.cocoeval import COCOeval

    coco_gt = load_coco(gt)
    dets = []
    for img, b, l_, s in zip(gt["images"], boxes, labels, scores):
        for box, lab, sc in zip(np.asarray(b, dtype=np.float64).reshape(-1, 4), l_, s):
            dets.append(dict(image_id=img["id"], category_id=int(lab) + 1,
                             bbox=[float(v) for v in box], score=float(sc)))
    if not dets:
        return dict(map=0.0, ap50=0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(map=float(ev.stats[0]), ap50=float(ev.stats[1]))
