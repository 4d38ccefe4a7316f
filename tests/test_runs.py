"""label_audit.runs: run records are replaced only by runs of the same kind, and a save cut
off half-way leaves the previous record as it was."""

import fiftyone as fo
import pytest

from label_audit.runs import check_run_key, save_run


@pytest.fixture()
def ds():
    d = fo.Dataset()
    d.add_samples([fo.Sample(filepath="/tmp/x%d.png" % i) for i in range(3)])
    yield d
    d.delete()


def test_save_run_replaces_a_run_of_the_same_method(ds):
    save_run(ds, "audit", "label_audit.test", dict(a=1), dict(history=[1]))
    save_run(ds, "audit", "label_audit.test", dict(a=2), dict(history=[1, 2]))
    assert ds.list_runs() == ["audit"]  # no temporary keys left behind
    assert ds.get_run_info("audit").config.a == 2
    assert ds.load_run_results("audit", cache=False).history == [1, 2]
    assert ds.load_run_results("audit").history == [1, 2]  # not a stale cached copy


def test_save_run_refuses_a_run_of_another_method(ds):
    save_run(ds, "emb", "label_audit.embeddings", dict(a=1), dict(x=[1]))
    with pytest.raises(ValueError, match=r"'emb' already holds a label_audit.embeddings run.*delete_run"):
        save_run(ds, "emb", "label_audit.label_quality", dict(a=2), dict(x=[2]))
    assert ds.get_run_info("emb").config.method == "label_audit.embeddings"
    assert ds.load_run_results("emb", cache=False).x == [1]


def test_an_interrupted_save_keeps_the_previous_record(ds, monkeypatch):
    save_run(ds, "audit_review", "label_audit.review", dict(a=1), dict(history=[1]))

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fo.Dataset, "save_run_results", boom)
    with pytest.raises(KeyboardInterrupt):
        save_run(ds, "audit_review", "label_audit.review", dict(a=2), dict(history=[1, 2]))
    monkeypatch.undo()
    assert ds.list_runs() == ["audit_review"]
    assert ds.get_run_info("audit_review").config.a == 1
    assert ds.load_run_results("audit_review", cache=False).history == [1]


def test_invalid_keys_are_refused_with_a_valid_suggestion(ds):
    with pytest.raises(ValueError, match=r"Invalid audit_key 'my-audit'.*'my_audit'"):
        check_run_key(ds, "my-audit", "label_audit.label_quality")
    check_run_key(ds, "my_audit", "label_audit.label_quality")
