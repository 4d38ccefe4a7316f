"""A detection set built offline from real images, with known boxes, injected
annotation errors and a simulated detector (for the benchmark, the demo and
the tests).

* :func:`load_items`: real item images (Fashion-MNIST from Debian's
  ``dataset-fashion-mnist``, or scikit-learn's digits) with their classes;
* :func:`compose_canvases`: items resized and pasted onto grey canvases;
  each box is the tight box of the pasted item's pixels;
* :func:`inject_box_errors`: the labeller's mistakes on those true boxes
  (missed objects, images left unannotated, background and duplicate boxes,
  swapped classes, badly drawn boxes), with the truth of every box kept;
* :func:`simulate_detector`: a detector that finds objects with a
  size-dependent recall, jitters its boxes, takes its classes and class
  confidences from a real classifier (multinomial logistic regression
  trained on held-out items) applied to the pixels inside its box, keeps a
  second-class box where that classifier hesitates, emits low-confidence
  boxes on some missed objects and on the background, and drops boxes
  below a score threshold, like a torchvision detector's
  ``box_score_thresh``.

Everything is numpy + PIL + scikit-learn and seeded; nothing here imports
fiftyone.
"""

import numpy as np

from .matching import box_iou

DIGITS_CLASSES = [str(i) for i in range(10)]


def load_items(source="fashion-mnist", n=None, random_state=0):
    """Real item images and their classes.

    Args:
        source ("fashion-mnist"): ``"fashion-mnist"`` (70,000 28x28 images,
            needs Debian's ``dataset-fashion-mnist``) or ``"digits"``
            (scikit-learn's 1,797 8x8 digits, scaled to 0..255)
        n (None): a seeded random subset of this size
        random_state (0): seed of the subset

    Returns:
        ``(images, labels, classes, pairs)``: uint8 ``(N, h, w)``, int64
        ``(N,)``, the class names and the confusable-partner map
        ``{class index: partner index}``
    """
    from ..benchmarks.datasets import (DIGITS_PAIRS, FASHION_MNIST_CLASSES,
                                       FASHION_MNIST_PAIRS, load_fashion_mnist_raw)

    if source == "fashion-mnist":
        images, labels = load_fashion_mnist_raw()
        classes, pairs = list(FASHION_MNIST_CLASSES), dict(FASHION_MNIST_PAIRS)
    elif source == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
        labels = d.target.astype(np.int64)
        classes, pairs = list(DIGITS_CLASSES), dict(DIGITS_PAIRS)
    else:
        raise ValueError("Unknown item source %r: use 'fashion-mnist' or 'digits'" % (source,))
    if n is not None and n < len(labels):
        idx = np.random.RandomState(random_state).choice(len(labels), n, replace=False)
        images, labels = images[idx], labels[idx]
    return images, labels.astype(np.int64), classes, pairs


def _tight_box(img, thresh):
    ys, xs = np.nonzero(img > thresh)
    if len(xs) == 0:
        return None
    return xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


def _resize(img, w, h):
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((max(1, int(w)), max(1, int(h))),
                                                  Image.BILINEAR))


def compose_canvases(items, labels, n_images, canvas_size=128, max_objects=5,
                     size_range=(10, 52), empty_fraction=0.05, max_overlap=0.05,
                     random_state=0):
    """Pastes real items onto canvases; the true boxes are the items' pixels.

    Each canvas gets 0 objects with probability ``empty_fraction``, else 1 to
    ``max_objects``; each item is resized to a side drawn log-uniformly from
    ``size_range`` (small objects are common), pasted (pixel-wise maximum)
    where its box overlaps earlier boxes by IoU <= ``max_overlap``, on a
    background of mild Gaussian noise.

    Args:
        items: uint8 ``(N, h, w)`` item images (dark background)
        labels: ``(N,)`` int classes
        n_images: number of canvases
        canvas_size (128): canvas side in pixels
        max_objects (5), size_range ((10, 52)), empty_fraction (0.05),
        max_overlap (0.05), random_state (0): see above

    Returns:
        ``(images, boxes, classes)``: a list of uint8 ``(S, S)`` canvases, a
        list of float32 ``(k, 4)`` pixel ``[x, y, w, h]`` tight boxes and a
        list of int64 ``(k,)`` classes
    """
    rng = np.random.RandomState(random_state)
    S = int(canvas_size)
    lo, hi = np.log(size_range[0]), np.log(size_range[1])
    images, all_boxes, all_labels = [], [], []
    for _ in range(int(n_images)):
        canvas = np.clip(rng.normal(18, 6, size=(S, S)), 0, 255)
        k = 0 if rng.rand() < empty_fraction else rng.randint(1, max_objects + 1)
        boxes, labs = [], []
        for _ in range(k):
            idx = rng.randint(len(items))
            side = int(round(np.exp(rng.uniform(lo, hi))))
            side = min(side, S)
            patch = _resize(items[idx], side, side).astype(np.float64)
            tight = _tight_box(patch, 0.15 * max(patch.max(), 1))
            if tight is None:
                continue
            bx, by, bw, bh = tight
            for _try in range(30):
                x0, y0 = rng.randint(0, S - side + 1), rng.randint(0, S - side + 1)
                box = np.array([[x0 + bx, y0 + by, bw, bh]], dtype=np.float64)
                if not boxes or box_iou(box, np.array(boxes)).max() <= max_overlap:
                    region = canvas[y0:y0 + side, x0:x0 + side]
                    canvas[y0:y0 + side, x0:x0 + side] = np.maximum(region, patch)
                    boxes.append(box[0])
                    labs.append(int(labels[idx]))
                    break
        images.append(np.clip(canvas, 0, 255).astype(np.uint8))
        all_boxes.append(np.array(boxes, dtype=np.float32).reshape(-1, 4))
        all_labels.append(np.array(labs, dtype=np.int64))
    return images, all_boxes, all_labels


class CropClassifier:
    """Multinomial logistic regression on image crops (the detector's class head).

    Crops are resized to ``side x side`` and scaled to [0, 1]. It is trained
    on canvases of real items that are not used in the audited set, on the
    crops of their true boxes with corners moved by ``N(0, jitter * size)``
    (``n_jitter`` crops per object), i.e. on the imprecise boxes a detector
    classifies. BLAS runs on one thread (thread oversubscription slows small
    fits 10-100x on shared machines).

    Args:
        side (16): crop side after resizing
        C (1.0): inverse regularisation strength
        n_jitter (2), jitter (0.07): crops per training object and their jitter
        random_state (0)
    """

    def __init__(self, side=16, C=1.0, n_jitter=2, jitter=0.07, random_state=0):
        self.side = side
        self.C = C
        self.n_jitter = n_jitter
        self.jitter = jitter
        self.random_state = random_state

    def _features(self, crops):
        return np.stack([_resize(c, self.side, self.side) for c in crops]
                        ).reshape(len(crops), -1).astype(np.float32) / 255.0

    def _crops(self, images, boxes, labels, n_jitter, rng):
        crops, ys = [], []
        for img, bs, ls in zip(images, boxes, labels):
            for (x, y, w, h), lab in zip(np.asarray(bs, dtype=np.float64).reshape(-1, 4), ls):
                for _ in range(n_jitter):
                    d = rng.normal(0, self.jitter, size=4) * np.array([w, h, w, h])
                    box = [x + d[0], y + d[1], w + d[2] - d[0], h + d[3] - d[1]]
                    crops.append(_crop(img, _clip_box(box, img.shape[0])))
                    ys.append(int(lab))
        return crops, np.asarray(ys, dtype=np.int64)

    def fit(self, images, boxes, labels):
        """Fits on canvases: lists of images, ``(k, 4)`` pixel boxes, ``(k,)`` classes."""
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        rng = np.random.RandomState(self.random_state)
        crops, ys = self._crops(images, boxes, labels, self.n_jitter, rng)
        self.model_ = LogisticRegression(C=self.C, max_iter=500)
        with threadpool_limits(limits=1):
            self.model_.fit(self._features(crops), ys)
        return self

    def score(self, images, boxes, labels):
        """Accuracy on one jittered crop per object of held-out canvases."""
        crops, ys = self._crops(images, boxes, labels, 1, np.random.RandomState(1))
        pred = self.model_.classes_[self.predict_proba(crops).argmax(axis=1)]
        return float((pred == ys).mean())

    def predict_proba(self, crops):
        """``(k, n_classes)`` probabilities for a list of uint8 crops."""
        if len(crops) == 0:
            return np.zeros((0, len(self.model_.classes_)))
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            return self.model_.predict_proba(self._features(crops))


def _crop(image, box):
    S_h, S_w = image.shape[:2]
    x, y, w, h = box
    x1, y1 = int(np.clip(np.floor(x), 0, S_w - 1)), int(np.clip(np.floor(y), 0, S_h - 1))
    x2, y2 = int(np.clip(np.ceil(x + w), x1 + 1, S_w)), int(np.clip(np.ceil(y + h), y1 + 1, S_h))
    return image[y1:y2, x1:x2]


def _clip_box(box, S):
    x1, y1 = np.clip(box[0], 0, S), np.clip(box[1], 0, S)
    x2, y2 = np.clip(box[0] + box[2], 0, S), np.clip(box[1] + box[3], 0, S)
    return np.array([x1, y1, max(x2 - x1, 1.0), max(y2 - y1, 1.0)])


def simulate_detector(images, boxes, classifier, size50=14.0, size_scale=3.0, jitter=0.07,
                      second_class_min=0.15, missed_box_rate=0.5, background_rate=0.4,
                      score_thresh=0.05, random_state=0):
    """A simulated detector whose classes come from a real classifier on pixels.

    For each true object of side ``s = sqrt(w h)`` pixels:

    * found with probability ``1 / (1 + exp(-(s - size50) / size_scale))``
      (small objects are missed more often);
    * box corners moved by ``N(0, jitter * w)`` and ``N(0, jitter * h)``;
    * objectness ``o ~ Beta(4 + 16 q, 1)`` with ``q = clip((s - 10) / 30,
      0, 1)`` (bigger objects are found more confidently);
    * class probabilities ``p`` from ``classifier`` on the pixels inside the
      jittered box: the box gets ``argmax p`` with confidence ``o * max p``,
      and a second box (same place) gets the runner-up class with
      confidence ``o * p_2`` when ``p_2 >= second_class_min``;
    * a missed object still gets a low-confidence box (confidence ``o *
      max p * U(0.1, 0.35)``) with probability ``missed_box_rate``.

    Plus ``Poisson(background_rate)`` boxes per image on random places
    (confidence ``Beta(1.5, 8) * max p``). Boxes with confidence below
    ``score_thresh`` are dropped.

    Args:
        images: list of uint8 canvases
        boxes: list of ``(k, 4)`` true pixel boxes per canvas
        classifier: a fitted :class:`CropClassifier`
        random_state (0)

    Returns:
        a list (per image) of dicts with ``boxes`` (float32 ``(m, 4)`` pixel
        boxes), ``labels`` (int64 ``(m,)``), ``confidence`` (float32
        ``(m,)``) and ``source`` (int64 ``(m,)``: the true object each
        prediction comes from, -1 for background boxes)
    """
    rng = np.random.RandomState(random_state)
    out = []
    for image, true_boxes in zip(images, boxes):
        S = image.shape[0]
        pb, crops, obj, src, damp = [], [], [], [], []
        for t, (x, y, w, h) in enumerate(np.asarray(true_boxes, dtype=np.float64)):
            s = np.sqrt(w * h)
            found = rng.rand() < 1.0 / (1.0 + np.exp(-(s - size50) / size_scale))
            if not found and rng.rand() >= missed_box_rate:
                continue
            q = np.clip((s - 10.0) / 30.0, 0, 1)
            o = rng.beta(4 + 16 * q, 1.0)
            x1 = x + rng.normal(0, jitter * w)
            y1 = y + rng.normal(0, jitter * h)
            x2 = x + w + rng.normal(0, jitter * w)
            y2 = y + h + rng.normal(0, jitter * h)
            box = _clip_box([min(x1, x2 - 1), min(y1, y2 - 1), abs(x2 - x1), abs(y2 - y1)], S)
            pb.append(box)
            crops.append(_crop(image, box))
            obj.append(o)
            src.append(t)
            damp.append(1.0 if found else rng.uniform(0.1, 0.35))
        for _ in range(rng.poisson(background_rate)):
            side = np.exp(rng.uniform(np.log(8), np.log(40)))
            box = _clip_box([rng.uniform(0, S - side), rng.uniform(0, S - side),
                             side * rng.uniform(0.7, 1.3), side], S)
            pb.append(box)
            crops.append(_crop(image, box))
            obj.append(rng.beta(1.5, 8))
            src.append(-1)
            damp.append(1.0)
        probs = classifier.predict_proba(crops)
        boxes_o, labels_o, conf_o, src_o = [], [], [], []
        for r in range(len(pb)):
            order = np.argsort(-probs[r])
            c1, c2 = order[0], order[1]
            conf = obj[r] * probs[r, c1] * damp[r]
            boxes_o.append(pb[r])
            labels_o.append(classifier.model_.classes_[c1])
            conf_o.append(conf)
            src_o.append(src[r])
            if probs[r, c2] >= second_class_min:
                boxes_o.append(pb[r])
                labels_o.append(classifier.model_.classes_[c2])
                conf_o.append(obj[r] * probs[r, c2] * damp[r])
                src_o.append(src[r])
        conf_o = np.array(conf_o, dtype=np.float32)
        keep = conf_o >= score_thresh
        out.append(dict(
            boxes=np.array(boxes_o, dtype=np.float32).reshape(-1, 4)[keep],
            labels=np.array(labels_o, dtype=np.int64)[keep],
            confidence=conf_o[keep],
            source=np.array(src_o, dtype=np.int64)[keep]))
    return out


def _perturb_box(box, S, rng, iou_range=(0.2, 0.5)):
    """A box of IoU within ``iou_range`` with ``box`` (shifted and rescaled)."""
    x, y, w, h = box
    best = None
    for _ in range(100):
        sw, sh = np.exp(rng.uniform(-0.6, 0.6, size=2))
        dx, dy = rng.uniform(-0.6, 0.6, size=2)
        nw, nh = w * sw, h * sh
        cand = _clip_box([x + w / 2 - nw / 2 + dx * w, y + h / 2 - nh / 2 + dy * h, nw, nh], S)
        iou = box_iou([box], [cand])[0, 0]
        if iou_range[0] <= iou <= iou_range[1]:
            return cand
        if best is None or abs(iou - np.mean(iou_range)) < best[0]:
            best = (abs(iou - np.mean(iou_range)), cand)
    return best[1]


def inject_box_errors(boxes, labels, n_classes, canvas_size, pairs=None, missing_rate=0.06,
                      no_annotations_rate=0.05, swap_rate=0.06, mislocate_rate=0.05,
                      spurious_rate=0.05, duplicate_fraction=0.3, random_state=0):
    """The labeller's mistakes on known true boxes, with the truth kept.

    * ``no_annotations_rate`` of the images with objects lose all their boxes;
    * of the other true objects, disjoint random subsets are: deleted
      (``missing_rate``), relabelled (``swap_rate``: to the confusable
      partner in ``pairs`` half of the time, else to a random other class)
      and redrawn with an IoU of 0.2 to 0.5 with the true box
      (``mislocate_rate``);
    * ``spurious_rate`` x #objects boxes are added to random images:
      ``duplicate_fraction`` of them duplicate an existing box (IoU > 0.7,
      same class), the rest lie on the background (IoU < 0.05 with every
      object) with a random class.

    Args:
        boxes: list of ``(k, 4)`` true pixel boxes per image
        labels: list of ``(k,)`` true int classes
        n_classes: number of classes
        canvas_size: image side in pixels
        pairs (None): ``{class: partner}`` for swaps
        random_state (0)

    Returns:
        a list (per image) of dicts: ``boxes`` (float32 ``(k', 4)``),
        ``labels`` (int64), ``issue`` (object ``(k',)``: ``""``,
        ``"spurious"``, ``"swapped"`` or ``"mislocated"``), ``source``
        (int64: the true object of each box, -1 for added boxes),
        ``annotated`` (bool ``(k,)`` per true object: False if its box was
        deleted) and ``no_annotations`` (bool: the image lost all boxes)
    """
    rng = np.random.RandomState(random_state)
    S = float(canvas_size)
    n_images = len(boxes)
    with_objects = [i for i in range(n_images) if len(boxes[i])]
    n_empty = int(round(no_annotations_rate * len(with_objects)))
    emptied = set(rng.choice(with_objects, n_empty, replace=False).tolist()) if n_empty else set()
    objects = [(i, t) for i in range(n_images) if i not in emptied for t in range(len(boxes[i]))]
    n_obj = len(objects)
    order = rng.permutation(n_obj)
    n_miss, n_swap, n_loc = (int(round(r * n_obj)) for r in (missing_rate, swap_rate,
                                                             mislocate_rate))
    kind = {}
    for r, name in zip(np.split(order, np.cumsum([n_miss, n_swap, n_loc]))[:3],
                       ("missing", "swapped", "mislocated")):
        for o in r:
            kind[objects[o]] = name
    out = []
    for i in range(n_images):
        tb = np.asarray(boxes[i], dtype=np.float64).reshape(-1, 4)
        tl = np.asarray(labels[i], dtype=np.int64)
        nb, nl, iss, src = [], [], [], []
        annotated = np.ones(len(tb), dtype=bool)
        for t in range(len(tb)):
            k = "missing" if i in emptied else kind.get((i, t), "")
            if k == "missing":
                annotated[t] = False
                continue
            box, lab = tb[t], int(tl[t])
            if k == "swapped":
                if pairs and rng.rand() < 0.5:
                    lab = int(pairs[lab])
                else:
                    lab = int((lab + rng.randint(1, n_classes)) % n_classes)
            elif k == "mislocated":
                box = _perturb_box(box, S, rng)
            nb.append(box)
            nl.append(lab)
            iss.append(k)
            src.append(t)
        out.append(dict(boxes=nb, labels=nl, issue=iss, source=src, annotated=annotated,
                        no_annotations=i in emptied))
    n_spur = int(round(spurious_rate * (n_obj + sum(len(boxes[i]) for i in emptied))))
    candidates = [i for i in range(n_images) if i not in emptied]
    added = 0
    tries = 0
    while added < n_spur and candidates and tries < 100 * max(n_spur, 1):
        tries += 1
        i = candidates[rng.randint(len(candidates))]
        rec = out[i]
        if rec["boxes"] and rng.rand() < duplicate_fraction:
            j = rng.randint(len(rec["boxes"]))
            base = np.asarray(rec["boxes"][j])
            cand = _clip_box(base + rng.normal(0, 0.04, size=4) * np.r_[base[2:], base[2:]], S)
            if box_iou([cand], [base])[0, 0] <= 0.7:
                continue
            lab = rec["labels"][j]
        else:
            side = np.exp(rng.uniform(np.log(10), np.log(48)))
            cand = _clip_box([rng.uniform(0, S - side), rng.uniform(0, S - side),
                              side * rng.uniform(0.7, 1.3), side], S)
            tb = np.asarray(boxes[i], dtype=np.float64).reshape(-1, 4)
            if len(tb) and box_iou([cand], tb).max() >= 0.05:
                continue
            lab = rng.randint(n_classes)
        rec["boxes"].append(cand)
        rec["labels"].append(int(lab))
        rec["issue"].append("spurious")
        rec["source"].append(-1)
        added += 1
    for rec in out:
        rec["boxes"] = np.array(rec["boxes"], dtype=np.float32).reshape(-1, 4)
        rec["labels"] = np.array(rec["labels"], dtype=np.int64)
        issue = np.empty(len(rec["issue"]), dtype=object)
        issue[:] = rec["issue"]
        rec["issue"] = issue
        rec["source"] = np.array(rec["source"], dtype=np.int64)
    return out


def build_detection_set(source="digits", n_images=200, canvas_size=128, n_train_images=800,
                        random_state=0, detector_kwargs=None, error_kwargs=None,
                        canvas_kwargs=None):
    """Canvases, noisy ground truth and simulated predictions in one call.

    The items are split in two halves: canvases of the first half (
    ``n_train_images`` of them) train the detector's classifier, the
    audited canvases use the second half only.

    Returns:
        a dict with ``images``, ``true_boxes``, ``true_labels`` (lists per
        image, pixel boxes), ``noisy`` (from :func:`inject_box_errors`),
        ``preds`` (from :func:`simulate_detector`), ``classes``, ``pairs``,
        ``canvas_size``, ``source`` and ``classifier_accuracy`` (on jittered
        crops of 100 more held-out training-half canvases)
    """
    items, item_labels, classes, pairs = load_items(source)
    rng = np.random.RandomState(random_state)
    perm = rng.permutation(len(item_labels))
    half = len(perm) // 2
    train, rest = perm[:half], perm[half:]
    canvas_kwargs = dict(canvas_kwargs or {})
    tr_images, tr_boxes, tr_labels = compose_canvases(
        items[train], item_labels[train], int(n_train_images) + 100, canvas_size=canvas_size,
        random_state=random_state + 10, **canvas_kwargs)
    n_fit = int(n_train_images)
    clf = CropClassifier(random_state=random_state).fit(
        tr_images[:n_fit], tr_boxes[:n_fit], tr_labels[:n_fit])
    acc = clf.score(tr_images[n_fit:], tr_boxes[n_fit:], tr_labels[n_fit:])
    images, tboxes, tlabels = compose_canvases(
        items[rest], item_labels[rest], n_images, canvas_size=canvas_size,
        random_state=random_state + 1, **canvas_kwargs)
    noisy = inject_box_errors(tboxes, tlabels, len(classes), canvas_size, pairs=pairs,
                              random_state=random_state + 2, **(error_kwargs or {}))
    preds = simulate_detector(images, tboxes, clf, random_state=random_state + 3,
                              **(detector_kwargs or {}))
    return dict(images=images, true_boxes=tboxes, true_labels=tlabels, noisy=noisy,
                preds=preds, classes=classes, pairs=pairs, canvas_size=canvas_size,
                source=source, classifier_accuracy=acc)
