"""Test isolation: a private MongoDB, a private FiftyOne home and plugins dir.

This runs before any test module imports fiftyone: it starts a throw-away
``mongod`` on a free loopback port with a temporary dbpath, points FiftyOne at
it with a unique database name, gives FiftyOne a temporary HOME (so nothing is
read from or written to the user's ``~/.fiftyone``) and a plugins dir that
links to this repository. Everything is stopped and removed at exit.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_TMP = tempfile.mkdtemp(prefix="label-audit-tests-")
_home = os.path.join(_TMP, "home")
_plugins = os.path.join(_TMP, "plugins")
os.makedirs(_home)
os.makedirs(_plugins)
os.symlink(REPO, os.path.join(_plugins, "label-audit"))

os.environ["HOME"] = _home
os.environ["FIFTYONE_PLUGINS_DIR"] = _plugins
os.environ["FIFTYONE_DEFAULT_DATASET_DIR"] = os.path.join(_TMP, "datasets")
os.environ["FIFTYONE_DATASET_ZOO_DIR"] = os.path.join(_TMP, "zoo-datasets")
os.environ["FIFTYONE_MODEL_ZOO_DIR"] = os.path.join(_TMP, "zoo-models")
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] = "false"
os.environ.setdefault("OMP_NUM_THREADS", "2")
for _key in ("FIFTYONE_DATABASE_DIR", "FIFTYONE_DATABASE_ADMIN"):
    os.environ.pop(_key, None)

from label_audit.database import PrivateMongo  # noqa: E402  (no fiftyone import)

_MONGO = PrivateMongo().start().export_env()


def _shutdown():
    try:
        import fiftyone as fo  # noqa: F401 only if it was imported

        import fiftyone.core.odm.database as fod

        fod._disconnect()
    except Exception:
        pass
    _MONGO.stop()
    shutil.rmtree(_TMP, ignore_errors=True)


atexit.register(_shutdown)


def pytest_sessionfinish(session, exitstatus):
    _shutdown()


@pytest.fixture(scope="session")
def tmp_root():
    """A session-wide temporary folder removed at exit."""
    return Path(_TMP)


@pytest.fixture(scope="session")
def digits_dir(tmp_root):
    """scikit-learn's digits written as real PNG files (8x8 upscaled to 32x32).

    Returns ``(folder, filepaths, targets)`` for all 1,797 images.
    """
    from label_audit.demo_data import write_digits_pngs

    folder = tmp_root / "digits"
    filepaths, targets = write_digits_pngs(folder)
    return folder, filepaths, targets


@pytest.fixture
def dataset():
    """An empty, non-persistent FiftyOne dataset deleted after the test."""
    import fiftyone as fo

    ds = fo.Dataset()
    yield ds
    if not ds.deleted:
        ds.delete()


@pytest.fixture
def digits_dataset(digits_dir):
    """A FiftyOne dataset of 200 digits PNGs with ``ground_truth`` labels."""
    import fiftyone as fo

    from label_audit.demo_data import digits_dataset

    _, filepaths, targets = digits_dir
    ds = digits_dataset(filepaths[:200], targets[:200], name=None)
    yield ds
    if not ds.deleted:
        ds.delete()


@pytest.fixture(scope="session")
def digits_embeddings(digits_dir):
    """EfficientNet-Lite0 embeddings of the first 300 digits (computed once).

    Returns ``(filepaths, targets, X)`` with ``X`` of shape (300, 1280) float32.
    """
    from label_audit.embeddings.compute import embed_images

    _, filepaths, targets = digits_dir
    X, errors, _ = embed_images(filepaths[:300], model="efficientnet-lite0", num_workers=1)
    assert not any(errors)
    return filepaths[:300], targets[:300], X
