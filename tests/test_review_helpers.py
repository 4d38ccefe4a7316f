"""Helpers (no tests) shared by the review tests: real digits with pixel
features as embeddings (64-d, no model needed), scored once per module and
cloned per test."""

import numpy as np
import pytest


def scored_digits(digits_dir, n=200, noise=0.1, seed=1):
    import label_audit as la
    from label_audit.demo import inject_noise
    from label_audit.demo_data import DIGITS_CLASSES, images_dataset
    from sklearn.datasets import load_digits

    _, filepaths, targets = digits_dir
    X = load_digits().data[:n].astype(np.float32)
    noisy, flipped = inject_noise(targets[:n], noise, 10, random_state=seed)
    ds = images_dataset(filepaths[:n], noisy, DIGITS_CLASSES)
    ds.set_values("embeddings", list(X))
    ds.set_values("flipped", flipped.tolist())
    la.compute_label_quality(ds, "ground_truth", progress=False)
    return ds


def raw_docs(ds):
    """Every sample document, as stored, minus ``last_modified_at``."""
    return {d["_id"]: {k: v for k, v in d.items() if k != "last_modified_at"}
            for d in ds._sample_collection.find()}


def schema(ds):
    return {k: type(v).__name__ for k, v in ds.get_field_schema(flat=True).items()}


@pytest.fixture(scope="module")
def base(digits_dir):
    """Digits scored once per test module."""
    ds = scored_digits(digits_dir)
    yield ds
    ds.delete()


@pytest.fixture
def scored(base):
    """A fresh clone of ``base`` per test."""
    ds = base.clone()
    yield ds
    ds.delete()


def run_operator(name, ds, params, selected=None, **kwargs):
    """Runs label-audit's operator ``name`` on ``ds`` (``selected``: the App's
    selected sample ids); an immediate run must not fail."""
    import fiftyone.operators as foo

    ctx = dict(dataset=ds, view=ds.view(), params=params)
    if selected is not None:
        ctx["selected"] = selected
    result = foo.execute_operator("@label-audit/label-audit/" + name, ctx=ctx, **kwargs)
    if not result.delegated:
        assert result.error is None, result.error
    return result

