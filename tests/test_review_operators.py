"""Review operators through fiftyone.operators.execute_operator (immediate and delegated)."""

import pytest

from test_review_helpers import base, raw_docs, run_operator, scored  # noqa: F401 (fixtures)

PLUGIN = "@label-audit/label-audit"


def _run(name, ds, params, selected=None, **kwargs):
    return run_operator(name, ds, dict(params, audit_key="audit"), selected=selected, **kwargs)


def test_review_operators_round_trip(scored, tmp_path):
    import label_audit as la

    ds = scored
    out = _run("find_confused_classes", ds, dict(open_class=True)).result
    assert out["class_of_interest"] in ds.distinct("ground_truth.label") and out["pairs"]
    assert _run("show_suspects", ds, dict(score="importance", n=10,
                                          classes=[out["class_of_interest"]])).result["count"] > 0
    ids = la.suspects(ds, n=8).values("id")
    before = raw_docs(ds)
    new = sorted(set("0123456789") - set(ds.select(ids[:2]).values("ground_truth.label")))[0]
    assert _run("relabel", ds, dict(label=new), selected=ids[:2]).result["num_tagged"] == 2
    _run("accept_suggested_labels", ds, {}, selected=ids[2:4])
    _run("mark_for_deletion", ds, {}, selected=ids[4:6])
    _run("mark_as_correct", ds, {}, selected=ids[6:7])
    _run("clear_decisions", ds, {}, selected=ids[7:])
    assert sum(ds.count_sample_tags().values()) == 7
    assert ds.select(ids[:2]).values("audit_decision_label") == [new, new]
    res = _run("apply_decisions", ds, dict(rescore="incremental")).result
    assert res["num_applied"] == 7 and res["rescore"] in ("full", "incremental")
    assert ds.select(ids[:2]).values("ground_truth.label") == [new, new]
    rounds = _run("cleaning_rounds", ds, {}).result
    assert "round" in rounds["summary"] and len(rounds["rounds"]) == 2
    export = _run("export_cleanset", ds, dict(output_dir=str(tmp_path))).result
    assert export["num_rows"] == 200 and export["num_excluded"] == 2
    _run("undo_decisions", ds, {})
    after = raw_docs(ds)
    # identical to before the decisions, except the decision tags and chosen classes
    for d in after.values():
        d["tags"] = [t for t in d["tags"] if not t.startswith("audit:")]
        d.pop("audit_decision_label", None)
    for d in before.values():
        d.pop("audit_decision_label", None)
    assert after == before


def test_apply_decisions_operator_delegated(scored):
    from fiftyone.operators.delegated import DelegatedOperationService

    ds = scored
    ids = ds.match({"flipped": True}).limit(5).values("id")
    _run("accept_suggested_labels", ds, {}, selected=ids)
    result = _run("apply_decisions", ds, dict(rescore="full", delegate=True),
                  request_delegation=True)
    assert result.delegated and not ds.has_field("audit_applied")  # only queued
    DelegatedOperationService().execute_queued_operations(dataset_name=ds.name)
    ds.reload()
    assert ds.count("audit_applied") == 5
    assert ds.count("audit_original_label") >= 1


def test_relabel_operator_refuses_unknown_class(scored):
    import fiftyone.operators as foo

    ids = scored.limit(2).values("id")
    before = raw_docs(scored)
    with pytest.raises(Exception, match="Invalid enum value|not one of the classes"):
        foo.execute_operator(PLUGIN + "/relabel", ctx=dict(
            dataset=scored, view=scored.view(), selected=ids,
            params=dict(audit_key="audit", label="eleven")))
    assert raw_docs(scored) == before


def _error_of(name, ds, params):
    import fiftyone.operators as foo

    try:
        result = foo.execute_operator(PLUGIN + "/" + name, ctx=dict(dataset=ds, view=ds.view(), params=params))
    except Exception as e:  # execute_operator raises ExecutionError for immediate runs
        return str(e)
    return result.error


def test_operators_without_their_inputs_say_what_is_missing(scored, dataset):
    """Run without the form (or after a form that only showed a warning): a clear message,
    not a KeyError; evaluate_cleaning falls back to the key its form offers first."""
    import fiftyone as fo

    import label_audit as la

    dataset.add_sample(fo.Sample(filepath="/tmp/x.png"))
    assert "No label field chosen" in _error_of("compute_label_quality", dataset, {})
    assert "Choose a ground-truth and a predictions field" in _error_of("compute_detection_issues", dataset, {})
    assert "Choose an output folder" in _error_of("export_cleanset", dataset, {})  # no run: the form only warned
    assert "Required property" in _error_of("export_cleanset", scored, dict(audit_key="audit"))
    la.compute_label_quality(scored, "ground_truth", audit_key="foo", progress=False)
    scored.delete_run("audit")
    assert run_operator("evaluate_cleaning", scored, {}).result["table"]  # key "foo", not "audit"


def test_panel_histogram_of_an_object_level_audit_and_a_deleted_task_run(digits_dir):
    import fiftyone as fo
    import numpy as np
    from sklearn.datasets import load_digits

    import label_audit as la
    from label_audit.operators.panel import panel_data

    _, filepaths, targets = digits_dir
    X = load_digits().data[:80].astype(np.float32)
    ds = fo.Dataset()
    try:
        ds.add_samples([fo.Sample(filepath=filepaths[i], objects=fo.Detections(detections=[
            fo.Detection(label=str(targets[2 * i + j]), bounding_box=[0.5 * j, 0, 0.5, 1],
                         embeddings=X[2 * i + j]) for j in range(2)]),
            digit=fo.Classification(label=str(targets[i])),
            parity=fo.Classification(label="even" if targets[i] % 2 == 0 else "odd"),
            embeddings=X[i]) for i in range(40)], progress=False)
        ds.add_sample_field("objects.detections.embeddings", fo.VectorField)
        la.compute_label_quality(ds, "objects", audit_key="obj", k=5, progress=False)
        assert sum(panel_data(ds, "obj")["histogram"][0]["y"]) == 80
        la.compute_label_quality(ds, ["digit", "parity"], audit_key="mt", k=5, progress=False)
        ds.delete_run("mt_parity")
        data = panel_data(ds, "mt")
        assert "run missing" in data["summary"]
    finally:
        ds.delete()


def test_deciding_on_the_whole_dataset_needs_a_confirmation(scored):
    """Nothing selected on the unfiltered dataset: one click would tag every sample."""
    import label_audit as la

    ds = scored
    assert "whole_dataset" in _error_of("mark_for_deletion", ds, dict(audit_key="audit"))  # the form's check
    assert "confirm whole_dataset=True" in _error_of("mark_for_deletion", ds, dict(audit_key="audit",
                                                                                 whole_dataset=False))
    assert not ds.count_sample_tags()
    view = la.suspects(ds, n=5)  # a filtered view (e.g. Show suspects): no confirmation needed
    import fiftyone.operators as foo

    res = foo.execute_operator(PLUGIN + "/mark_as_correct",
                               ctx=dict(dataset=ds, view=view, params=dict(audit_key="audit")))
    assert res.result["num_tagged"] == 5
    assert _run("mark_for_deletion", ds, dict(whole_dataset=True)).result["num_tagged"] == 200
