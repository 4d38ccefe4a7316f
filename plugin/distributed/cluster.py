"""Connecting to Ray, submitting tasks with retries, and what each task reports.

Nothing here imports Ray at module import time: ``backend="ray"`` is optional
(``pip install 'fiftyone-label-audit[ray]'``).
"""

import logging
import os
import resource
import time

logger = logging.getLogger(__name__)

#: tests only: a folder where a file ``<stage>.arm`` makes the next task of that stage kill its
#: own worker process (``os._exit``) once, to exercise Ray's retries for real
FAULT_DIR_ENV = "LABEL_AUDIT_RAY_FAULT_DIR"


class RayRunError(RuntimeError):
    """A Ray worker, node or object was lost and the retries were exhausted.

    Raised before anything is written: the dataset is left as it was."""


def require_ray():
    """Imports and returns ``ray``, or raises an ImportError saying how to install it."""
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is in the test extra
        raise ImportError(
            "backend='ray' needs Ray: pip install 'fiftyone-label-audit[ray]' "
            "(ray[data]==2.60.*), on the driver and on every node of the cluster"
        ) from e
    return ray


def connect(address=None):
    """Returns ``ray``, initialised.

    A running Ray session of this process is reused as is (so callers may
    ``ray.init(...)`` themselves with their own options, e.g. a ``runtime_env``).
    Otherwise ``address=None`` starts a local Ray instance on this machine (or joins the
    cluster named by the ``RAY_ADDRESS`` environment variable), ``"auto"`` joins the
    cluster started on this node with ``ray start --head``, and ``"ray://host:10001"``
    connects through the Ray Client.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address is None and not os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return ray


def cluster_resources(ray):
    """``(cpus, gpus)`` of the connected cluster (at least one CPU)."""
    res = ray.cluster_resources()
    return max(1, int(res.get("CPU", 1))), int(res.get("GPU", 0))


def is_lost_worker(ray, exc):
    """True if ``exc`` (or an exception it wraps) is Ray losing a worker, actor, node or
    object -- as opposed to an error raised by our own code inside a task."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ray.exceptions.RayError):
            if not isinstance(exc, ray.exceptions.RayTaskError):
                return True
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ray.exceptions.RayError) and not isinstance(
                    cause, ray.exceptions.RayTaskError):
                return True
        exc = exc.__cause__ or exc.__context__
    return False


def fault_point(stage):
    """Tests only (see :data:`FAULT_DIR_ENV`): kill this worker once if ``<stage>.arm`` exists.

    The arm file is renamed to ``<stage>.fired`` first (atomic: exactly one task fires)."""
    folder = os.environ.get(FAULT_DIR_ENV)
    if not folder:
        return
    try:
        os.rename(os.path.join(folder, stage + ".arm"), os.path.join(folder, stage + ".fired"))
    except OSError:
        return
    os._exit(1)


_THREADS = None


def limit_threads(n=1):
    """Use ``n`` torch / BLAS threads in this worker process (once per process).

    A Ray task reserves ``num_cpus`` cores, but the worker inherits the driver's
    ``OMP_NUM_THREADS`` (if set); with more threads than reserved cores, parallel
    tasks oversubscribe the machine (measured 10x slower L-BFGS evaluations on 2
    cores with ``OMP_NUM_THREADS=2`` and 3 tasks)."""
    global _THREADS
    if _THREADS == n:
        return
    _THREADS = n
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover
        pass


def _rss_kib(key):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Meter:
    """Wall time and peak resident memory of one task (in the worker).

    The peak is the process's high-water mark after resetting it at the start
    (``/proc/self/clear_refs``, Linux); it includes the shared-memory pages of
    the shard the task reads from Ray's object store."""

    def __init__(self, stage, rows):
        self.stage = stage
        self.rows = int(rows)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:  # pragma: no cover
            pass
        self.rss0 = _rss_kib("VmRSS")
        self.t0 = time.perf_counter()

    def done(self):
        """``(stage, rows, seconds, added peak MiB, peak MiB)``."""
        peak = max(_rss_kib("VmHWM"), self.rss0)
        return (self.stage, self.rows, time.perf_counter() - self.t0,
                (peak - self.rss0) / 1024.0, peak / 1024.0)


class Runner:
    """Submits Ray tasks with retries, collects their :class:`Meter` reports, and
    turns lost workers into :class:`RayRunError`.

    Attributes:
        num_shards: row shards, i.e. tasks that run in parallel per stage
        max_retries: retries of a task whose worker died (Ray's ``max_retries``)
        stats: one ``(stage, rows, seconds, added_peak_mib, peak_mib)`` per task
        stage_seconds: driver wall time per stage
    """

    def __init__(self, address=None, num_shards=None, max_retries=3):
        self.ray = connect(address)
        self.address = address
        cpus, self.gpus = cluster_resources(self.ray)
        self.num_shards = max(1, int(num_shards or cpus))
        self.max_retries = int(max_retries)
        self.stats = []
        self.stage_seconds = {}

    def submit(self, fn, *args, num_returns=1):
        return fn.options(max_retries=self.max_retries, num_returns=num_returns).remote(*args)

    def get(self, refs, stage):
        """``ray.get`` that records the task reports and names the failed stage.

        Every task returns ``(value, meter report)`` (or, with several returns, its
        report last); pass those refs and get the values back."""
        ray = self.ray
        try:
            out = ray.get(refs)
        except Exception as e:
            if not is_lost_worker(ray, e):
                raise  # an error raised by our code in the task: its own type and message
            raise RayRunError(
                "The Ray %r stage failed after %d retries (%s: %s). Nothing was written to "
                "the dataset; rerun the call (everything is recomputed) or allow more "
                "retries (ray_max_retries)." % (stage, self.max_retries, type(e).__name__,
                                                str(e).splitlines()[0] if str(e) else "")
            ) from e
        values = []
        for value, report in out:
            if isinstance(report, list):  # a merge task passes on the reports of its inputs
                self.stats.extend(report)
            else:
                self.stats.append(report)
            values.append(value)
        return values

    def timed(self, stage):
        return _StageTimer(self, stage)


class _StageTimer:
    def __init__(self, runner, stage):
        self.runner = runner
        self.stage = stage

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        dt = time.perf_counter() - self.t0
        self.runner.stage_seconds[self.stage] = self.runner.stage_seconds.get(self.stage, 0.0) + dt
        if exc[0] is None:
            logger.info("ray %s: %.2f s", self.stage, dt)
