"""``make demo``: a persistent FiftyOne dataset of real images with injected
label errors, run through label-audit's pipeline, then opened in the App.

    python -m label_audit.demo [--no-app] [--dataset digits|fashion-mnist] [--n N]
    python -m label_audit.demo --multitask [--accept-flagged] [--no-app] ...
    python -m label_audit.demo --detection [--no-app] [--dataset digits|fashion-mnist] [--n 300]

``--detection`` runs the object-detection demo (:mod:`label_audit.demo_detection`:
real items on canvases, COCO ground truth with injected box errors, simulated
predictions, ``compute_detection_issues``).

The dataset is rebuilt from scratch on every run (same name, same seed), so
running the demo twice in a row gives the same result.

``--multitask`` builds a multi-task classification dataset from the same real
images, one Classification field per task with label noise injected
independently per task (the clean labels kept in ``<task>_true``):

* digits: ``digit`` (0-9), ``parity`` (even/odd), ``magnitude`` (low 0-4 /
  high 5-9)
* fashion-mnist: ``item`` (the 10 classes), ``category`` (top, bottom, dress,
  footwear, bag), ``tone`` (dark/medium/bright: tertiles of the image's mean
  pixel intensity, a visual attribute independent of the item)

and audits all tasks at once (``compute_label_quality(ds, tasks)``), then
prints ``evaluate_cleaning`` against the clean labels. ``--accept-flagged``
plays a reviewer who accepts the suggested label of every flagged sample of
each task and applies it, so the table's "cleaned" rows differ from "original".
"""

import argparse
import sys
import time

import numpy as np

DEFAULT_NAME = "label-audit-demo"


def inject_noise(targets, rate, n_classes, random_state=0):
    """Flips exactly ``round(rate * n)`` labels to a random other class.

    Returns:
        ``(noisy, flipped)``: the noisy int labels and a boolean mask
    """
    rng = np.random.RandomState(random_state)
    targets = np.asarray(targets)
    n = len(targets)
    flipped = np.zeros(n, dtype=bool)
    idx = rng.choice(n, int(round(rate * n)), replace=False)
    flipped[idx] = True
    noisy = targets.copy()
    shift = rng.randint(1, n_classes, size=len(idx))
    noisy[idx] = (targets[idx] + shift) % n_classes
    return noisy, flipped


#: multi-task demo tasks per source: task -> class names (see multitask_truth)
MULTITASK_TASKS = {
    "digits": {"digit": [str(i) for i in range(10)], "parity": ["even", "odd"],
               "magnitude": ["low", "high"]},
    "fashion-mnist": {"item": None, "category": ["top", "bottom", "dress", "footwear", "bag"],
                      "tone": ["dark", "medium", "bright"]},
}
#: Fashion-MNIST class index -> category index (T-shirt, Trouser, Pullover, Dress, Coat,
#: Sandal, Shirt, Sneaker, Bag, Ankle boot)
FASHION_CATEGORY = np.array([0, 1, 0, 2, 0, 3, 0, 3, 4, 3])


def multitask_truth(kind, targets, images=None):
    """The true labels of the multi-task demo tasks.

    Args:
        kind: "digits" or "fashion-mnist"
        targets: (N,) int class of each image (digit / Fashion-MNIST item)
        images (None): (N, H, W) uint8 images, needed for the fashion-mnist
            ``tone`` task (tertiles of the mean intensity over these images)

    Returns:
        ``{task: (truth (N,) int64, class names)}`` in task order
    """
    from .demo_data import FASHION_MNIST_CLASSES

    t = np.asarray(targets, dtype=np.int64)
    if kind == "digits":
        tasks = MULTITASK_TASKS["digits"]
        return {"digit": (t, tasks["digit"]), "parity": (t % 2, tasks["parity"]),
                "magnitude": ((t >= 5).astype(np.int64), tasks["magnitude"])}
    if kind == "fashion-mnist":
        if images is None:
            raise ValueError("the fashion-mnist tone task needs the images")
        tasks = MULTITASK_TASKS["fashion-mnist"]
        mean = np.asarray(images, dtype=np.float64).reshape(len(t), -1).mean(axis=1)
        tone = np.searchsorted(np.quantile(mean, [1 / 3, 2 / 3]), mean, side="right")
        return {"item": (t, list(FASHION_MNIST_CLASSES)),
                "category": (FASHION_CATEGORY[t], tasks["category"]),
                "tone": (tone.astype(np.int64), tasks["tone"])}
    raise ValueError("Unknown demo dataset %r: use digits or fashion-mnist" % kind)


def multitask_columns(truth, noise, seed=0):
    """Per-sample field values of a multi-task demo: for each task of ``truth``
    (see :func:`multitask_truth`) the noisy label (``<task>``, noise injected
    independently per task with seed ``seed + task index``), the clean label
    (``<task>_true``) and whether it was flipped (``<task>_flipped``)."""
    import fiftyone as fo

    columns = {}
    for j, (task, (y, classes)) in enumerate(truth.items()):
        noisy, flipped = inject_noise(y, noise, len(classes), random_state=seed + j)
        columns[task] = [fo.Classification(label=classes[v]) for v in noisy]
        columns[task + "_true"] = [fo.Classification(label=classes[v]) for v in y]
        columns[task + "_flipped"] = flipped.tolist()
    return columns


def build_multitask_dataset(kind="digits", n=None, noise=0.05, name=DEFAULT_NAME, seed=0):
    """The multi-task demo dataset: real images, one noisy Classification field
    per task (``<task>``), the clean labels in ``<task>_true`` and the flips in
    ``<task>_flipped`` (for measuring; a real dataset has no such fields).
    Noise is injected independently per task (seed ``seed + task index``)."""
    import fiftyone as fo
    from PIL import Image

    from . import demo_data

    data_dir = demo_data.data_dir()
    if kind == "digits":
        filepaths, targets = demo_data.write_digits_pngs(data_dir / "digits")
    elif kind == "fashion-mnist":
        filepaths, targets = demo_data.write_fashion_mnist_pngs(
            data_dir / "fashion-mnist", n=n or 5000, random_state=seed)
    else:
        raise ValueError("Unknown demo dataset %r: use digits or fashion-mnist" % kind)
    if n is not None and n < len(filepaths):
        filepaths, targets = filepaths[:n], targets[:n]
    images = None
    if kind == "fashion-mnist":  # the tone task is measured on the written images
        images = np.stack([np.asarray(Image.open(p).convert("L")) for p in filepaths])
    truth = multitask_truth(kind, targets, images)
    if name is not None and fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name, persistent=True)
    columns = multitask_columns(truth, noise, seed)
    samples = [fo.Sample(filepath=fp, **{k: v[i] for k, v in columns.items()})
               for i, fp in enumerate(filepaths)]
    ds.add_samples(samples, progress=False)
    ds.classes = {task: list(classes) for task, (_, classes) in truth.items()}
    ds.info["label_audit_demo"] = {"source": kind, "noise_rate": noise, "seed": seed,
                                   "tasks": list(truth)}
    ds.save()
    return ds


def accept_flagged(ds, task_keys):
    """Plays a reviewer: per task, accepts the suggested label of every sample
    the task flagged, and applies it. Returns ``{task: ApplyReport}``."""
    import label_audit

    reports = {}
    for task, key in task_keys.items():
        flagged = ds.match({"%s_is_label_issue" % key: True})
        if len(flagged):
            label_audit.tag_decisions(flagged, "accept", audit_key=key)
            reports[task] = label_audit.apply_decisions(ds, audit_key=key)
    return reports


def run_multitask_pipeline(ds, model="efficientnet-lite0", batch_size=32, review=False):
    """Embeddings, multi-task label quality, (optionally a simulated review),
    and the cleaning evaluation against the clean labels."""
    import label_audit

    tasks = ds.info["label_audit_demo"]["tasks"]
    t0 = time.time()
    report = label_audit.compute_embeddings(ds, model=model, batch_size=batch_size)
    print(report.summary())
    print("Embeddings: %.1f s" % (time.time() - t0))
    t0 = time.time()
    quality = label_audit.compute_label_quality(ds, tasks, embeddings_field="embeddings")
    print(quality.summary())
    print("Label quality (%d tasks): %.1f s" % (len(tasks), time.time() - t0))
    print(multitask_precision(ds, quality.task_keys))
    if review:
        for task, rep in accept_flagged(ds, quality.task_keys).items():
            print("%s: %s" % (task, rep.summary().splitlines()[0]))
    t0 = time.time()
    table = label_audit.evaluate_cleaning(
        ds, tasks, audit_key=quality.audit_key,
        reference_fields={t: t + "_true" for t in tasks})
    print(table)
    print("Evaluation: %.1f s" % (time.time() - t0))
    return quality, table


def multitask_precision(ds, task_keys):
    """Per task: injected errors, and how many the top-#errors suspects hold."""
    lines = ["task        errors  top-#errors precision  flagged  flag precision  flag recall"]
    for task, key in task_keys.items():
        flipped = np.array(ds.values(task + "_flipped"), dtype=bool)
        score = np.array([np.nan if s is None else s
                          for s in ds.values(key + "_label_issue_score")], dtype=float)
        flags = np.array([bool(f) for f in ds.values(key + "_is_label_issue")])
        k = int(flipped.sum())
        top = np.argsort(-np.nan_to_num(score, nan=-1.0))[:k]
        lines.append("%-10s  %6d  %21.3f  %7d  %14.3f  %11.3f" % (
            task, k, flipped[top].mean() if k else float("nan"), flags.sum(),
            flipped[flags].mean() if flags.any() else float("nan"),
            flags[flipped].mean() if k else float("nan")))
    return "\n".join(lines)


def build_dataset(kind="digits", n=None, noise=0.05, name=DEFAULT_NAME, seed=0):
    """Writes the images, builds the persistent dataset, injects label noise.

    The clean label is kept in ``true_label`` (for measuring; a real dataset
    has no such field) and the noisy one in ``ground_truth``.
    """
    import fiftyone as fo

    from . import demo_data

    data_dir = demo_data.data_dir()
    if kind == "digits":
        filepaths, targets = demo_data.write_digits_pngs(data_dir / "digits")
        classes = demo_data.DIGITS_CLASSES
    elif kind == "fashion-mnist":
        filepaths, targets = demo_data.write_fashion_mnist_pngs(
            data_dir / "fashion-mnist", n=n or 5000, random_state=seed)
        classes = demo_data.FASHION_MNIST_CLASSES
    else:
        raise ValueError("Unknown demo dataset %r: use digits or fashion-mnist" % kind)
    if n is not None and n < len(filepaths):
        filepaths, targets = filepaths[:n], targets[:n]
    noisy, flipped = inject_noise(targets, noise, len(classes), random_state=seed)
    ds = demo_data.images_dataset(filepaths, noisy, classes, name=name, overwrite=True,
                                  persistent=True)
    ds.set_values("true_label", [fo.Classification(label=classes[t]) for t in targets])
    ds.set_values("label_was_flipped", flipped.tolist())
    ds.info["label_audit_demo"] = {"source": kind, "noise_rate": noise, "seed": seed}
    ds.save()
    return ds


def run_pipeline(ds, model="efficientnet-lite0", batch_size=32):
    """Runs what the pipeline offers: embeddings, then label quality if present."""
    import label_audit

    t0 = time.time()
    report = label_audit.compute_embeddings(ds, model=model, batch_size=batch_size)
    print(report.summary())
    print("Embeddings: %.1f s" % (time.time() - t0))
    try:
        compute_label_quality = label_audit.compute_label_quality
    except (AttributeError, ImportError):
        return None
    t0 = time.time()
    quality = compute_label_quality(ds, "ground_truth", embeddings_field="embeddings")
    print(quality.summary())
    print("Label quality: %.1f s" % (time.time() - t0))
    return quality


def summarize(ds):
    """Prints the dataset summary and, if scored, how well the errors rank."""
    print(ds)
    if ds.has_sample_field("audit_label_issue_score") and ds.has_sample_field("label_was_flipped"):
        flipped = np.array(ds.values("label_was_flipped"), dtype=bool)
        score = np.array(ds.values("audit_label_issue_score"), dtype=float)
        k = int(flipped.sum())
        top = np.argsort(-score)[:k]
        print("Injected label errors: %d; found in the top-%d suspects: %d (precision %.2f)"
              % (k, k, flipped[top].sum(), flipped[top].mean() if k else float("nan")))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--detection" in argv:
        from . import demo_detection

        rest = [a for a in argv if a != "--detection"]
        rest = ["--source" if a == "--dataset" else
                "--source=" + a.split("=", 1)[1] if a.startswith("--dataset=") else a
                for a in rest]
        return demo_detection.main(rest)
    parser = argparse.ArgumentParser(prog="label-audit demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-app", action="store_true", help="do not open the App")
    parser.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist"])
    parser.add_argument("--n", type=int, default=None, help="use the first N images")
    parser.add_argument("--noise", type=float, default=0.05, help="label noise rate to inject")
    parser.add_argument("--name", default=DEFAULT_NAME, help="FiftyOne dataset name")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--port", type=int, default=5151)
    parser.add_argument("--address", default="localhost")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--multitask", action="store_true",
                        help="a multi-task dataset (several label fields per image) audited "
                             "per task, with the cleaning evaluation table")
    parser.add_argument("--accept-flagged", action="store_true",
                        help="with --multitask: accept the suggested labels of the flagged "
                             "samples of every task (a simulated review) before evaluating")
    args = parser.parse_args(argv)
    if args.accept_flagged and not args.multitask:
        parser.error("--accept-flagged needs --multitask")

    from .demo_data import demo_preflight

    error = demo_preflight(args.dataset, "--dataset")
    if error:
        print("error: %s" % error, file=sys.stderr)
        return 2

    if args.multitask:
        ds = build_multitask_dataset(args.dataset, n=args.n, noise=args.noise, name=args.name,
                                     seed=args.seed)
        run_multitask_pipeline(ds, model=args.model, review=args.accept_flagged)
        print(ds)
    else:
        ds = build_dataset(args.dataset, n=args.n, noise=args.noise, name=args.name,
                           seed=args.seed)
        run_pipeline(ds, model=args.model)
        summarize(ds)
    if args.no_app:
        return 0
    from .demo_data import serve_in_app

    serve_in_app(ds, port=args.port, address=args.address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
