#!/usr/bin/env python
"""Per-stage timings and peak RSS of ``score_label_issues`` at several sizes.

    python bench/scale.py --sizes 100000x256x80 200000x2048x80 [--recall] [--tmpdir /tmp]

For every size N x d x K a synthetic float32 memmap (the speed benchmark's generator, pair
noise 5%) is written to a temporary directory, then one worker subprocess (2 BLAS/torch
threads) opens it read-only and runs the stages of ``score_label_issues`` one after the other,
exactly as the engine chains them:

    validate   validate_features (one chunked pass: finiteness / zero rows)
    oof        out_of_fold_probabilities (preprocessing / PCA fit + projection, subsample
               warm-start fit, n_folds warm-started fold fits, prediction)
    knn        kNN features (reused PCA projection) + knn_search ('auto')
    leverage   class_conditional_leverage
    finish     kNN votes, fusion, flags, confident joint / noise matrix

Printed per stage: wall seconds and the worker's peak RSS (``ru_maxrss``, which includes the
memmap pages the process holds) after the stage; then the AUPRC of ``label_issue_score`` for
the injected errors.  With ``--recall`` the kNN graph's recall@10 is measured on 1000 random
rows against an exact search.  The machine is shared: compare sizes within one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _worker(directory, recall, threads):
    import torch

    torch.set_num_threads(threads)
    from label_audit.benchmarks.metrics import auprc
    from label_audit.scoring.engine import _finish, _knn_features
    from label_audit.scoring.importance import class_conditional_leverage
    from label_audit.scoring.newton import block_preconditioner_from_probabilities
    from label_audit.scoring.neighbors import _exact_knn, _normalize_rows, knn_search
    from label_audit.scoring.probabilities import out_of_fold_probabilities, validate_features

    meta = json.load(open(os.path.join(directory, "meta.json")))
    n, d, K = meta["n"], meta["d"], meta["n_classes"]
    X = np.memmap(os.path.join(directory, "X.f32"), dtype=np.float32, mode="r", shape=(n, d))
    labels = np.load(os.path.join(directory, "labels.npy"))
    true = np.load(os.path.join(directory, "true_labels.npy"))
    params = dict(n_folds=5, k=10, random_state=0, C="auto", knn_weight="auto", knn_method="auto", max_dim=256,
                  filter_by="prune_by_noise_rate", ambiguity_margin=0.2, outlier_z=3.5, compute_importance=True)
    rows = []
    base = _rss_mib()
    t_all = time.perf_counter()

    def stage(name, t0):
        rows.append(dict(stage=name, s=time.perf_counter() - t0, peak_rss_mib=_rss_mib()))

    t0 = time.perf_counter()
    Xv = validate_features(X, n)
    stage("validate", t0)
    t0 = time.perf_counter()
    P, state = out_of_fold_probabilities(Xv, labels, n_classes=K, C="auto", random_state=0, return_state=True)
    stage("oof", t0)
    t0 = time.perf_counter()
    prep = state["preprocessor"]
    Z = state.pop("projected", None)
    if Z is not None:
        Z *= prep.scale
        Xk = Z
    else:
        Xk, _ = _knn_features(Xv, prep, 256, 0)
    nbr, dist = knn_search(Xk, 10, method="auto", random_state=0)
    stage("knn", t0)
    t0 = time.perf_counter()
    lev = class_conditional_leverage(Xk, labels, n_classes=K)
    stage("leverage", t0)
    t0 = time.perf_counter()  # as score_label_issues: for the first incremental update
    state["newton_preconditioner"] = block_preconditioner_from_probabilities(Xv, P, state, random_state=0)
    stage("precond", t0)
    t0 = time.perf_counter()
    res = _finish(labels, K, [str(c) for c in range(K)], P, None, nbr, dist, lev, state["folds"], np.arange(n),
                  params, state)
    stage("finish", t0)
    out = dict(n=n, d=d, K=K, base_rss_mib=base, total_s=time.perf_counter() - t_all, stages=rows,
               auprc=auprc(labels != true, res.label_issue_score), feature_mib=n * d * 4 / 2**20)
    if recall and n > 30_000:
        q = np.sort(np.random.default_rng(1).choice(n, 1000, replace=False))
        ref, _ = _exact_knn(_normalize_rows(Xk), 10, q, 1000)
        out["recall_at_10"] = float(np.mean([len(set(ref[i]) & set(nbr[j])) / 10 for i, j in enumerate(q)]))
    print(json.dumps(out))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["50000x256x80"], help="NxDxK")
    p.add_argument("--recall", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tmpdir", default=None)
    p.add_argument("--dir", default=None, help="reuse an existing data directory (one size)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        _worker(a.worker, a.recall, a.threads)
        return 0
    from label_audit.benchmarks.speed import write_synthetic_memmap

    env = dict(os.environ)
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[v] = str(a.threads)
    print("%-18s %-9s %8s %10s" % ("size", "stage", "wall_s", "peakMiB"))
    for size in ([None] if a.dir else a.sizes):
        with tempfile.TemporaryDirectory(prefix="label-audit-scale-", dir=a.tmpdir) as tmp:
            directory = a.dir or tmp
            if not a.dir:
                n, d, K = map(int, size.split("x"))
                write_synthetic_memmap(directory, n, d, K, "pair", 0.05, 0)
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", directory, "--threads", str(a.threads)]
            if a.recall:
                cmd.append("--recall")
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if not lines:
                print("%s failed: %s" % (size, proc.stderr.strip().splitlines()[-3:]))
                continue
            r = json.loads(lines[-1])
            tag = "%dx%dx%d" % (r["n"], r["d"], r["K"])
            for st in r["stages"]:
                print("%-18s %-9s %8.1f %10.0f" % (tag, st["stage"], st["s"], st["peak_rss_mib"]))
            extra = " recall@10=%.3f" % r["recall_at_10"] if "recall_at_10" in r else ""
            print("%-18s %-9s %8.1f %10.0f  (features %.0f MiB, base %.0f MiB, AUPRC %.4f%s)"
                  % (tag, "TOTAL", r["total_s"], max(s["peak_rss_mib"] for s in r["stages"]), r["feature_mib"],
                     r["base_rss_mib"], r["auprc"], extra), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
