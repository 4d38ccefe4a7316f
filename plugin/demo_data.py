"""Real images available offline, written to disk and loaded into FiftyOne.

-   scikit-learn's digits (1,797 8x8 images, 10 classes), written as 32x32 PNGs
-   Fashion-MNIST (70,000 28x28 images, 10 classes) from Debian's package
    ``dataset-fashion-mnist`` when it is installed

The writers are plain numpy + PIL; only :func:`digits_dataset` and
:func:`images_dataset` import fiftyone.
"""

import gzip
import os
from pathlib import Path

import numpy as np

DIGITS_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]


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


def fashion_mnist_available(root=FASHION_MNIST_DIR):
    return _fashion_mnist_files(root) is not None


def _fashion_mnist_files(root):
    root = Path(root)
    if not root.is_dir():
        return None
    names = {p.name: p for p in root.rglob("*") if p.is_file()}
    out = {}
    for split, stem in (("train", "train"), ("test", "t10k")):
        img = next((names[n] for n in names if n.startswith(stem + "-images")), None)
        lab = next((names[n] for n in names if n.startswith(stem + "-labels")), None)
        if img is None or lab is None:
            return None
        out[split] = (img, lab)
    return out


def _read_idx(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split="train", root=FASHION_MNIST_DIR):
    """Loads Fashion-MNIST images ``(n, 28, 28) uint8`` and labels ``(n,)``.

    Raises:
        FileNotFoundError: if Debian's ``dataset-fashion-mnist`` is not installed
    """
    files = _fashion_mnist_files(root)
    if files is None:
        raise FileNotFoundError(
            "Fashion-MNIST not found under %s. Install it with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu)." % root
        )
    img, lab = files[split]
    return _read_idx(img), _read_idx(lab).astype(np.int64)


def write_fashion_mnist_pngs(folder, n=None, split="train", random_state=0):
    """Writes (a seeded subsample of) Fashion-MNIST as PNGs.

    Returns:
        ``(filepaths, targets)``
    """
    images, labels = load_fashion_mnist(split)
    idx = np.arange(len(labels))
    if n is not None and n < len(idx):
        idx = np.sort(np.random.RandomState(random_state).choice(idx, n, replace=False))
    paths = _write_pngs(images[idx], folder, "fmnist_%s" % split)
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
