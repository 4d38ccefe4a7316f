"""Helpers (no tests) shared by the multi-task and evaluation tests: real digit
PNGs with three tasks (digit, parity, magnitude; the demo's tasks), label
noise injected independently per task, the truth in ``<task>_true``, 64-d
pixel features as embeddings (no model needed); scored once per module and
cloned per test."""

import numpy as np
import pytest

TASKS = ("digit", "parity", "magnitude")


def multitask_digits(digits_dir, n=240, noise=0.12, seed=3):
    """An unscored multi-task digits dataset (non-persistent)."""
    import fiftyone as fo
    from sklearn.datasets import load_digits

    from label_audit.demo import multitask_columns, multitask_truth

    _, filepaths, targets = digits_dir
    X = load_digits().data[:n].astype(np.float32)
    truth = multitask_truth("digits", targets[:n])
    assert tuple(truth) == TASKS
    columns = multitask_columns(truth, noise, seed)
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=fp, embeddings=X[i],
                              **{k: v[i] for k, v in columns.items()})
                    for i, fp in enumerate(filepaths[:n])], progress=False)
    ds.classes = {task: list(classes) for task, (_, classes) in truth.items()}
    ds.save()
    return ds


def scored_multitask(digits_dir, **kwargs):
    import label_audit as la

    ds = multitask_digits(digits_dir, **kwargs)
    la.compute_label_quality(ds, list(TASKS), progress=False)
    return ds


@pytest.fixture(scope="module")
def mt_base(digits_dir):
    ds = scored_multitask(digits_dir)
    yield ds
    ds.delete()


@pytest.fixture
def mt(mt_base):
    """A fresh clone of the scored multi-task dataset per test (runs included)."""
    ds = mt_base.clone()
    yield ds
    ds.delete()
