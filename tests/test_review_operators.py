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
