"""Speed / memory benchmark: label-audit's ``score_label_issues`` vs the
cleanlab pipeline (5-fold sklearn LogisticRegression out-of-fold
probabilities + ``cleanlab.filter.find_label_issues``).

    label-audit bench speed --n 20000 --d 256 --classes 80
    python bench/speed.py --n 100000 --d 256 --classes 80 --json

Synthetic features (``make_synthetic_features``' generator) are streamed in
chunks into a float32 ``np.memmap`` in a temporary directory, with noisy
labels beside it. Each method then runs in its own Python subprocess that
opens the memmap read-only, so peak memory is per method:

* wall time: ``time.perf_counter`` around the method call inside the worker
  (imports and data opening excluded);
* peak memory: the worker's ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
  (the kernel's resident-set high-water mark; it includes the interpreter,
  imported libraries and the memmap pages the method touched). ``base`` is
  the same figure just before the method starts (after imports), so
  ``peak - base`` is what the method added.

BLAS/OpenMP threads are limited with threadpoolctl (and the usual
``*_NUM_THREADS`` variables) in every worker; the effective count is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import _common

SPEED_METHODS = ("label-audit", "cleanlab")

COLUMNS = [
    ("method", "method", 42, 0),
    ("status", "status", 7, 0),
    ("wall_s", "wall_s", 8, 1),
    ("peak_rss_mib", "peakMiB", 8, 0),
    ("base_rss_mib", "baseMiB", 8, 0),
    ("added_rss_mib", "addMiB", 8, 0),
    ("auprc", "AUPRC", 6, 3),
    ("n_flagged", "flagged", 8, 0),
    ("threads", "thr", 4, 0),
]


def _maxrss_mib():
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if sys.platform == "darwin":  # pragma: no cover - bytes on macOS
        kb /= 1024.0
    return kb / 1024.0


# --------------------------------------------------------------------------
# worker (runs in a subprocess)
# --------------------------------------------------------------------------
def _worker(args):
    with open(os.path.join(args.dir, "meta.json")) as f:
        meta = json.load(f)
    n, d, K = meta["n"], meta["d"], meta["n_classes"]
    out = dict(method=args.worker, status="ok")
    with _common.limit_threads(args.threads) as thr:
        out["threads"] = thr
        # import the method's dependencies before the baseline reading
        if args.worker == "label-audit":
            try:
                from label_audit.scoring import score_label_issues
            except ImportError as e:
                out.update(status="skipped", note="label_audit.scoring.score_label_issues "
                                                  "not available (%s)" % e)
                print(json.dumps(out))
                return 0
        elif args.worker == "cleanlab":
            from cleanlab.filter import find_label_issues

            from .methods import oof_probs
        else:
            raise SystemExit("unknown worker method %r" % args.worker)
        X = np.memmap(os.path.join(args.dir, "X.f32"), dtype=np.float32, mode="r", shape=(n, d))
        labels = np.load(os.path.join(args.dir, "labels.npy"))
        out["base_rss_mib"] = _maxrss_mib()
        t0 = time.perf_counter()
        try:
            if args.worker == "label-audit":
                res = score_label_issues(labels, features=X, random_state=args.seed)
                scores = np.asarray(res.label_issue_score, dtype=np.float64)
                flags = getattr(res, "is_label_issue", None)
            else:
                P = oof_probs(X, labels, K, n_folds=5, random_state=args.seed)
                flags = find_label_issues(labels, P, n_jobs=1)
                # rank by self-confidence, cleanlab's default ranking
                scores = 1.0 - P[np.arange(n), labels]
        except Exception as e:
            out.update(status="error", note="%s: %s" % (type(e).__name__, e))
            print(json.dumps(out))
            return 0
        out["wall_s"] = time.perf_counter() - t0
        out["peak_rss_mib"] = _maxrss_mib()
    np.save(os.path.join(args.dir, "scores_%s.npy" % args.worker), scores)
    if flags is not None:
        np.save(os.path.join(args.dir, "flags_%s.npy" % args.worker), np.asarray(flags, bool))
    print(json.dumps(_common.json_safe(out)))
    return 0


# --------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------
def write_synthetic_memmap(directory, n, d, n_classes, noise="pair", rate=0.05, seed=0,
                           chunk_size=8192):
    """Stream synthetic features into ``directory/X.f32`` (float32 memmap) and
    save ``labels.npy`` (noisy), ``true_labels.npy`` and ``meta.json``."""
    from .datasets import SyntheticSpec
    from .noise import inject_noise

    spec = SyntheticSpec(n, d, n_classes, n_superclasses=max(1, n_classes // 5), random_state=seed)
    mm = np.memmap(os.path.join(directory, "X.f32"), dtype=np.float32, mode="w+", shape=(n, d))
    for start, stop, chunk in spec.iter_chunks(chunk_size):
        mm[start:stop] = chunk
    mm.flush()
    del mm
    noisy = inject_noise(spec.labels, noise, rate, random_state=seed, pairs=spec.pairs(),
                         n_classes=n_classes)
    np.save(os.path.join(directory, "labels.npy"), noisy)
    np.save(os.path.join(directory, "true_labels.npy"), spec.labels)
    meta = dict(n=n, d=d, n_classes=n_classes, noise=noise, rate=rate, seed=seed)
    with open(os.path.join(directory, "meta.json"), "w") as f:
        json.dump(meta, f)
    return meta


def run_speed(n=20000, d=256, n_classes=80, noise="pair", rate=0.05, seed=0, threads=2,
              methods=SPEED_METHODS, tmpdir=None, timeout=None):
    """Run each method in its own subprocess; returns a JSON-able dict."""
    from .metrics import auprc

    env = dict(os.environ)
    for var in _common.THREAD_ENV_VARS:
        env[var] = str(threads)
    results = {}
    with tempfile.TemporaryDirectory(prefix="label-audit-speed-", dir=tmpdir) as tmp:
        t0 = time.perf_counter()
        meta = write_synthetic_memmap(tmp, n, d, n_classes, noise, rate, seed)
        gen_s = time.perf_counter() - t0
        true = np.load(os.path.join(tmp, "true_labels.npy"))
        noisy = np.load(os.path.join(tmp, "labels.npy"))
        is_error = noisy != true
        for m in methods:
            cmd = [sys.executable, "-m", "label_audit.benchmarks.speed", "--worker", m,
                   "--dir", tmp, "--threads", str(threads), "--seed", str(seed)]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                      timeout=timeout)
            except subprocess.TimeoutExpired:
                results[m] = dict(status="timeout", note="> %ss" % timeout)
                continue
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                results[m] = dict(status="error", note=" | ".join(tail))
                continue
            r = json.loads(lines[-1])
            r["process_s"] = time.perf_counter() - t0
            if r.get("peak_rss_mib") is not None and r.get("base_rss_mib") is not None:
                r["added_rss_mib"] = r["peak_rss_mib"] - r["base_rss_mib"]
            sp = os.path.join(tmp, "scores_%s.npy" % m)
            if r.get("status") == "ok" and os.path.exists(sp):
                r["auprc"] = auprc(is_error, np.load(sp))
            fp = os.path.join(tmp, "flags_%s.npy" % m)
            if r.get("status") == "ok" and os.path.exists(fp):
                r["n_flagged"] = int(np.load(fp).sum())
            results[m] = r
    config = dict(
        meta, n_errors=int(is_error.sum()), cores=_common.n_cores(), threads=threads,
        data="synthetic float32 np.memmap (%.0f MiB) streamed in chunks; generation %.1f s"
             % (n * d * 4 / 2**20, gen_s),
        memory="peak RSS = worker's getrusage(RUSAGE_SELF).ru_maxrss; base = same before "
               "the method starts (after importing its entry point; libraries it imports "
               "lazily, e.g. torch, count in addMiB)",
        cleanlab_pipeline="5-fold StandardScaler+LogisticRegression(C=1, max_iter=100) OOF "
                          "probs + cleanlab.filter.find_label_issues(n_jobs=1)",
    )
    return dict(config=config, results=results)


def format_speed(res):
    c = res["config"]
    names = {"label-audit": "label-audit score_label_issues",
             "cleanlab": "cleanlab (5-fold LR + find_label_issues)"}
    head = ("speed benchmark | synthetic n=%d d=%d classes=%d noise=%s rate=%.3g seed=%d "
            "errors=%d | machine: %d cores, BLAS threads=%s"
            % (c["n"], c["d"], c["n_classes"], c["noise"], c["rate"], c["seed"],
               c["n_errors"], c["cores"], c["threads"]))
    rows = [dict(r, method=names.get(m, m)[:42]) for m, r in res["results"].items()]
    lines = [head, _common.table(rows, COLUMNS), "data: " + c["data"],
             "memory: " + c["memory"], "cleanlab: " + c["cleanlab_pipeline"],
             "AUPRC: cleanlab ranked by self-confidence"]
    for m, r in res["results"].items():
        if r.get("note"):
            lines.append("note %s: %s" % (m, r["note"]))
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(prog="label-audit bench speed",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--noise", choices=("uniform", "pair"), default="pair")
    p.add_argument("--rate", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads per worker")
    p.add_argument("--methods", default=",".join(SPEED_METHODS),
                   help="comma-separated subset of: " + ", ".join(SPEED_METHODS))
    p.add_argument("--tmpdir", default=None, help="where to put the memmap (default: system temp)")
    p.add_argument("--timeout", type=float, default=None, help="per-method timeout (s)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--dir", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return _worker(args)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in SPEED_METHODS]
    if bad:
        print("error: unknown methods %s" % bad, file=sys.stderr)
        return 2
    res = run_speed(args.n, args.d, args.classes, args.noise, args.rate, args.seed,
                    args.threads, methods, args.tmpdir, args.timeout)
    if args.json:
        print(json.dumps(_common.json_safe(res), indent=2))
    else:
        print(format_speed(res))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
