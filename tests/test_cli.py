"""The `label-audit` console script, run as a real subprocess."""

import subprocess
import sys

import numpy as np


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "label_audit.cli", *args],
                          capture_output=True, text=True, timeout=600)


def test_help_lists_commands():
    out = _cli("--help")
    assert out.returncode == 0
    for cmd in ("demo", "embed", "score", "bench"):
        assert "label-audit %s" % cmd in out.stdout


def test_unknown_dataset_is_a_clear_error():
    out = _cli("score", "no-such-dataset-xyz", "ground_truth")
    assert out.returncode == 2 and "no FiftyOne dataset named" in out.stderr


def test_bad_numbers_and_bad_fields_are_usage_errors_not_tracebacks():
    import fiftyone as fo

    out = _cli("score", "no-such-dataset-xyz", "ground_truth", "--k", "0")
    assert out.returncode == 2 and "--k: expected a positive integer; got '0'" in out.stderr
    ds = fo.Dataset()
    try:
        ds.add_sample(fo.Sample(filepath="/tmp/x.png", gt=fo.Classification(label="a")))
        ds.persistent = True  # visible to the CLI's process
        out = _cli("embed", ds.name, "--patches-field", "gt")
        assert out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    finally:
        ds.delete()


def test_score_command_writes_fields(digits_embeddings):
    import fiftyone as fo

    from label_audit.demo import inject_noise
    from label_audit.demo_data import DIGITS_CLASSES, images_dataset

    filepaths, targets, X = digits_embeddings
    noisy, _ = inject_noise(targets, 0.1, 10)
    ds = images_dataset(filepaths, noisy, DIGITS_CLASSES, name="cli-score-test",
                        overwrite=True, persistent=True)
    try:
        ds.set_values("embeddings", list(X))
        out = _cli("score", "cli-score-test", "ground_truth", "--audit-key", "cli", "--n-repeats", "2")
        assert out.returncode == 0, out.stderr[-2000:]
        assert "300 samples scored" in out.stdout
        ds.reload()
        assert ds.get_run_info("cli").config.score_params["n_repeats_used"] == 2
        ds.reload()
        scores = np.array(ds.values("cli_label_issue_score"), dtype=float)
        assert np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()
        assert ds.get_run_info("cli").config.score_params["model_used"] == "logistic"  # 300 rows < 5k
        out = _cli("score", "cli-score-test", "ground_truth", "--audit-key", "mlp", "--n-repeats", "1",
                   "--model", "mlp")
        assert out.returncode == 0, out.stderr[-2000:]
        assert "Model: mlp (held-out log-loss on the given labels: logistic" in out.stdout
        ds.reload()
        assert ds.get_run_info("mlp").config.score_params["model_used"] == "mlp"
        bad = _cli("score", "cli-score-test", "ground_truth", "--model", "svm")
        assert bad.returncode == 2 and "--model" in bad.stderr
        bad = _cli("score", "cli-score-test", "embeddings")
        assert bad.returncode == 2 and "Classification field" in bad.stderr
        bad = _cli("score", "cli-score-test", "ground_truth", "--n-repeats", "many")
        assert bad.returncode == 2 and "--n-repeats" in bad.stderr
    finally:
        ds.delete()


def test_score_command_takes_several_fields_as_a_multitask_audit(digits_dir):
    from test_multitask_helpers import multitask_digits

    ds = multitask_digits(digits_dir, n=120)
    ds.name = "cli-multitask-test"
    ds.persistent = True
    try:
        out = _cli("score", "cli-multitask-test", "digit", "parity", "--combine", "noisy_or")
        assert out.returncode == 0, out.stderr[-2000:]
        ds.reload()
        assert sorted(ds.list_runs()) == ["audit", "audit_digit", "audit_parity"]
        combined = np.array(ds.values("audit_label_issue_score"), dtype=float)
        digit = np.array(ds.values("audit_digit_label_issue_score"), dtype=float)
        parity = np.array(ds.values("audit_parity_label_issue_score"), dtype=float)
        # noisy-or of the task scores, not their max
        np.testing.assert_allclose(combined, 1 - (1 - digit) * (1 - parity), atol=1e-5)
        assert np.any(combined > np.maximum(digit, parity) + 1e-3)
    finally:
        ds.delete()
