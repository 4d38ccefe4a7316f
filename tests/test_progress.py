"""label_audit.progress: the bar follows FiftyOne's setting and appears only once work is done."""

from label_audit.progress import ProgressReporter


def test_bar_follows_fiftyone_setting_and_callback_sees_every_report(capsys, monkeypatch):
    import fiftyone as fo

    seen = []
    monkeypatch.setattr(fo.config, "show_progress_bars", False)
    with ProgressReporter(None, lambda f, label: seen.append((f, label)), desc="Test") as r:
        r(0.0, "start")
        r(0.5, "half")
        r(1.5, "over")  # clipped to 1
    assert seen == [(0.0, "start"), (0.5, "half"), (1.0, "over")]
    assert capsys.readouterr().err == ""

    monkeypatch.setattr(fo.config, "show_progress_bars", True)
    r = ProgressReporter(None, desc="Test")
    r(0.0, "checking input")
    assert r.bar is None  # a call that fails its checks prints no bar
    r(0.3, "working")
    r(0.2, "late report")  # never moves back
    assert r.bar.n == 30
    r(1.0, "done")
    r.close()
    err = capsys.readouterr().err
    assert "Test: done: 100%" in err  # (intermediate draws are rate-limited by tqdm)

    r = ProgressReporter(False, desc="Test")  # explicit False wins over the setting
    r(0.5, "working")
    assert r.bar is None
