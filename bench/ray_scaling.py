#!/usr/bin/env python
"""backend="ray" against the single-process path: 1 vs 2 Ray workers, and per-shard costs.

    python bench/ray_scaling.py --n 100000 --d 256 --classes 80 --images 300

Scoring: synthetic float32 features (the speed benchmark's generator, 5% pair noise) scored
by ``score_label_issues`` in this process (the anchor: ``--threads`` torch/BLAS threads), then
with ``backend="ray"`` on a local Ray cluster of ``--cpus`` CPUs with 1 and with 2 workers
(row shards; each task reserves one CPU and uses one thread).  Every configuration runs once
untimed first on 3000 rows (Ray workers start and import torch; the anchor warms up too), then
``--repeats`` timed runs (median).  Printed: wall seconds, speedups, the wall time spent on the
driver outside Ray stages, and how far the Ray scores are from the anchor's: max |diff| of the
out-of-fold probabilities and of label_issue_score, rows whose kNN set differs (IVF list
assignments that flip on float rounding) and the max |diff| over the other rows, Spearman of
label_issue_score, number of is_label_issue flags that differ.

Per-shard costs: every Ray task reports its wall time, its rows and its peak resident memory
above its start (Linux ``VmHWM`` after a reset; it includes the shard's pages read from the
object store).  The per-stage table gives seconds and added peak MiB per 100k rows per call,
and the calls per shard, from the timed 2-worker run: the inputs of the 100M-sample plan
(README "Running on a Ray cluster").

Embeddings: ``--images`` digits PNGs (decoded from disk, EfficientNet-Lite0, 1280-d) through
``embed_images`` (this process, 1 DataLoader worker, ``--threads`` torch threads) and through
``ray_embed_images`` with 1 and 2 actors (1 CPU each); wall time includes starting the actors
and loading the model in each.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

import numpy as np


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _noisy_synthetic(n, d, K, rate, seed):
    from label_audit.benchmarks.datasets import make_synthetic_features

    X, y, meta = make_synthetic_features(n=n, d=d, n_classes=K, n_superclasses=max(1, K // 5),
                                         random_state=seed)
    rng = np.random.default_rng(seed + 1)
    noisy = y.copy()
    flip = rng.random(n) < rate
    pairs = meta["pairs"]
    noisy[flip] = [pairs[int(c)] for c in y[flip]]
    return X, noisy, flip


def _compare(a, b):
    from scipy.stats import spearmanr

    same = (np.sort(a.neighbor_indices, 1) == np.sort(b.neighbor_indices, 1)).all(1)
    diff = np.abs(a.label_issue_score - b.label_issue_score)
    return dict(
        max_diff=float(diff.max()),
        max_diff_same=float(diff[same].max()),
        max_diff_probs=float(np.abs(a.pred_probs - b.pred_probs).max()),
        spearman=float(spearmanr(a.label_issue_score, b.label_issue_score).statistic),
        flags=int((a.is_label_issue != b.is_label_issue).sum()),
        nbr_rows=int((~same).sum()),
    )


def bench_scoring(args, ray):
    from label_audit.benchmarks._common import limit_threads, table
    from label_audit.benchmarks.metrics import auprc
    from label_audit.distributed.ray_scoring import shard_features
    from label_audit.scoring import score_label_issues

    X, y, flip = _noisy_synthetic(args.n, args.d, args.classes, args.rate, args.seed)
    print("scoring | synthetic n=%d d=%d classes=%d pair noise %.0f%% | anchor: this process, %d threads"
          % (args.n, args.d, args.classes, 100 * args.rate, args.threads))
    import torch

    torch.set_num_threads(args.threads)
    rows, runners, results = [], {}, {}
    Xw, yw, _ = _noisy_synthetic(3000, args.d, args.classes, args.rate, args.seed)
    with limit_threads(args.threads):
        score_label_issues(yw, features=Xw)  # warm-up (imports, torch kernels)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            local = score_label_issues(y, features=X)
            times.append(time.perf_counter() - t0)
    t_local = statistics.median(times)
    rows.append(dict(method="single process (anchor)", workers="-", wall_s=t_local, speedup=1.0,
                     auprc=auprc(flip, local.label_issue_score)))
    for w in (1, 2):
        # warm-up: starts the workers and imports torch in them (not timed)
        score_label_issues(yw, features=shard_features(Xw, num_shards=w), backend="ray")
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            sf = shard_features(X, num_shards=w)
            res = score_label_issues(y, features=sf, backend="ray")
            times.append(time.perf_counter() - t0)
        runners[w], results[w] = sf.runner, res
        t = statistics.median(times)
        row = dict(method="ray", workers=w, wall_s=t, speedup=t_local / t,
                   auprc=auprc(flip, res.label_issue_score),
                   driver_s=t - sum(sf.runner.stage_seconds.values()))
        row.update(_compare(local, res))
        rows.append(row)
    t1 = rows[1]["wall_s"]
    for row in rows[1:]:
        row["vs_1w"] = t1 / row["wall_s"]
    print(table(rows, [("method", "method", 24, 0), ("workers", "workers", 7, 0), ("wall_s", "wall_s", 7, 2),
                       ("speedup", "vs anchor", 9, 2), ("vs_1w", "vs 1 worker", 11, 2),
                       ("driver_s", "driver-only s", 13, 2),
                       ("auprc", "AUPRC", 6, 4), ("max_diff_probs", "max|d p_oof|", 12, 6),
                       ("max_diff", "max|d score|", 12, 6), ("nbr_rows", "rows w/ other kNN", 17, 0),
                       ("max_diff_same", "max|d score| same kNN", 21, 6), ("spearman", "spearman", 9, 6),
                       ("flags", "flags differ", 12, 0)]))
    print()
    stages = list(dict.fromkeys(list(runners[1].stage_seconds) + list(runners[2].stage_seconds)))
    srows = []
    for st in stages + ["driver-only"]:
        if st == "driver-only":
            a, b = rows[1]["driver_s"], rows[2]["driver_s"]
        else:
            a, b = runners[1].stage_seconds.get(st, 0.0), runners[2].stage_seconds.get(st, 0.0)
        srows.append(dict(stage=st, w1=a, w2=b, speedup=a / b if b > 0 else float("nan")))
    print("driver wall per stage (Ray stages wait for their tasks; driver-only runs on the driver)")
    print(table(srows, [("stage", "stage", 12, 0), ("w1", "1 worker s", 10, 2), ("w2", "2 workers s", 11, 2),
                        ("speedup", "speedup", 7, 2)]))
    print()
    r = runners[2]
    per = {}
    for stage, n_rows, secs, added, peak in r.stats:
        p = per.setdefault(stage, dict(stage=stage, calls=0, rows=0, secs=0.0, mib100k=0.0, peak=0.0))
        p["calls"] += 1
        p["rows"] += n_rows
        p["secs"] += secs
        if n_rows:
            p["mib100k"] = max(p["mib100k"], added * 1e5 / n_rows)
        p["peak"] = max(p["peak"], peak)
    out = []
    for p in per.values():
        p["s100k"] = p["secs"] * 1e5 / max(p["rows"], 1)
        p["calls_per_shard"] = p["calls"] / 2.0
        out.append(p)
    print("per-shard costs (ray, 2 workers, n=%d: %d rows per shard)" % (args.n, args.n // 2))
    print(table(out, [("stage", "task stage", 14, 0), ("calls_per_shard", "calls/shard", 11, 1),
                      ("secs", "task s total", 12, 2), ("s100k", "s/100k rows/call", 16, 4),
                      ("mib100k", "added MiB/100k rows", 19, 1), ("peak", "worker peak MiB", 15, 0)]))
    P = results[2].pred_probs
    with limit_threads(args.threads):
        t0 = time.perf_counter()
        score_label_issues(y, pred_probs=P)
        t_fin = time.perf_counter() - t0
    print("driver-only s = wall minus the Ray stages: the warm-start fit on the %d-row subsample, the "
          "preconditioner, the per-class eigh, and the fusion/flags; the last alone (score_label_issues "
          "with pred_probs, no kNN vote) takes %.2f s here = %.3f s per 100k rows"
          % (min(args.n, 20000), t_fin, t_fin * 1e5 / args.n))
    print("driver peak RSS %.0f MiB (features %.0f MiB)" % (_rss_mib(), X.nbytes / 2**20))
    print()


def bench_embeddings(args, ray):
    from label_audit.benchmarks._common import table
    from label_audit.demo_data import write_digits_pngs
    from label_audit.distributed.ray_embeddings import ray_embed_images
    from label_audit.embeddings.compute import embed_images

    folder = tempfile.mkdtemp(prefix="ray-bench-digits-")
    paths, _ = write_digits_pngs(folder)
    paths = list(paths[: args.images])
    print("embeddings | %d digits PNGs, efficientnet-lite0 (1280-d), batch 32" % len(paths))
    rows = []
    t0 = time.perf_counter()
    A, _, _ = embed_images(paths, model="efficientnet-lite0", num_workers=1)
    t_local = time.perf_counter() - t0
    rows.append(dict(method="single process (anchor)", workers="-", wall_s=t_local, ips=len(paths) / t_local,
                     speedup=1.0))
    for w in (1, 2):
        t0 = time.perf_counter()
        B, _, _ = ray_embed_images(paths, model="efficientnet-lite0", num_workers=w)
        t = time.perf_counter() - t0
        rows.append(dict(method="ray", workers=w, wall_s=t, ips=len(paths) / t, speedup=t_local / t,
                         max_diff=float(np.abs(A - B).max())))
    t1 = rows[1]["wall_s"]
    for row in rows[1:]:
        row["vs_1w"] = t1 / row["wall_s"]
    print(table(rows, [("method", "method", 24, 0), ("workers", "workers", 7, 0), ("wall_s", "wall_s", 7, 2),
                       ("ips", "images/s", 8, 1), ("speedup", "vs anchor", 9, 2), ("vs_1w", "vs 1 worker", 11, 2),
                       ("max_diff", "max|d vector|", 13, 7)]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--rate", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--images", type=int, default=300, help="digits PNGs to embed (0: skip)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    p.add_argument("--threads", type=int, default=None, help="threads of the anchor (default: all cores)")
    p.add_argument("--skip-scoring", action="store_true")
    args = p.parse_args(argv)
    from label_audit.benchmarks._common import n_cores

    cores = n_cores()
    args.cpus = args.cpus or cores
    args.threads = args.threads or cores
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        print("machine: %d cores, load average %s | ray %s, local cluster of %d CPUs"
              % (cores, " ".join("%.1f" % v for v in os.getloadavg()), ray.__version__, args.cpus))
        print()
        if not args.skip_scoring:
            bench_scoring(args, ray)
        if args.images:
            bench_embeddings(args, ray)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
