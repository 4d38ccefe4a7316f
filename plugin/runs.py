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


def refuse_generated_view(samples, what):
    """Raises if ``samples`` is a patches, frames or clips view: its samples are temporary
    copies, so fields written through it would never reach the dataset."""
    if getattr(samples, "_is_generated", False):
        root = samples._root_dataset
        raise ValueError(
            "%s needs the dataset or a view of it, not a patches/frames/clips view: the samples "
            "of such a view are temporary copies, so the fields written there would never reach "
            "dataset %r. Pass the dataset (or e.g. dataset.select(...) / filter_labels(...)); "
            "label-level scores land on each object. Nothing was written" % (what, root.name))


def run_method(samples, run_key):
    """The ``method`` of the run ``run_key`` on ``samples``' dataset, or None if there is none."""
    root = samples._root_dataset
    if run_key not in root.list_runs():
        return None
    return getattr(root.get_run_info(run_key).config, "method", None)


def check_key_syntax(run_key, what="audit_key"):
    """Raises ``ValueError`` unless ``run_key`` can name a FiftyOne run (a Python identifier)."""
    if not isinstance(run_key, str) or not run_key.isidentifier():
        raise ValueError(
            "Invalid %s %r: it names a FiftyOne run and prefixes the fields written, so it "
            "must be a valid Python identifier (letters, digits, underscores; not starting "
            "with a digit), e.g. %r. Nothing was written"
            % (what, run_key, run_key_for(str(run_key))))


def check_run_key(samples, run_key, method, what="audit_key"):
    """Raises ``ValueError`` unless ``run_key`` is a valid run key that is free on
    ``samples``' dataset or already holds a run of ``method`` (which a new run
    of the same kind replaces). Call it before writing anything under the key.
    """
    check_key_syntax(run_key, what)
    existing = run_method(samples, run_key)
    if existing is not None and existing != method:
        raise ValueError(
            "%s %r already holds a %s run on dataset %r; a %s run under it would replace it. "
            "Choose another %s, or dataset.delete_run(%r) first. Nothing was written"
            % (what.capitalize(), run_key, existing, samples._root_dataset.name, method, what,
               run_key))


def _rename_run(samples, key, new_key):
    import logging

    # FiftyOne's rename() hook cannot build our generic run configs and would log a
    # warning: there is nothing to rename besides the record itself
    log = logging.getLogger("fiftyone.core.runs")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        samples.rename_run(key, new_key)
    finally:
        log.setLevel(level)


def save_run(samples, run_key, method, config, results=None, overwrite=True):
    """Registers (or replaces) a run with JSON-serializable config and results.

    The new record is written in full under a temporary key first and only then
    takes ``run_key``'s place, so an error or an interrupt (Ctrl-C) while
    saving leaves the previous record as it was (FiftyOne's own
    ``register_run(overwrite=True)`` deletes it before writing the new one).

    Args:
        samples: the FiftyOne collection the run was computed on
        run_key: the run key
        method: a dotted method name, e.g. ``"label_audit.embeddings"``
        config: dict of run parameters
        results (None): dict of results (numpy arrays are stored as lists)
        overwrite (True): replace an existing run with that key (only a run of
            the same ``method``: another kind of run is never replaced)

    Raises:
        ValueError: ``run_key`` holds a run of another method (see
            :func:`check_run_key`), or ``overwrite=False`` and it holds one
    """
    check_run_key(samples, run_key, method, what="run key")
    root = samples._root_dataset
    runs = set(root.list_runs())
    if run_key in runs and not overwrite:
        raise ValueError("Run key %r already exists on dataset %r" % (run_key, root.name))
    tmp, old = run_key + "_saving", run_key + "_replaced"
    for stale in (tmp, old):  # left by an earlier save that was cut off
        if stale in runs and stale != run_key:
            root.delete_run(stale)
    run_config = samples.init_run(method=method, **_jsonable(config))
    try:
        samples.register_run(tmp, run_config, overwrite=True)
        if results is not None:
            run_results = samples.init_run_results(tmp, **_jsonable(results))
            samples.save_run_results(tmp, run_results, overwrite=True, cache=False)
    except BaseException:
        if tmp in root.list_runs():
            root.delete_run(tmp)
        raise
    # swap: the old record is set aside (not deleted) until the new one holds the key
    if run_key in runs:
        _rename_run(root, run_key, old)
    try:
        _rename_run(root, tmp, run_key)
    except BaseException:
        if old in root.list_runs() and run_key not in root.list_runs():
            _rename_run(root, old, run_key)
        raise
    if old in root.list_runs():
        root.delete_run(old)
