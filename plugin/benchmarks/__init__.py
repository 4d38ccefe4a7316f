"""Label-quality and speed benchmarks for label-audit.

* :mod:`label_audit.benchmarks.quality`: ``run_quality(dataset, noise, rate,
  seed, methods=None) -> dict`` and the ``label-audit bench quality`` CLI;
* :mod:`label_audit.benchmarks.speed`: ``label-audit bench speed``;
* :mod:`label_audit.benchmarks.datasets`: digits, Fashion-MNIST and
  ``make_synthetic_features``;
* :mod:`label_audit.benchmarks.noise`: uniform / pair / instance noise;
* :mod:`label_audit.benchmarks.metrics`: detection metrics.

Submodules import scikit-learn / cleanlab lazily, so importing this package
is cheap.
"""

__all__ = ["datasets", "metrics", "methods", "noise", "quality", "speed"]
