"""Detection demo: canvases of real digits or Fashion-MNIST items with box
annotation errors, audited with ``compute_detection_issues``.

    python -m label_audit.demo_detection [--no-app] [--source digits|fashion-mnist] [--n 300]

Steps: real items are pasted onto canvases written as PNG files; the ground
truth, with injected errors (missed objects, unannotated images, background
and duplicate boxes, swapped classes, badly drawn boxes), is written as a
COCO json file (checked with pycocotools) and imported with FiftyOne's
``COCODetectionDataset`` importer; a simulated detector (see
:mod:`label_audit.detection.synthetic`) fills ``predictions``; then
``compute_detection_issues`` scores everything and a summary compares the
flags with the injected truth. The truth is kept in fields a real dataset
does not have: ``true_ground_truth`` (the clean boxes), ``injected_error``
on each ground-truth box, ``injected_missing`` on each prediction and
``injected_no_annotations`` on samples.

The dataset is rebuilt on every run (same name, same seed, same result).
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from .demo_data import data_dir

DEFAULT_NAME = "label-audit-detection-demo"


def write_detection_set(data, folder):
    """Writes the canvases as PNGs and the noisy ground truth as COCO json.

    Args:
        data: a dict from :func:`label_audit.detection.synthetic.build_detection_set`
        folder: output folder (``data/`` for images, ``labels.json``)

    Returns:
        ``(images_dir, labels_path)``
    """
    from PIL import Image

    from .detection.coco import coco_dataset, load_coco

    folder = Path(folder)
    images_dir = folder / "data"
    images_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for i, img in enumerate(data["images"]):
        name = "canvas_%05d.png" % i
        tmp = images_dir / (name + ".tmp")
        Image.fromarray(img).save(tmp, format="PNG")
        os.replace(tmp, images_dir / name)
        names.append(name)
    noisy = data["noisy"]
    extra = [[dict(injected_error=str(e)) for e in rec["issue"]] for rec in noisy]
    coco = coco_dataset(names, [(im.shape[1], im.shape[0]) for im in data["images"]],
                        [rec["boxes"] for rec in noisy], [rec["labels"] for rec in noisy],
                        data["classes"], extra=extra)
    labels_path = folder / "labels.json"
    tmp = folder / "labels.json.tmp"
    tmp.write_text(json.dumps(coco))
    os.replace(tmp, labels_path)
    index = load_coco(labels_path)  # pycocotools reads it back: same counts
    if len(index.getAnnIds()) != sum(len(rec["boxes"]) for rec in noisy):
        raise RuntimeError("pycocotools read a different number of boxes from %s" % labels_path)
    return images_dir, labels_path


def build_dataset(source="digits", n_images=300, name=DEFAULT_NAME, seed=0, folder=None,
                  persistent=True, data=None):
    """Builds the detection demo dataset (see the module docstring).

    Args:
        source ("digits"): ``"digits"`` or ``"fashion-mnist"``
        n_images (300): number of canvases
        name: the dataset name (replaced if it exists); None for a temporary
            unnamed dataset
        seed (0): seed of everything
        folder (None): where to write images and json; default
            ``~/.cache/label-audit/detection-<source>-<n>-<seed>``
            (``LABEL_AUDIT_DATA_DIR`` overrides the root)
        persistent (True): keep the dataset after the process ends
        data (None): a prebuilt dict from ``build_detection_set``

    Returns:
        ``(dataset, data)``
    """
    import fiftyone as fo

    from .detection.synthetic import build_detection_set

    if data is None:
        data = build_detection_set(source, n_images=n_images, random_state=seed)
    if folder is None:
        folder = data_dir() / ("detection-%s-%d-%d" % (source, n_images, seed))
    images_dir, labels_path = write_detection_set(data, folder)
    if name is not None and fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset.from_dir(dataset_type=fo.types.COCODetectionDataset,
                             data_path=str(images_dir), labels_path=str(labels_path),
                             label_types="detections", label_field="ground_truth",
                             name=name, persistent=persistent if name else False,
                             progress=False)
    classes = data["classes"]
    S = float(data["canvas_size"])
    by_name = {Path(fp).name: i for i, fp in enumerate(ds.values("filepath"))}
    order = [by_name["canvas_%05d.png" % i] for i in range(len(data["images"]))]
    true_gt = [None] * len(order)
    preds = [None] * len(order)
    no_ann = [False] * len(order)
    for i, row in enumerate(order):
        rec = data["noisy"][i]
        true_gt[row] = fo.Detections(detections=[
            fo.Detection(label=classes[int(lab)], bounding_box=(b / S).tolist())
            for b, lab in zip(data["true_boxes"][i], data["true_labels"][i])])
        p = data["preds"][i]
        preds[row] = fo.Detections(detections=[
            fo.Detection(label=classes[int(lab)], bounding_box=(b / S).tolist(),
                         confidence=float(c),
                         injected_missing=bool(s >= 0 and not rec["annotated"][s]))
            for b, lab, c, s in zip(p["boxes"], p["labels"], p["confidence"], p["source"])])
        no_ann[row] = bool(rec["no_annotations"])
    ds.set_values("true_ground_truth", true_gt)
    ds.set_values("predictions", preds)
    ds.set_values("injected_no_annotations", no_ann)
    # an image left without boxes has no ground_truth value after the import
    ds.default_classes = list(classes)
    ds.info["label_audit_detection_demo"] = dict(
        source=data.get("source", source), seed=seed, n_images=len(order),
        classifier_accuracy=data.get("classifier_accuracy"))
    ds.save()
    return ds, data


def summarize(ds, results, label_field="ground_truth", pred_field="predictions"):
    """Prints the results and the precision/recall of each flag vs the injected truth."""
    print(results.summary())
    f = results.fields
    lines = ["%-16s %8s %8s %9s %8s" % ("issue", "injected", "flagged", "precision", "recall")]

    def row(name, truth, flags):
        truth = np.asarray(truth, dtype=bool)
        flags = np.asarray(flags, dtype=bool)
        tp = int((truth & flags).sum())
        p = tp / flags.sum() if flags.sum() else float("nan")
        r = tp / truth.sum() if truth.sum() else float("nan")
        lines.append("%-16s %8d %8d %9.2f %8.2f" % (name, truth.sum(), flags.sum(), p, r))

    gp = label_field + ".detections."
    errors = [e for es in ds.values(gp + "injected_error") for e in (es or [])]
    for issue, flag in (("spurious", "is_spurious"), ("swapped", "is_swapped"),
                        ("mislocated", "is_mislocated")):
        flags = [v for vs in ds.values(gp + f["gt"][flag]) for v in (vs or [])]
        row(issue, [e == issue for e in errors], [bool(v) for v in flags])
    pp = pred_field + ".detections."
    truth = [v for vs in ds.values(pp + "injected_missing") for v in (vs or [])]
    flags = [v for vs in ds.values(pp + f["pred"]["is_missing"]) for v in (vs or [])]
    row("missing", truth, [bool(v) for v in flags])
    row("no annotations", ds.values("injected_no_annotations"),
        [bool(v) for v in ds.values(f["sample"]["no_annotations"])])
    print("\n".join(lines))
    print("Worst images: dataset.sort_by(%r, reverse=True); worst boxes: "
          "dataset.to_patches(%r).sort_by(%r, reverse=True)"
          % (f["sample"]["issue_score"], label_field,
             "%s.%s" % (label_field, f["gt"]["issue_score"])))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="label-audit demo --detection", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-app", action="store_true", help="do not open the App")
    parser.add_argument("--source", default="digits", choices=["digits", "fashion-mnist"])
    parser.add_argument("--n", type=int, default=300, help="number of canvases")
    parser.add_argument("--name", default=DEFAULT_NAME, help="FiftyOne dataset name")
    parser.add_argument("--audit-key", default="det_audit")
    parser.add_argument("--port", type=int, default=5151)
    parser.add_argument("--address", default="localhost")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from .demo_data import demo_preflight, serve_in_app

    error = demo_preflight(args.source, "--source")
    if error:
        print("error: %s" % error, file=sys.stderr)
        return 2

    from .detection.compute import compute_detection_issues

    ds, _ = build_dataset(args.source, n_images=args.n, name=args.name, seed=args.seed)
    results = compute_detection_issues(ds, "ground_truth", "predictions",
                                       audit_key=args.audit_key, progress=False)
    summarize(ds, results)
    if args.no_app:
        return 0
    serve_in_app(ds.sort_by(results.fields["sample"]["issue_score"], reverse=True),
                 port=args.port, address=args.address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
