"""Dimensionality reduction of embeddings: PCA fitted on a sample, applied in chunks."""

import numpy as np


class PCAReduction:
    """A fitted linear projection ``(x - mean) @ components.T``, float32.

    Attributes:
        mean: ``(d,)`` float32
        components: ``(k, d)`` float32, orthonormal rows
        explained_variance_ratio: ``(k,)`` float64
    """

    def __init__(self, mean, components, explained_variance_ratio=None):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)
        self.explained_variance_ratio = (
            None if explained_variance_ratio is None
            else np.asarray(explained_variance_ratio, dtype=np.float64)
        )

    @property
    def n_components(self):
        return self.components.shape[0]

    def transform(self, X, chunk_size=65536):
        """Projects ``X (n, d)`` to ``(n, k)`` float32, ``chunk_size`` rows at a time."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.mean.shape[0]:
            raise ValueError(
                "Expected embeddings of shape (n, %d); got %s" % (self.mean.shape[0], X.shape)
            )
        out = np.empty((X.shape[0], self.n_components), dtype=np.float32)
        ct = self.components.T
        for start in range(0, X.shape[0], chunk_size):
            block = np.asarray(X[start : start + chunk_size], dtype=np.float32)
            out[start : start + chunk_size] = (block - self.mean) @ ct
        return out

    def to_dict(self):
        return {
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "explained_variance_ratio": (
                None if self.explained_variance_ratio is None
                else self.explained_variance_ratio.tolist()
            ),
        }

    @classmethod
    def from_dict(cls, d):
        return cls(d["mean"], d["components"], d.get("explained_variance_ratio"))


def fit_pca(X, n_components, max_samples=20000, random_state=0):
    """Fits PCA on at most ``max_samples`` random rows of ``X``.

    Args:
        X: ``(n, d)`` embeddings (a float32 memmap is fine)
        n_components: output dimension; must be <= min(d, rows used)
        max_samples (20000): rows used for fitting
        random_state (0): seed for the row sample and the randomized SVD

    Returns:
        a :class:`PCAReduction`
    """
    from sklearn.decomposition import PCA

    n, d = X.shape
    n_components = int(n_components)
    rng = np.random.RandomState(random_state)
    idx = np.sort(rng.choice(n, max_samples, replace=False)) if n > max_samples else np.arange(n)
    if n_components < 1 or n_components > min(d, len(idx)):
        raise ValueError(
            "reduce_dims=%d must be between 1 and min(embedding dim %d, samples %d)"
            % (n_components, d, len(idx))
        )
    sample = np.asarray(X[idx], dtype=np.float32)
    pca = PCA(n_components=n_components, random_state=random_state)
    pca.fit(sample)
    return PCAReduction(pca.mean_, pca.components_, pca.explained_variance_ratio_)
