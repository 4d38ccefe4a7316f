"""``make demo``: a persistent FiftyOne dataset of real images with injected
label errors, run through label-audit's pipeline, then opened in the App.

    python -m label_audit.demo [--no-app] [--dataset digits|fashion-mnist] [--n N]

The dataset is rebuilt from scratch on every run (same name, same seed), so
running the demo twice in a row gives the same result.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_NAME = "label-audit-demo"


def _data_dir():
    root = os.environ.get("LABEL_AUDIT_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "label-audit")
    return Path(root)


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


def build_dataset(kind="digits", n=None, noise=0.05, name=DEFAULT_NAME, seed=0):
    """Writes the images, builds the persistent dataset, injects label noise.

    The clean label is kept in ``true_label`` (for measuring; a real dataset
    has no such field) and the noisy one in ``ground_truth``.
    """
    import fiftyone as fo

    from . import demo_data

    data_dir = _data_dir()
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
    args = parser.parse_args(argv)

    # the offline mongod (6.0) is FiftyOne's oldest supported version: don't nag
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        from .database import MongoDBNotFoundError, require_mongod

        try:
            require_mongod()
        except MongoDBNotFoundError as e:
            print("error: %s" % e, file=sys.stderr)
            return 2

    if args.dataset == "fashion-mnist":
        from .demo_data import fashion_mnist_available

        if not fashion_mnist_available():
            print("error: Fashion-MNIST is not installed: `sudo apt-get install "
                  "dataset-fashion-mnist`, or use --dataset digits", file=sys.stderr)
            return 2

    import fiftyone as fo

    ds = build_dataset(args.dataset, n=args.n, noise=args.noise, name=args.name,
                       seed=args.seed)
    run_pipeline(ds, model=args.model)
    summarize(ds)
    if args.no_app:
        return 0
    session = fo.launch_app(ds, port=args.port, address=args.address, auto=False)
    print("The App is serving %r at http://%s:%d (Ctrl-C to stop)"
          % (ds.name, args.address, args.port))
    session.wait(-1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
