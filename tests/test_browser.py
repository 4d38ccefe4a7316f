"""End to end in a real browser: the FiftyOne App served from a subprocess,
driven with headless Chromium through Playwright.

Compute label quality -> Show suspects -> select the top suspect -> Relabel as
class -> Apply decisions -> Label audit panel -> Visualize embeddings (PCA),
each through the operator browser, checked in the database.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the pip
package ``playwright`` (the ``test`` extra); skipped otherwise. With
``LABEL_AUDIT_SCREENSHOTS=1`` it also rewrites ``docs/screenshots/*.png``.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]
N_SUSPECTS = 12
SLOW = 120_000  # ms: generous, the machines running this are small and busy

try:
    import playwright.sync_api  # noqa: F401

    _HAVE_PLAYWRIGHT = True
except ImportError:  # pragma: no cover - depends on the environment
    _HAVE_PLAYWRIGHT = False

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)),
                       reason="needs Chromium at %s (apt-get install -y chromium)" % CHROMIUM),
    pytest.mark.skipif(not _HAVE_PLAYWRIGHT,
                       reason="needs the playwright package (pip install playwright)"),
]

_SERVER = """
import sys
import fiftyone as fo

dataset = fo.load_dataset(sys.argv[1])
session = fo.launch_app(dataset, remote=True, port=int(sys.argv[2]),
                        address="127.0.0.1", auto=False)
session.wait(-1)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc):
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


@pytest.fixture
def app_dataset(digits_embeddings):
    """A *persistent* dataset (the App subprocess opens it by name): the 300
    digits with 10% label noise and their EfficientNet-Lite0 embeddings."""
    from label_audit.demo import inject_noise
    from label_audit.demo_data import DIGITS_CLASSES, images_dataset

    filepaths, targets, X = digits_embeddings
    noisy, _ = inject_noise(targets, 0.1, 10, random_state=0)
    name = "label-audit-browser-%s" % uuid.uuid4().hex[:8]
    ds = images_dataset(filepaths, noisy, DIGITS_CLASSES, name=name, persistent=True)
    ds.set_values("embeddings", list(X))
    yield ds
    if not ds.deleted:
        ds.delete()


@pytest.fixture
def app_url(app_dataset, tmp_root):
    """Serves the App in a subprocess (same env: private DB and plugins dir)."""
    port = _free_port()
    log_path = tmp_root / ("app-server-%d.log" % port)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", _SERVER, app_dataset.name, str(port)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_root),
                                start_new_session=True)
    url = "http://127.0.0.1:%d" % port
    try:
        deadline = time.time() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail("App server exited (%s):\n%s" % (proc.returncode,
                                                             log_path.read_text()[-3000:]))
            try:
                with urllib.request.urlopen(url + "/", timeout=10) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            if time.time() > deadline:
                pytest.fail("App server not answering after 240 s:\n%s"
                            % log_path.read_text()[-3000:])
            time.sleep(1)
        yield url
    finally:
        _stop(proc)


@pytest.fixture
def page(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1600, "height": 1000})
            pg.set_default_timeout(SLOW)
            yield pg
        finally:
            browser.close()


# ---------------------------------------------------------------- App helpers


def _dismiss_popovers(page, wait_ms=15_000):
    """Clicks the "Explore Enterprise" popover's Dismiss (it comes after a while)."""
    from playwright.sync_api import TimeoutError

    button = page.get_by_role("button", name="Dismiss", exact=True)
    try:
        button.first.wait_for(state="visible", timeout=wait_ms)
    except TimeoutError:
        return
    for i in range(button.count()):
        if button.nth(i).is_visible():
            button.nth(i).click()
    page.wait_for_timeout(500)


def _open_operator(page, label):
    """Opens an operator's form from the operator browser (backtick key)."""
    page.keyboard.press("`")
    page.wait_for_timeout(1000)
    page.keyboard.type(label)
    page.wait_for_timeout(1000)
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Execute", exact=True).wait_for(timeout=SLOW)
    return dialog


def _execute(page, dialog, expect):
    """Clicks Execute, waits for the result dialog showing ``expect``, returns its
    text and closes it."""
    dialog.get_by_role("button", name="Execute", exact=True).click()
    close = dialog.get_by_role("button", name="Close", exact=True)
    close.wait_for(timeout=SLOW)
    dialog.get_by_text(expect, exact=False).first.wait_for(timeout=SLOW)
    text = dialog.inner_text()
    close.click()
    dialog.wait_for(state="hidden", timeout=SLOW)
    return text


def _pick(page, dialog, current, option, index=-1):
    """Chooses ``option`` in the form's dropdown showing ``current`` (None: the
    dropdown at ``index``, default the last one)."""
    boxes = dialog.get_by_role("combobox")
    box = boxes.filter(has_text=current).first if current else boxes.nth(index)
    box.click()
    page.get_by_role("option", name=option, exact=True).click()


def _wait_until(page, condition, describe, timeout_s=SLOW / 1000):
    """Polls ``condition()`` until true; fails with ``describe()`` after ``timeout_s``."""
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            pytest.fail("timed out; the page shows:\n%s" % describe())
        page.wait_for_timeout(500)


def _grid_labels(page, n):
    tags = page.locator("[data-cy='looker'] [data-cy='tag-ground_truth']")
    page.wait_for_function(
        "n => document.querySelectorAll(\"[data-cy='looker']\").length === n", arg=n,
        timeout=SLOW)
    return tags.all_inner_texts()


def _shot(page, name):
    if os.environ.get("LABEL_AUDIT_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(1500)  # let plots and tiles finish drawing
        page.screenshot(path=str(SCREENSHOTS / name))


# ---------------------------------------------------------------------- test


def test_review_workflow_in_the_app(app_dataset, app_url, page):
    import label_audit as la

    ds = app_dataset
    t0 = time.time()
    page.goto("%s/datasets/%s" % (app_url, ds.name), timeout=SLOW)
    page.locator("[data-cy='looker']").first.wait_for(timeout=SLOW)
    _dismiss_popovers(page)

    # 1. Compute label quality: pick the label field, keep the other defaults
    dialog = _open_operator(page, "Compute label quality")
    assert dialog.locator("input[value='embeddings']").count() == 1
    assert dialog.locator("input[value='audit']").count() == 1
    _pick(page, dialog, None, "ground_truth", index=0)  # the label field (then backend)
    _execute(page, dialog, "300 samples scored")
    ds.reload()
    assert "audit" in ds.list_runs()
    assert ds.count("audit_label_issue_score") == 300

    # 2. Show suspects: the top N by label_issue_score, sorted in the grid
    dialog = _open_operator(page, "Show suspects")
    dialog.locator("input[value='25']").fill(str(N_SUSPECTS))
    _execute(page, dialog, "Shown")
    expected = la.suspects(ds, n=N_SUSPECTS)
    assert _grid_labels(page, N_SUSPECTS) == expected.values("ground_truth.label")
    page.get_by_text("%d samples" % N_SUSPECTS, exact=True).wait_for(timeout=SLOW)
    stages = page.locator("[data-cy='view-bar'] input").evaluate_all(
        "els => els.map(e => e.value)")
    assert "SortBy" in stages and "audit_label_issue_score" in stages, stages
    assert stages[stages.index("Limit") + 1] == str(N_SUSPECTS), stages
    for field in ("audit_suggested_label", "audit_label_issue_score"):
        page.locator("[data-cy='checkbox-%s']" % field).click()
    _shot(page, "suspects_grid.png")

    # 3. Select the top suspect and relabel it as its suggested class
    top = expected.first()
    old_label = top.ground_truth.label
    new_label = top["audit_suggested_label"]
    assert new_label and new_label != old_label
    page.locator("[data-cy='looker']").first.hover()
    page.locator("[data-cy='looker-checkbox-']").first.click()
    dialog = _open_operator(page, "Relabel as class")
    dialog.get_by_text("Applies to 1 selected sample(s)").wait_for(timeout=SLOW)
    _pick(page, dialog, None, new_label)
    text = _execute(page, dialog, "Tagged 1 sample(s)")
    ds.reload()
    assert ds.match_tags("audit:relabel").values("id") == [top.id]

    # 4. Apply decisions (defaults): the label is changed, a round recorded
    dialog = _open_operator(page, "Apply decisions")
    text = _execute(page, dialog, "Applied")
    assert "Applied 1 decision" in text, text
    ds.reload()
    sample = ds[top.id]
    assert sample.ground_truth.label == new_label
    assert sample["audit_original_label"] == old_label
    assert ds.count("audit_label_issue_score") == 300
    rounds = la.cleaning_rounds(ds).rounds
    assert len(rounds) == 2 and rounds[-1]["reviewed"] == 1 and rounds[-1]["fixed"] == 1

    # 5. The Label audit panel shows the rounds; with a second run on the dataset its
    # "Audit run" dropdown switches between them
    la.compute_label_quality(ds, "ground_truth", audit_key="second", progress=False, n_repeats=1)
    page.locator("[data-cy='new-panel-btn']").first.click()
    page.locator("[data-cy='new-panel-option-label_audit_panel']").click()
    page.get_by_text("auc_macro").first.wait_for(timeout=SLOW)
    panel = page.locator("[data-cy='panel-content-label_audit_panel']")
    panel.locator(".js-plotly-plot").or_(page.locator(".js-plotly-plot")).first.wait_for(timeout=SLOW)
    round_1 = re.compile(r"^\s*1\s+1\s+1\s", re.M)  # round 1: 1 reviewed, 1 fixed
    assert round_1.search(panel.inner_text()), panel.inner_text()
    points = panel.locator(".js-plotly-plot .scatterlayer .point")
    _wait_until(page, lambda: points.count() == 2, lambda: "%d AUC points" % points.count())
    _shot(page, "label_audit_panel.png")
    _pick(page, panel, "audit", "second")
    # the second run has no cleaning round yet
    _wait_until(page, lambda: "No cleaning rounds yet" in panel.inner_text(), lambda: panel.inner_text())
    assert not round_1.search(panel.inner_text()), panel.inner_text()
    # ... and its plots drop the first run's points (the App merges panel data)
    _wait_until(page, lambda: points.count() == 0, lambda: "%d AUC points" % points.count())
    _pick(page, panel, "second", "audit")
    _wait_until(page, lambda: round_1.search(panel.inner_text()), lambda: panel.inner_text())
    _wait_until(page, lambda: points.count() == 2, lambda: "%d AUC points" % points.count())
    page.locator("[data-cy='panel-tab-label_audit_panel'] button[title='Close']").click()

    # 6. Visualize embeddings (PCA) on the whole dataset: the Embeddings panel opens
    page.locator("[data-cy='btn-clear-view-bar']").click()
    page.get_by_text("%d samples" % len(ds), exact=True).wait_for(timeout=SLOW)
    dialog = _open_operator(page, "Visualize embeddings")
    if dialog.get_by_text("Entire dataset").count():
        dialog.get_by_text("Entire dataset").click()
    _pick(page, dialog, "umap", "pca")
    _execute(page, dialog, "audit_pca")
    ds.reload()
    assert "audit_pca" in ds.list_brain_runs()
    assert ds.load_brain_results("audit_pca").points.shape == (300, 2)
    page.locator("[data-cy='panel-tab-embeddings']").wait_for(timeout=SLOW)
    _dismiss_popovers(page, wait_ms=5_000)
    page.get_by_text("audit_pca", exact=True).first.click()
    page.get_by_text("Color by").first.wait_for(timeout=SLOW)
    page.get_by_text("None", exact=True).first.click()
    page.get_by_text("ground_truth.label", exact=True).click()
    page.get_by_text("300 points").wait_for(timeout=SLOW)
    _shot(page, "embeddings_map.png")
    print("browser workflow took %.0f s" % (time.time() - t0))
