"""Incremental re-scoring benchmark: ``update_label_issues`` against a full recompute.

    python bench/incremental.py [--sizes 30000x128x20,100000x256x80] [--fractions 0.01,0.001]
                                [--seeds 0,1,2] [--threads 1] [--floor] [--optimum] [--json]
    python bench/incremental.py --dataset fashion-mnist --sizes 10000 [--fractions 0.01,0.03,0.05]

``--dataset fashion-mnist``: the 10k Fashion-MNIST subsample (PCA-50 pixels, K = 10) with
``--noise`` instance-dependent noise, where ``model="auto"`` picks the MLP: the updates are then
``mlp_update="finetune"`` (the default), ``mlp_update="refit"`` and ``refit=False``.

For every size ``n x d x K`` and seed (synthetic pooled-CNN-like features, ``make_synthetic_features``,
10% uniform label noise) the data are scored once (``score_label_issues``).  For every change
fraction f, ``round(f n)`` wrong labels are fixed and ``round(f n)`` other samples removed, and

* the anchor: a full recompute ``score_label_issues(new labels[kept], X[kept],
  folds=result.fold_assignments[:, kept])``, timed in the same run;
* ``update_label_issues(result, X, new labels, changed=..., removed=...)`` with
  ``refit=True`` (the default, ``solver="auto"``: Newton-CG refit up to ``NEWTON_MAX_SIZE``,
  the subsampled-Hessian Newton refit above), ``refit=False`` (old probabilities) and, with
  ``--lbfgs``, also the solvers ``"auto"`` did not pick (``"newton"``, ``"subsampled"``,
  ``"lbfgs"``: warm-started L-BFGS, 10 iterations per fold);

and each update is compared with the anchor: max |delta label_issue_score|, Spearman rank
correlation of ``label_issue_score``, fraction of rows whose ``is_label_issue`` agrees, the
kNN weight chosen by ``knn_weight="auto"`` (update / anchor), and the AUPRC of its
``label_issue_score`` for the errors left after the change (the anchor's on the "full (anchor)"
row).

``--floor`` adds a second full recompute with ``random_state=1`` (same folds; only the
warm-start subsample and the approximate kNN index differ): how far the anchor is from
itself, i.e. the smallest disagreement any update can be expected to reach.
``--optimum`` adds the exact optimum of the anchor's objective (its fold models refined by
L-BFGS until the gradient is below 1e-6, at most 300 iterations per fold; slow): the column
``max|d| opt`` compares each method with it (the same kNN graph and leverage as that method).

Threads: torch and the BLAS pools are limited to ``--threads`` for every method (printed).
Times are wall-clock seconds of the calls (data generation excluded): the anchor once (after
the initial score, so its code paths are warm), every update ``--repeats`` times (median; the
review workflow calls it repeatedly in one process).  The machine may be shared: compare the
speedup column (same run), not absolute seconds across runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from . import _common

COLUMNS = [
    ("size", "n x d x K", 16, 0),
    ("seed", "seed", 4, 0),
    ("fraction", "change", 7, 4),
    ("method", "method", 22, 0),
    ("full_s", "full_s", 7, 1),
    ("update_s", "update_s", 8, 2),
    ("speedup", "speedup", 7, 1),
    ("max_d", "max|d|", 6, 3),
    ("spearman", "Spearman", 8, 4),
    ("flags_agree", "flags", 6, 4),
    ("max_d_opt", "max|d| opt", 10, 3),
    ("knn_w", "kNN w", 9, 0),
    ("auprc", "AUPRC", 6, 4),
]


def parse_size(text, dataset="synthetic"):
    """``"n x d x K"`` -> (n, d, K); for fashion-mnist ``"n"`` (d and K come from the data)."""
    parts = [int(v) for v in text.lower().split("x")]
    if dataset == "fashion-mnist":
        return parts[0], None, None
    n, d, k = parts
    return n, d, k


def make_change(y_true, y_noisy, fraction, rng):
    """Fix ``round(fraction n)`` wrong labels and remove as many other samples.

    Returns (new labels (N,), changed indices, removed indices, kept indices)."""
    n = y_noisy.shape[0]
    m = max(1, int(round(fraction * n)))
    wrong = np.flatnonzero(y_noisy != y_true)
    changed = np.sort(rng.choice(wrong, min(m, wrong.size), replace=False))
    new = y_noisy.copy()
    new[changed] = y_true[changed]
    removed = np.sort(rng.choice(np.setdiff1d(np.arange(n), changed), m, replace=False))
    keep = np.setdiff1d(np.arange(n), removed)
    return new, changed, removed, keep


def compare(a, b):
    """(max |delta label_issue_score|, Spearman, fraction of equal is_label_issue)."""
    from scipy.stats import spearmanr

    d = np.abs(a.label_issue_score.astype(np.float64) - b.label_issue_score)
    rho = float(spearmanr(a.label_issue_score, b.label_issue_score)[0])
    return float(d.max()), rho, float(np.mean(a.is_label_issue == b.is_label_issue))


def converged_probabilities(features, labels, folds, state, *, max_iter=300, tol=1e-6):
    """Out-of-fold probabilities of the exact optimum of ``state``'s fold objectives: every fold
    model refined by L-BFGS (``probabilities._fit_lbfgs``) from its weights until the largest
    gradient entry is below ``tol`` (at most ``max_iter`` iterations)."""
    import torch

    from label_audit.scoring.probabilities import _fit_lbfgs, _LinearSoftmax

    prep = state["preprocessor"]
    X = np.ascontiguousarray(features, dtype=np.float32)
    if prep.folds_into_weights:
        lin = _LinearSoftmax(torch.from_numpy(X), torch.from_numpy(prep.mean),
                             torch.from_numpy((1.0 / prep.scale).astype(np.float32)))
    else:
        lin = _LinearSoftmax(torch.from_numpy(prep.transform(X)))
    yt = torch.from_numpy(np.asarray(labels, np.int64))
    K = int(state["n_classes"])
    P = np.empty((X.shape[0], K), np.float32)
    for f in range(state["coef"].shape[0]):
        tr = torch.from_numpy(np.flatnonzero(folds != f))
        W, b = _fit_lbfgs(lin, [(lin.X[tr], yt[tr], None)], int(tr.numel()), state["C"],
                          torch.from_numpy(state["coef"][f]), torch.from_numpy(state["intercept"][f]),
                          max_iter, tol)
        test = np.flatnonzero(folds == f)
        with torch.no_grad():
            P[test] = torch.softmax(lin.logits(W, b, torch.from_numpy(test)), dim=1).numpy()
    return P


def _with_probs(res, P):
    """``res`` re-finished with other model probabilities (same graph, leverage, parameters)."""
    from label_audit.scoring.engine import _finish

    params = {k: v for k, v in res.params.items() if k != "knn_weight_used"}
    return _finish(res.labels, len(res.classes), res.classes, P, None, res.neighbor_indices,
                   res.neighbor_distances, res.leverage, res.folds, res.index, params, None)


def _data(dataset, n, d, K, noise, random_state):
    """(X, clean labels, noisy labels, size text) of one benchmark case."""
    if dataset == "fashion-mnist":
        from label_audit.benchmarks.datasets import load_dataset
        from label_audit.benchmarks.noise import instance_noise

        X, y, _ = load_dataset("fashion-mnist", n=n, random_state=random_state)
        yn = instance_noise(y, noise, X=X, random_state=random_state)
        return X, y, yn, f"{X.shape[0]}x{X.shape[1]}x{int(y.max()) + 1}"
    from label_audit.benchmarks.datasets import make_synthetic_features
    from label_audit.benchmarks.noise import uniform_noise

    X, y, _ = make_synthetic_features(n=n, d=d, n_classes=K, n_superclasses=min(16, K), random_state=random_state)
    return X, y, uniform_noise(y, noise, K, random_state=random_state), f"{n}x{d}x{K}"


def _methods(result, n, lbfgs, mlp_epochs=()):
    """(name, update_label_issues kwargs) of the updates timed for ``result``."""
    from label_audit.scoring.incremental import auto_refit_solver

    if result.params.get("model_used") == "mlp":
        return ([("refit=True (mlp finetune)", {})]
                + [("mlp finetune, %d epochs" % e, dict(mlp_epochs=e)) for e in mlp_epochs]
                + [("mlp_update=refit", dict(mlp_update="refit")), ("refit=False", dict(refit=False))])
    auto = auto_refit_solver(n, result.model_state["coef"], result.params.get("n_repeats_used", 1))
    methods = [("refit=True (auto: %s)" % auto, {}), ("refit=False", dict(refit=False))]
    if lbfgs:  # the solvers "auto" did not pick
        for other in ("newton", "subsampled", "lbfgs"):
            if other != auto:
                methods.append(("refit=True %s" % other, dict(solver=other)))
    return methods


def run(sizes=((30_000, 128, 20),), fractions=(0.01, 0.001), threads=1, noise=0.1, floor=False,
        optimum=False, lbfgs=False, repeats=3, random_state=0, seeds=None, dataset="synthetic", mlp_epochs=()):
    import torch

    from label_audit.benchmarks.metrics import auprc
    from label_audit.scoring import score_label_issues, update_label_issues

    rows = []
    torch.set_num_threads(threads)
    seeds = [random_state] if seeds is None else list(seeds)
    with _common.limit_threads(threads) as blas:
        for (n, d, K), random_state in ((size, seed) for size in sizes for seed in seeds):
            X, y, yn, size = _data(dataset, n, d, K, noise, random_state)
            n = X.shape[0]
            t0 = time.perf_counter()
            result = score_label_issues(yn, X, random_state=random_state)
            rows.append(dict(size=size, seed=random_state, method="initial score", full_s=time.perf_counter() - t0))
            for frac in fractions:
                rng = np.random.default_rng([random_state, int(round(frac * 1e6))])
                new, changed, removed, keep = make_change(y, yn, frac, rng)
                t0 = time.perf_counter()
                full = score_label_issues(new[keep], X[keep], folds=result.fold_assignments[:, keep],
                                          random_state=random_state)
                t_full = time.perf_counter() - t0
                left = new[keep] != y[keep]  # the errors left after the change
                rows.append(dict(size=size, seed=random_state, fraction=frac, method="full (anchor)", full_s=t_full,
                                 auprc=auprc(left, full.label_issue_score)))
                opt = None
                if optimum:
                    opt = converged_probabilities(X[keep], new[keep], result.folds[keep], full.model_state)
                base = dict(size=size, seed=random_state, fraction=frac, full_s=t_full)
                if floor:
                    t0 = time.perf_counter()
                    other = score_label_issues(new[keep], X[keep], folds=result.fold_assignments[:, keep],
                                               random_state=random_state + 1)
                    t = time.perf_counter() - t0
                    dmax, rho, agree = compare(other, full)
                    row = dict(base, method="full, random_state+1", update_s=t, speedup=t_full / t,
                               max_d=dmax, spearman=rho, flags_agree=agree, auprc=auprc(left, other.label_issue_score),
                               knn_w="%.3f/%.3f" % (other.params["knn_weight_used"], full.params["knn_weight_used"]))
                    if opt is not None:
                        row["max_d_opt"] = compare(other, _with_probs(other, opt))[0]
                    rows.append(row)
                for name, kw in _methods(result, n, lbfgs, mlp_epochs):
                    times = []
                    for _ in range(max(1, repeats)):
                        t0 = time.perf_counter()
                        upd = update_label_issues(result, X, new, changed=changed, removed=removed, **kw)
                        times.append(time.perf_counter() - t0)
                    t = float(np.median(times))
                    dmax, rho, agree = compare(upd, full)
                    row = dict(base, method=name, update_s=t, speedup=t_full / t, max_d=dmax, spearman=rho,
                               flags_agree=agree, auprc=auprc(left, upd.label_issue_score),
                               knn_w="%.3f/%.3f" % (upd.params["knn_weight_used"], full.params["knn_weight_used"]),
                               stages={k: round(v, 3) for k, v in upd.model_state["update_info"]["seconds"].items()})
                    nw = upd.model_state["update_info"].get("newton")
                    if nw:
                        row["cg_iterations"] = nw["cg_iterations"]
                    if opt is not None:
                        row["max_d_opt"] = compare(upd, _with_probs(upd, opt))[0]
                    rows.append(row)
                if opt is not None:
                    rows.append(dict(base, method="full (anchor)", max_d_opt=compare(full, _with_probs(full, opt))[0]))
    return dict(rows=rows, threads=threads, blas_threads=blas, cores=_common.n_cores(), noise=noise,
                repeats=repeats, dataset=dataset)


def format_table(result):
    kind = "instance" if result.get("dataset") == "fashion-mnist" else "uniform"
    head = ("Incremental update vs full recompute (%s, %d%% %s noise; torch/BLAS threads %s, "
            "%d cores; update_s = median of %d runs; AUPRC: the errors left after the change)"
            % (result.get("dataset", "synthetic"), round(100 * result["noise"]), kind, result["threads"],
               result["cores"], result["repeats"]))
    return head + "\n" + _common.table(result["rows"], COLUMNS)


def _list_of(kind, what):
    """An argparse ``type`` for a comma-separated list of ``kind`` values (a clear usage error,
    not a traceback, on a bad entry)."""
    def parse(text):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError("expected comma-separated %s, got %r" % (what, text))
    return parse


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench/incremental.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("synthetic", "fashion-mnist"), default="synthetic")
    parser.add_argument("--sizes", default="30000x128x20",
                        help="comma-separated n x d x K (fashion-mnist: n, e.g. 10000)")
    parser.add_argument("--fractions", default="0.01,0.001", type=_list_of(float, "numbers"), help="comma-separated change fractions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--floor", action="store_true", help="add a second full recompute (random_state + 1)")
    parser.add_argument("--optimum", action="store_true", help="compare with the exact optimum (slow)")
    parser.add_argument("--lbfgs", action="store_true", help="also time the refit solvers 'auto' does not pick")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per update (median)")
    parser.add_argument("--mlp-epochs", default="", type=_list_of(int, "integers"),
                        help="MLP results: also time mlp_update='finetune' with these mlp_epochs (comma-separated)")
    parser.add_argument("--seeds", default="0", type=_list_of(int, "integers"), help="comma-separated seeds (data, noise, change and the scores' random_state)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(sizes=[parse_size(s, args.dataset) for s in args.sizes.split(",")], dataset=args.dataset,
                 fractions=args.fractions, threads=args.threads,
                 noise=args.noise, floor=args.floor, optimum=args.optimum, lbfgs=args.lbfgs,
                 repeats=args.repeats, seeds=args.seeds,
                 mlp_epochs=args.mlp_epochs)
    print(json.dumps(_common.json_safe(result), indent=1) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
