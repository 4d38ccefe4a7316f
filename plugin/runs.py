"""Records of label-audit runs on FiftyOne datasets.

Runs use FiftyOne's generic :class:`fiftyone.core.runs.RunConfig` /
``RunResults`` (never classes defined under ``fiftyone.plugins.orgs``), so
any process can list, load and delete them::

    dataset.list_runs(method="label_audit.embeddings")
    info = dataset.get_run_info("embeddings")
    results = dataset.load_run_results("embeddings")
"""

import re

import numpy as np


def run_key_for(*parts):
    """A valid run key (letters, digits, underscores) built from ``parts``."""
    key = "_".join(str(p) for p in parts if p)
    key = re.sub(r"[^A-Za-z0-9_]", "_", key)
    if not key or key[0].isdigit():
        key = "run_" + key
    return key


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def save_run(samples, run_key, method, config, results=None, overwrite=True):
    """Registers (or replaces) a run with JSON-serializable config and results.

    Args:
        samples: the FiftyOne collection the run was computed on
        run_key: the run key
        method: a dotted method name, e.g. ``"label_audit.embeddings"``
        config: dict of run parameters
        results (None): dict of results (numpy arrays are stored as lists)
        overwrite (True): replace an existing run with that key
    """
    run_config = samples.init_run(method=method, **_jsonable(config))
    samples.register_run(run_key, run_config, overwrite=overwrite)
    if results is not None:
        run_results = samples.init_run_results(run_key, **_jsonable(results))
        samples.save_run_results(run_key, run_results, overwrite=True)
