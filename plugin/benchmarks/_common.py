"""Shared helpers: machine / thread info and fixed-width tables."""

from __future__ import annotations

import contextlib
import math
import os

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def n_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def limit_threads(threads):
    """threadpoolctl limit on BLAS/OpenMP pools (no-op if unavailable) and torch's intra-op
    threads; yields the effective BLAS thread count (or ``threads`` if unknown).

    torch is imported first so that its BLAS/OpenMP libraries are loaded, and therefore
    limited, before the limit is set (a library loaded later keeps its own thread count)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    prev = None if torch is None else torch.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover
            yield threads
            return
        with threadpool_limits(limits=threads):
            yield blas_threads(default=threads)
    finally:
        if torch is not None:
            torch.set_num_threads(prev)


def blas_threads(default=None):
    try:
        import numpy  # noqa: F401  (load BLAS so threadpoolctl sees it)
        from threadpoolctl import threadpool_info

        counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
        return max(counts) if counts else default
    except Exception:  # pragma: no cover
        return default


def fmt(v, width, prec=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        s = "-"
    elif isinstance(v, float):
        s = "%.*f" % (prec, v)
    else:
        s = str(v)
    return s.rjust(width)


def table(rows, columns):
    """``columns``: list of (key, title, width, prec); first column left-aligned."""
    lines = []
    head = []
    for j, (_, title, width, _) in enumerate(columns):
        head.append(title.ljust(width) if j == 0 else title.rjust(width))
    lines.append("  ".join(head))
    lines.append("  ".join("-" * c[2] for c in columns))
    for row in rows:
        cells = []
        for j, (key, _, width, prec) in enumerate(columns):
            v = row.get(key)
            cells.append(str(v).ljust(width) if j == 0 else fmt(v, width, prec))
        lines.append("  ".join(cells))
    return "\n".join(lines)


def json_safe(obj):
    """Recursively replace NaN with None and numpy scalars with Python ones."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    return obj
