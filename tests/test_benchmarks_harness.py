"""Fast end-to-end tests of the quality and speed harnesses (small data)."""

import json
import math

import numpy as np
import pytest

from label_audit.benchmarks import quality, speed
from label_audit.benchmarks.datasets import make_synthetic_features

threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # tiny problems: avoid BLAS thread start-up / oversubscription costs
    with threadpoolctl.threadpool_limits(1):
        yield


def test_run_quality_digits_cheap_methods():
    res = quality.run_quality("digits", "pair", 0.1, 0, methods=["knn-disagreement", "random"])
    cfg = res["config"]
    assert cfg["n"] == 1797 and cfg["n_errors"] == 180 and cfg["d"] == 64
    knn, rnd = res["results"]["knn-disagreement"], res["results"]["random"]
    assert knn["status"] == "ok" and knn["auroc"] > 0.9 and knn["auprc"] > 0.6
    assert 0.35 < rnd["auroc"] < 0.65 and rnd["fix_with"] == "true"
    assert knn["fix_with"] == "suggested"


def _tiny():
    return make_synthetic_features(n=400, d=16, n_classes=4, n_superclasses=2, random_state=0)


def test_label_audit_row_skipped_when_engine_missing(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "label_audit.scoring", None)  # import -> ImportError
    res = quality.run_quality("synthetic", "uniform", 0.1, 0, data=_tiny(),
                              methods=["label-audit", "random"])
    row = res["results"]["label-audit"]
    assert row["status"] == "skipped" and "not available" in row["note"]
    assert math.isnan(row["auprc"]) and res["results"]["random"]["status"] == "ok"
    assert "[skipped]" in quality.format_quality(res)


def test_label_audit_row_uses_engine_result(monkeypatch):
    import sys
    import types

    calls = {}

    def fake_score(labels, features=None, random_state=0):
        calls["args"] = (len(labels), features.shape, random_state)
        # a perfect oracle: score = "is this label different from the true one"
        score = (labels != true).astype(float)
        return types.SimpleNamespace(label_issue_score=score, is_label_issue=score > 0.5,
                                     suggested_label=true.copy())

    X, true, meta = _tiny()
    fake = types.ModuleType("label_audit.scoring")
    fake.score_label_issues = fake_score
    monkeypatch.setitem(sys.modules, "label_audit.scoring", fake)
    res = quality.run_quality("synthetic", "pair", 0.1, 7, data=(X, true, meta),
                              methods=["label-audit"])
    row = res["results"]["label-audit"]
    assert calls["args"] == (400, (400, 16), 7)
    assert row["status"] == "ok" and row["auprc"] == 1.0 and row["flag_f1"] == 1.0
    assert row["acc_after_fix"] == 1.0 and row["fix_with"] == "suggested"


def test_run_quality_all_anchors_on_small_synthetic():
    data = make_synthetic_features(n=1500, d=32, n_classes=8, n_superclasses=2, random_state=0)
    res = quality.run_quality("synthetic", "uniform", 0.1, 1, data=data,
                              methods=[m for m in quality.METHODS if m != "label-audit"])
    r = res["results"]
    for name, row in r.items():
        assert row["status"] == "ok", (name, row.get("note"))
    assert res["config"]["oof_seconds"] is not None
    for name in ("cleanlab-self-confidence", "cleanlab-normalized-margin", "fo-mistakenness",
                 "fo-mistakenness-logits", "knn-disagreement", "cleanlab-datalab-knn"):
        assert r[name]["auroc"] > r["random"]["auroc"], name
    fli = r["cleanlab-find-label-issues"]
    assert math.isnan(fli["auroc"]) and fli["n_flagged"] > 0 and fli["flag_recall"] > 0.3
    text = quality.format_quality(res)
    assert "dataset=synthetic" in text and "cores" in text and "BLAS threads" in text
    assert text.count("\n") >= len(r) + 2


def test_quality_main_json(capsys):
    rc = quality.main(["--dataset", "digits", "--noise", "uniform", "--rate", "0.05",
                       "--seed", "2", "--methods", "random,knn-disagreement", "--json",
                       "--threads", "1"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["noise"] == "uniform" and out["config"]["n_errors"] == 90
    assert set(out["results"]) == {"random", "knn-disagreement"}


def test_quality_main_table_and_bad_method(capsys):
    assert quality.main(["--methods", "random", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("label-quality benchmark | dataset=digits")
    assert quality.main(["--methods", "nope"]) == 2


def test_speed_subprocess_small(capsys):
    rc = speed.main(["--n", "600", "--d", "16", "--classes", "6", "--methods", "cleanlab",
                     "--threads", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    r = out["results"]["cleanlab"]
    assert r["status"] == "ok", r
    assert r["wall_s"] > 0 and r["peak_rss_mib"] >= r["base_rss_mib"] > 10
    assert r["threads"] == 1 and 0 < r["auprc"] <= 1
    assert out["config"]["n_errors"] == 30


def test_quality_suite_summary_counts_against_the_best_anchor():
    rows = quality.run_suite(seeds=[0], methods=["label-audit", "knn-disagreement", "random"],
                             suite=[("digits", "pair", 0.1, None)])
    (r,) = rows
    assert r["benchmark"] == "digits pair" and r["n"] == 1797 and r["seed"] == 0
    assert r["anchor_auprc_method"] == "knn-disagreement"  # random never counts as an anchor
    assert r["auprc_margin"] == pytest.approx(r["auprc"] - r["anchor_auprc"])
    assert r["weights"].startswith("model=logistic knn_weight=")  # digits: below the MLP's 5k rows
    text = quality.format_suite(rows)
    won = int(r["auprc_margin"] >= 0)
    assert ("AUPRC >= best anchor: %d/1" % won) in text and "digits pair" in text
