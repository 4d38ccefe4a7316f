"""The plugin is discoverable, its operators run, and the package imports."""

import importlib.metadata
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "@label-audit/label-audit"


def _declared_operators():
    with open(REPO / "fiftyone.yml") as f:
        meta = yaml.safe_load(f)
    return meta["operators"] + meta.get("panels", [])


def test_package_imports_from_installed_distribution():
    import label_audit

    assert importlib.metadata.version("fiftyone-label-audit") == label_audit.__version__
    assert Path(label_audit.__file__).resolve().parent == REPO / "plugin"
    assert callable(label_audit.compute_embeddings)
    with pytest.raises(AttributeError):
        label_audit.no_such_function


def test_plugin_discovered_with_all_operators():
    import fiftyone.operators as foo
    import fiftyone.plugins as fop

    assert PLUGIN in [p.name for p in fop.list_plugins()]
    registered = {op.uri for op in foo.list_operators(enabled=True) if op.plugin_name == PLUGIN}
    declared = {"%s/%s" % (PLUGIN, name) for name in _declared_operators()}
    assert declared and registered == declared


def test_compute_embeddings_operator_round_trip(digits_dataset):
    import fiftyone.operators as foo

    view = digits_dataset.limit(20)
    result = foo.execute_operator(
        PLUGIN + "/compute_embeddings",
        ctx=dict(view=view, params=dict(model="efficientnet-lite0",
                                        embeddings_field="emb", batch_size=8)),
    )
    assert result.error is None, result.error
    assert result.result["num_embedded"] == 20
    vectors = view.values("emb")
    assert all(v is not None and v.shape == (1280,) for v in vectors)
    # samples outside the target view are untouched
    assert digits_dataset.exists("emb").count() == 20
    assert "emb" in digits_dataset.list_runs()


def test_compute_embeddings_operator_delegated(digits_dataset):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    view = digits_dataset.limit(6)
    result = foo.execute_operator(
        PLUGIN + "/compute_embeddings",
        ctx=dict(view=view, params=dict(model="efficientnet-lite0",
                                        embeddings_field="emb_d", delegate=True)),
        request_delegation=True,
    )
    assert result.delegated
    assert digits_dataset.exists("emb_d").count() == 0  # only queued so far
    DelegatedOperationService().execute_queued_operations(dataset_name=digits_dataset.name)
    digits_dataset.reload()
    assert digits_dataset.exists("emb_d").count() == 6
    v = np.stack(view.values("emb_d"))
    assert np.isfinite(v).all()


def test_operator_rejects_bad_params(digits_dataset):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    with pytest.raises(ExecutionError, match="model"):
        foo.execute_operator(
            PLUGIN + "/compute_embeddings",
            ctx=dict(view=digits_dataset.limit(2), params=dict(model="not-a-model")),
        )


@pytest.fixture
def embedded_digits(digits_embeddings):
    from label_audit.demo import inject_noise
    from label_audit.demo_data import DIGITS_CLASSES, images_dataset

    filepaths, targets, X = digits_embeddings
    noisy, _ = inject_noise(targets, 0.1, 10, random_state=0)
    ds = images_dataset(filepaths, noisy, DIGITS_CLASSES)
    ds.set_values("embeddings", list(X))
    yield ds
    ds.delete()


@pytest.mark.parametrize("delegated", [False, True])
def test_compute_label_quality_operator(embedded_digits, delegated):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService

    ds = embedded_digits
    params = dict(label_field="ground_truth", audit_key="op", delegate=delegated)
    if not delegated:
        params["n_repeats"] = 2  # the form's "Repeats"; empty = auto
        params["model"] = "mlp"  # the form's "Model"; default auto
    result = foo.execute_operator(
        PLUGIN + "/compute_label_quality",
        ctx=dict(dataset=ds, params=params),
        request_delegation=delegated,
    )
    if delegated:
        assert result.delegated and not ds.has_sample_field("op_label_issue_score")
        service = DelegatedOperationService()
        service.execute_queued_operations(dataset_name=ds.name)
        ds.reload()
        # the run's progress names the stage it reached (set_progress label)
        (op,) = service.list_operations(operator=PLUGIN + "/compute_label_quality", dataset_name=ds.name)
        status = op.status
        assert status.progress == 1.0 and status.label == "Scoring: Done"
    else:
        assert result.error is None, result.error
        assert result.result["num_scored"] == 300
    assert ds.count("op_label_issue_score") == 300
    assert "op" in ds.list_runs()
    # 300 rows: "auto" repeats 5 times
    assert ds.get_run_info("op").config.score_params["n_repeats_used"] == (5 if delegated else 2)
    # and "auto" stays on the logistic regression below 5k rows
    assert ds.get_run_info("op").config.score_params["model_used"] == ("logistic" if delegated else "mlp")


def test_compute_label_quality_operator_refuses_missing_field(embedded_digits):
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionError

    with pytest.raises(ExecutionError, match="label_field"):
        foo.execute_operator(
            PLUGIN + "/compute_label_quality",
            ctx=dict(dataset=embedded_digits, params=dict(label_field="no_such_field")),
        )


def test_visualize_operator_pca(embedded_digits):
    import fiftyone.operators as foo

    ds = embedded_digits
    result = foo.execute_operator(
        PLUGIN + "/visualize",
        ctx=dict(dataset=ds, params=dict(method="pca", brain_key="map_pca")),
    )
    assert result.error is None, result.error
    assert "map_pca" in ds.list_brain_runs()
    points = ds.load_brain_results("map_pca").points
    assert points.shape == (300, 2) and np.isfinite(points).all()


def test_visualize_refuses_missing_embeddings(embedded_digits):
    import label_audit as la

    with pytest.raises(ValueError, match="compute_embeddings"):
        la.visualize(embedded_digits, embeddings_field="nope", method="pca")
    with pytest.raises(ValueError, match="method"):
        la.visualize(embedded_digits, method="tsnee")


def test_visualize_keeps_other_brain_runs_and_the_previous_map_on_failure(embedded_digits):
    """A brain key of another kind of run is refused, not deleted; a failing call keeps the
    previous map (it is computed under a temporary key and swapped in on success)."""
    import fiftyone.brain as fob

    import label_audit as la

    ds = embedded_digits
    fob.compute_similarity(ds, embeddings="embeddings", brain_key="sim", backend="sklearn")
    with pytest.raises(ValueError, match="'sim' holds a similarity run.*not a visualization"):
        la.visualize(ds, method="pca", brain_key="sim")
    assert ds.get_brain_info("sim").config.type == "similarity"
    first = la.visualize(ds, method="pca", brain_key="map2").points
    with pytest.raises(Exception):
        la.visualize(ds, method="pca", brain_key="map2", svd_solver="no-such-solver")
    assert sorted(k for k in ds.list_brain_runs() if k.startswith("map2")) == ["map2"]
    np.testing.assert_array_equal(ds.load_brain_results("map2").points, first)
    again = la.visualize(ds, method="pca", brain_key="map2")
    assert again.key == "map2" and again.points.shape == first.shape
    ds.delete_brain_run("sim")
    ds.delete_brain_run("map2")


def test_tsne_on_small_or_low_dimensional_data(embedded_digits):
    """t-SNE: too few points is a clear error; fewer than 50 dims works (Brain's PCA step is
    capped at d) and the seed is passed (two runs give the same map)."""
    import label_audit as la

    ds = embedded_digits
    with pytest.raises(ValueError, match="t-SNE with perplexity 30 needs more than 30 points; got 20"):
        la.visualize(ds.limit(20), method="tsne", brain_key="ts_small")
    ds.set_values("emb8", [np.asarray(v[:8]) for v in ds.values("embeddings")])
    a = la.visualize(ds.limit(60), embeddings_field="emb8", method="tsne", brain_key="ts8", max_iters=250).points
    b = la.visualize(ds.limit(60), embeddings_field="emb8", method="tsne", brain_key="ts8", max_iters=250).points
    assert a.shape == (60, 2) and np.allclose(a, b)
    ds.delete_brain_run("ts8")


def test_panel_data_after_scoring_and_a_round(embedded_digits):
    import label_audit as la
    from label_audit.operators.panel import panel_data

    ds = embedded_digits
    empty = panel_data(ds)
    assert empty["n_rounds"] == 0 and empty["histogram"] == []
    la.compute_label_quality(ds, "ground_truth", progress=False)
    top = la.suspects(ds, n=5)
    la.tag_decisions(top, "accept")
    la.apply_decisions(ds, rescore="none")
    data = panel_data(ds)
    assert data["n_rounds"] >= 1
    assert sum(data["histogram"][0]["y"]) == 300
    assert len(data["auc"][0]["y"]) == data["n_rounds"]
    assert all(0.5 <= y <= 1.0 for y in data["auc"][0]["y"])
