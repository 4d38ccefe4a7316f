"""Detection label-issue benchmark: label-audit's ``compute_detection_issues``
against FiftyOne Brain's detection mistakenness, in the same run, on canvases
of real images with injected box errors and a simulated detector.

    label-audit bench detection [--source digits|fashion-mnist] [--n 300] [--seeds 1,2,3] [--json]
    python bench/detection.py --source fashion-mnist --n 300 --seeds 1

Data (see :mod:`label_audit.detection.synthetic`): real items (scikit-learn
digits or Fashion-MNIST) pasted onto 128x128 canvases, true boxes = the
items' pixels; the ground truth gets, per seed, 5% of the images with
objects left unannotated, and of the other objects 6% deleted (missed), 6%
relabelled (swapped, half to a confusable partner), 5% redrawn at IoU
0.2-0.5 (mislocated), plus 5% added boxes (70% on the background with a
random class, 30% duplicates). The simulated detector finds objects with a
size-dependent recall (50% at 14 px), jitters box corners by 7% of the size,
takes its class and confidence from a logistic-regression classifier trained
on other canvases (applied to the pixels in its box), keeps a runner-up class
box where that classifier hesitates, emits low-confidence boxes on some
missed objects and on the background, and drops boxes below 0.05.

Everything goes through FiftyOne: the canvases are written as PNGs, the
noisy ground truth is imported from COCO json, and both methods read and
write the same dataset in a private MongoDB.

Scores compared, per issue type (``errors`` = the injected truth):

=================  =========================  ==================================
issue (rows)       label-audit score / flag   FiftyOne Brain score / flag
=================  =========================  ==================================
missing (preds)    ``missing`` / ``is_missing``  ``possible_missing`` (a flag: an
                                              unmatched prediction with
                                              confidence > 0.95)
spurious (GT)      ``spurious`` / flag        ``possible_spurious`` (flag:
                                              unmatched at IoU 0.5)
swapped (GT)       ``swapped`` / flag         ``mistakenness`` / > 0.5
mislocated (GT)    ``localization`` / flag    ``mistakenness_loc`` / > 0.5
no annotations     ``no_annotations_score``   #``possible_missing`` on images
(images)           / flag                     without ground truth / > 0
=================  =========================  ==================================

Brain writes nothing for unmatched objects' ``mistakenness``: they score 0.
AUPRC is sklearn's average precision (a flag used as a score gives the AP
of its single threshold).

Cleaning (pycocotools COCOeval): box mAP@[.5:.95] and AP50 of the simulated
predictions against the noisy ground truth, against it after applying
label-audit's suggested fixes (delete flagged spurious boxes, relabel
flagged swapped ones to the suggested class, replace flagged mislocated
boxes by their matched prediction, add flagged missing predictions as
boxes), after applying Brain's (delete ``possible_spurious``, add
``possible_missing``: its ``copy_missing``), and against the true ground
truth; plus the F1 of each ground truth against the true boxes (IoU >= 0.5
and the same class).
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from . import _common

ISSUES = ("missing", "spurious", "swapped", "mislocated", "no annotations")

COLUMNS = [
    ("method", "method", 22, 0),
    ("n", "rows", 6, 0),
    ("errors", "errors", 6, 0),
    ("auprc", "AUPRC", 6, 3),
    ("auroc", "AUROC", 6, 3),
    ("flag_precision", "flagP", 6, 3),
    ("flag_recall", "flagR", 6, 3),
    ("flag_f1", "flagF1", 6, 3),
    ("flagged", "#flag", 6, 0),
]

CLEAN_COLUMNS = [
    ("ground_truth", "ground truth", 30, 0),
    ("map", "mAP", 6, 3),
    ("ap50", "AP50", 6, 3),
    ("f1_vs_true", "F1 vs true", 10, 3),
    ("boxes", "boxes", 6, 0),
]


def _flat(values, default=None):
    return [default if v is None else v for vs in values for v in (vs or [])]


def _metrics(truth, score, flags):
    from .metrics import auprc, auroc, flag_prf

    truth = np.asarray(truth, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    p, r, f1, nf = flag_prf(truth, flags)
    return dict(n=len(truth), errors=int(truth.sum()), auprc=auprc(truth, score),
                auroc=auroc(truth, score), flag_precision=p, flag_recall=r, flag_f1=f1,
                flagged=nf)


def _gt_f1(true_boxes, true_labels, boxes, labels, iou=0.5):
    """F1 of a ground truth against the true boxes (one-to-one, IoU >= iou, same class)."""
    from ..detection.matching import box_iou, greedy_match

    tp = n_true = n_pred = 0
    for tb, tl, b, l_ in zip(true_boxes, true_labels, boxes, labels):
        tl, l_ = np.asarray(tl), np.asarray(l_)
        n_true += len(tl)
        n_pred += len(l_)
        if len(tl) and len(l_):
            ious = box_iou(b, tb)
            ok = (ious >= iou) & (np.asarray(l_)[:, None] == tl[None, :])
            rows, _ = greedy_match(ious, ok)
            tp += int((rows >= 0).sum())
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return 2 * p * r / (p + r) if p + r else 0.0


def run_detection(source="digits", n_images=300, seed=0, cleaning=True):
    """Builds one detection set, runs both methods on it, returns a JSON-able dict."""
    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        from ..database import use_private_mongo

        use_private_mongo()
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    import fiftyone as fo
    import fiftyone.brain as fob

    from ..demo_detection import build_dataset
    from ..detection.coco import coco_dataset, coco_map
    from ..detection.compute import compute_detection_issues
    from ..detection.synthetic import build_detection_set

    t0 = time.perf_counter()
    data = build_detection_set(source, n_images=n_images, random_state=seed)
    with tempfile.TemporaryDirectory(prefix="label-audit-det-bench-") as tmp:
        ds, _ = build_dataset(source, n_images=n_images, name=None, seed=seed, folder=tmp,
                              persistent=False, data=data)
        build_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        res = compute_detection_issues(ds, "ground_truth", "predictions", progress=False)
        la_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fob.compute_mistakenness(ds, "predictions", label_field="ground_truth", progress=False)
        brain_s = time.perf_counter() - t0

        f = res.fields
        gp, pp = "ground_truth.detections.", "predictions.detections."
        g = {k: _flat(v) for k, v in zip(
            ("error", "id", "box", "label", "spurious", "swapped", "loc", "is_sp", "is_sw",
             "is_loc", "issue", "sugg", "match", "b_spur", "b_mist", "b_loc"),
            ds.values([gp + "injected_error", gp + "id", gp + "bounding_box", gp + "label",
                       gp + f["gt"]["spurious"], gp + f["gt"]["swapped"],
                       gp + f["gt"]["localization"], gp + f["gt"]["is_spurious"],
                       gp + f["gt"]["is_swapped"], gp + f["gt"]["is_mislocated"],
                       gp + f["gt"]["issue"], gp + f["gt"]["suggested_label"],
                       gp + f["gt"]["match_id"], gp + "possible_spurious",
                       gp + "mistakenness", gp + "mistakenness_loc"]))}
        p = {k: _flat(v) for k, v in zip(
            ("truth", "id", "missing", "is_missing", "b_missing"),
            ds.values([pp + "injected_missing", pp + "id", pp + f["pred"]["missing"],
                       pp + f["pred"]["is_missing"], pp + "possible_missing"]))}
        s_truth, s_score, s_flag, n_gt, b_count = ds.values(
            ["injected_no_annotations", f["sample"]["no_annotations_score"],
             f["sample"]["no_annotations"], "ground_truth.detections", "possible_missing"])
        n_gt = np.array([len(x or []) for x in n_gt])
        b_img = np.where(n_gt == 0, np.array([b or 0 for b in b_count], dtype=float), 0.0)

        def arr(xs):
            return np.array([0.0 if x is None else float(x) for x in xs])

        err = np.array(g["error"], dtype=object)
        tables = {}
        tables["missing"] = [
            dict(method="label-audit", **_metrics(p["truth"], arr(p["missing"]),
                                                  [bool(x) for x in p["is_missing"]])),
            dict(method="fiftyone-brain", **_metrics(p["truth"], arr(p["b_missing"]),
                                                     [bool(x) for x in p["b_missing"]]))]
        tables["spurious"] = [
            dict(method="label-audit", **_metrics(err == "spurious", arr(g["spurious"]),
                                                  [bool(x) for x in g["is_sp"]])),
            dict(method="fiftyone-brain", **_metrics(err == "spurious", arr(g["b_spur"]),
                                                     [bool(x) for x in g["b_spur"]]))]
        tables["swapped"] = [
            dict(method="label-audit", **_metrics(err == "swapped", arr(g["swapped"]),
                                                  [bool(x) for x in g["is_sw"]])),
            dict(method="fiftyone-brain", **_metrics(err == "swapped", arr(g["b_mist"]),
                                                     arr(g["b_mist"]) > 0.5))]
        tables["mislocated"] = [
            dict(method="label-audit", **_metrics(err == "mislocated", arr(g["loc"]),
                                                  [bool(x) for x in g["is_loc"]])),
            dict(method="fiftyone-brain", **_metrics(err == "mislocated", arr(g["b_loc"]),
                                                     arr(g["b_loc"]) > 0.5))]
        tables["no annotations"] = [
            dict(method="label-audit", **_metrics(s_truth, arr(s_score),
                                                  [bool(x) for x in s_flag])),
            dict(method="fiftyone-brain", **_metrics(s_truth, b_img, b_img > 0))]

        clean = []
        if cleaning:
            clean = _cleaning(ds, data, res, coco_dataset, coco_map)
        ds.delete()
    return dict(config=dict(source=source, n_images=n_images, seed=seed,
                            params=res.result.params,
                            classifier_accuracy=data["classifier_accuracy"],
                            n_gt=len(g["id"]), n_pred=len(p["id"]),
                            cpu_count=_common.n_cores(), fiftyone=fo.__version__),
                seconds=dict(build=build_s, label_audit=la_s, brain=brain_s),
                tables=tables, cleaning=clean)


def _cleaning(ds, data, res, coco_dataset, coco_map):
    """mAP of the predictions against noisy, cleaned and true ground truth."""
    classes = data["classes"]
    index = {c: i for i, c in enumerate(classes)}
    S = float(data["canvas_size"])
    f = res.fields
    gp, pp = "ground_truth.detections.", "predictions.detections."
    names = [os.path.basename(x) for x in ds.values("filepath")]
    order = np.argsort(names)  # canvas_00000.png, ... = data order
    cols = ds.values([gp + "bounding_box", gp + "label", gp + f["gt"]["issue"],
                      gp + f["gt"]["suggested_label"], gp + f["gt"]["match_id"],
                      gp + "possible_spurious", pp + "id", pp + "bounding_box", pp + "label",
                      pp + "confidence", pp + f["pred"]["is_missing"], pp + "possible_missing"])
    cols = [[c[k] or [] for k in order] for c in cols]
    (gb, gl, issue, sugg, match, bspur, pid, pb, pl, pc, pmiss, bmiss) = cols
    variants = {"noisy": ([], []), "cleaned by label-audit": ([], []),
                "cleaned by fiftyone-brain": ([], [])}
    preds = ([], [], [])
    for k in range(len(order)):
        pbox = {i: np.asarray(b) * S for i, b in zip(pid[k], pb[k])}
        boxes = [np.asarray(b) * S for b in gb[k]]
        labels = [index[x] for x in gl[k]]
        variants["noisy"][0].append(boxes)
        variants["noisy"][1].append(labels)
        cb, cl = [], []
        for b, lab, iss, sl, m in zip(boxes, labels, issue[k], sugg[k], match[k]):
            if iss == "spurious":
                continue
            if iss == "swapped" and sl is not None:
                lab = index[sl]
            if iss == "mislocated" and m is not None:
                b = pbox[m]
            cb.append(b)
            cl.append(lab)
        bb, bl = [], []
        for b, lab, sp in zip(boxes, labels, bspur[k]):
            if not sp:
                bb.append(b)
                bl.append(lab)
        for b, lab, mi, bmi in zip(pb[k], pl[k], pmiss[k], bmiss[k]):
            if mi:
                cb.append(np.asarray(b) * S)
                cl.append(index[lab])
            if bmi:
                bb.append(np.asarray(b) * S)
                bl.append(index[lab])
        variants["cleaned by label-audit"][0].append(cb)
        variants["cleaned by label-audit"][1].append(cl)
        variants["cleaned by fiftyone-brain"][0].append(bb)
        variants["cleaned by fiftyone-brain"][1].append(bl)
        preds[0].append(np.asarray(pb[k], dtype=np.float64).reshape(-1, 4) * S)
        preds[1].append([index[x] for x in pl[k]])
        preds[2].append(pc[k])
    variants["true"] = (data["true_boxes"], data["true_labels"])
    names_ = ["canvas_%05d.png" % i for i in range(len(order))]
    sizes = [(im.shape[1], im.shape[0]) for im in data["images"]]
    out = []
    for name, (boxes, labels) in variants.items():
        gt = coco_dataset(names_, sizes, boxes, labels, classes)
        m = coco_map(gt, *preds)
        out.append(dict(ground_truth=name, map=m["map"], ap50=m["ap50"],
                        f1_vs_true=_gt_f1(data["true_boxes"], data["true_labels"],
                                          [np.asarray(b).reshape(-1, 4) for b in boxes],
                                          labels),
                        boxes=sum(len(x) for x in labels)))
    return out


def _mean_tables(runs):
    """Averages the metric tables of several seeds (NaN-aware)."""
    tables = {}
    for issue in ISSUES:
        rows = []
        for j, row in enumerate(runs[0]["tables"][issue]):
            avg = dict(method=row["method"])
            for key, _, _, _ in COLUMNS[1:]:
                vals = [r["tables"][issue][j][key] for r in runs]
                vals = [np.nan if v is None else v for v in vals]
                avg[key] = float(np.nanmean(vals)) if not all(np.isnan(vals)) else float("nan")
                if key in ("n", "errors", "flagged"):
                    avg[key] = int(round(avg[key]))
            rows.append(avg)
        tables[issue] = rows
    clean = []
    if runs[0]["cleaning"]:
        for j, row in enumerate(runs[0]["cleaning"]):
            avg = dict(ground_truth=row["ground_truth"])
            for key in ("map", "ap50", "f1_vs_true", "boxes"):
                avg[key] = float(np.mean([r["cleaning"][j][key] for r in runs]))
            avg["boxes"] = int(round(avg["boxes"]))
            clean.append(avg)
    return tables, clean


def format_report(runs):
    cfg = runs[0]["config"]
    seeds = ",".join(str(r["config"]["seed"]) for r in runs)
    tables, clean = _mean_tables(runs)
    la = np.mean([r["seconds"]["label_audit"] for r in runs])
    br = np.mean([r["seconds"]["brain"] for r in runs])
    lines = [
        "Detection issues: %s canvases (%d per seed), seeds %s, ~%d GT boxes and ~%d "
        "predictions per seed; detector class accuracy %.3f; %d CPU cores, fiftyone %s"
        % (cfg["source"], cfg["n_images"], seeds,
           np.mean([r["config"]["n_gt"] for r in runs]),
           np.mean([r["config"]["n_pred"] for r in runs]),
           np.mean([r["config"]["classifier_accuracy"] for r in runs]), cfg["cpu_count"],
           cfg["fiftyone"]),
        "Means over seeds. Time per run: label-audit compute_detection_issues %.2f s, "
        "fiftyone-brain compute_mistakenness %.2f s (%.1fx)" % (la, br, br / la if la else
                                                                 float("nan")),
    ]
    for issue in ISSUES:
        lines.append("")
        lines.append("[%s]" % issue)
        lines.append(_common.table(tables[issue], COLUMNS))
    if clean:
        lines.append("")
        lines.append("[cleaning: COCO box mAP of the predictions against each ground truth]")
        lines.append(_common.table(clean, CLEAN_COLUMNS))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="label-audit bench detection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="digits", choices=["digits", "fashion-mnist"])
    parser.add_argument("--n", type=int, default=300, help="canvases per seed")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--no-cleaning", action="store_true", help="skip the COCOeval part")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.source == "fashion-mnist":
        from .datasets import fashion_mnist_available

        if not fashion_mnist_available():
            print("error: Fashion-MNIST is not installed (apt-get install "
                  "dataset-fashion-mnist); use --source digits", file=sys.stderr)
            return 2
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    runs = [run_detection(args.source, args.n, seed, cleaning=not args.no_cleaning)
            for seed in seeds]
    if args.json:
        print(json.dumps(_common.json_safe(runs), indent=1))
    else:
        print(format_report(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
