"""Real images available offline, written to disk and loaded into FiftyOne.

-   scikit-learn's digits (1,797 8x8 images, 10 classes), written as 32x32 PNGs
-   Fashion-MNIST (70,000 28x28 images, 10 classes) from Debian's package
    ``dataset-fashion-mnist`` when it is installed

The writers are plain numpy + PIL; only :func:`digits_dataset` and
:func:`images_dataset` import fiftyone.
"""

import os
from pathlib import Path

import numpy as np

from .benchmarks.datasets import (  # noqa: F401  (one reader for demo and benchmarks)
    FASHION_MNIST_CLASSES,
    fashion_mnist_available,
    load_fashion_mnist_raw,
)

DIGITS_CLASSES = [str(i) for i in range(10)]


def data_dir():
    """Where the demos write their images: ``$LABEL_AUDIT_DATA_DIR``, else
    ``~/.cache/label-audit``."""
    root = os.environ.get("LABEL_AUDIT_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "label-audit")
    return Path(root)


def _write_pngs(images, folder, prefix):
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / ("%s_%05d.png" % (prefix, i))
        if not path.exists():
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(img).save(tmp)
            os.replace(tmp, path)
        paths.append(str(path))
    return paths


def write_digits_pngs(folder, size=32):
    """Writes scikit-learn's digits as ``size x size`` grayscale PNGs.

    Existing files are reused, so calling it twice is cheap.

    Returns:
        ``(filepaths, targets)``: a list of 1,797 paths and an int array
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    scale = max(1, int(size) // 8)
    images = [
        np.asarray(Image.fromarray(im).resize((8 * scale, 8 * scale), Image.NEAREST))
        for im in images
    ]
    return _write_pngs(images, folder, "digit"), digits.target.astype(np.int64)


def write_fashion_mnist_pngs(folder, n=None, random_state=0):
    """Writes (a seeded subsample of) the 70,000 Fashion-MNIST images as PNGs.

    Raises:
        FileNotFoundError: if Debian's ``dataset-fashion-mnist`` is not installed

    Returns:
        ``(filepaths, targets)``
    """
    images, labels = load_fashion_mnist_raw()
    idx = np.arange(len(labels))
    if n is not None and n < len(idx):
        idx = np.sort(np.random.RandomState(random_state).choice(idx, n, replace=False))
    paths = _write_pngs(images[idx], folder, "fmnist")
    return paths, labels[idx]


def images_dataset(filepaths, targets, classes, name=None, label_field="ground_truth",
                   overwrite=False, persistent=False):
    """Builds a FiftyOne dataset of images with Classification labels.

    Args:
        filepaths: image paths
        targets: int class indices aligned with ``filepaths``
        classes: class names indexed by target
        name (None): dataset name; None for an unnamed temporary dataset
        overwrite (False): replace an existing dataset of that name
        persistent (False): keep the dataset after the process ends
    """
    import fiftyone as fo

    if name is not None and overwrite and fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name, persistent=persistent) if name else fo.Dataset()
    samples = [
        fo.Sample(
            filepath=fp,
            **{label_field: fo.Classification(label=classes[int(t)])},
        )
        for fp, t in zip(filepaths, targets)
    ]
    ds.add_samples(samples, progress=False)
    ds.default_classes = list(classes)
    ds.save()
    return ds


def digits_dataset(filepaths, targets, name=None, **kwargs):
    """A FiftyOne dataset of digits PNGs (see :func:`images_dataset`)."""
    return images_dataset(filepaths, targets, DIGITS_CLASSES, name=name, **kwargs)


def demo_preflight(source, option="--dataset"):
    """Checks what a demo needs before it starts: a mongod for FiftyOne (unless
    ``FIFTYONE_DATABASE_URI`` points at a running one) and, for
    ``source="fashion-mnist"``, Debian's Fashion-MNIST files.

    Returns an error message (naming what to install, and ``option`` to pick
    the other source), or None when all is there.
    """
    # the offline mongod (6.0) is FiftyOne's oldest supported version: don't nag
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        from .database import MongoDBNotFoundError, require_mongod

        try:
            require_mongod()
        except MongoDBNotFoundError as e:
            return str(e)
    if source == "fashion-mnist" and not fashion_mnist_available():
        return ("Fashion-MNIST is not installed: `sudo apt-get install dataset-fashion-mnist`, "
                "or use %s digits" % option)
    return None


def serve_in_app(view, port=5151, address="localhost"):
    """Opens ``view`` in the FiftyOne App and serves it until Ctrl-C (the demos' last step)."""
    import fiftyone as fo

    session = fo.launch_app(view, port=port, address=address, auto=False)
    print("The App is serving %r at http://%s:%d (Ctrl-C to stop)"
          % (view._dataset.name, address, port))
    session.wait(-1)

