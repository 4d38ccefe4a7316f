"""Label-quality benchmark: how well do label-audit and the anchors rank and
flag injected label errors?

    label-audit bench quality --dataset digits --noise pair --rate 0.1 --seed 0
    python bench/quality.py --dataset synthetic --n 20000 --noise pair --rate 0.05 --json

Metrics (``errors`` = samples whose given label differs from the true one):

* AUROC, AUPRC (average precision) of the issue scores;
* P@err: precision of the top-#errors; P@1%: precision of the top 1%;
* R@5%: recall of errors within a review budget of the top 5%;
* flag P / R / F1 of the method's boolean flags, and #flagged / #errors;
* acc_fix: accuracy of the labels vs the truth after replacing the top-B
  ranked labels (B = #errors) with the method's suggested label
  (``fix=sugg``) or, for a method without suggestions, with the true label
  (``fix=true``, an oracle reviewer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

from . import _common
from .datasets import DATASETS, load_dataset
from .methods import METHODS, USES_OOF, Context, SkipMethod
from .metrics import evaluate
from .noise import NOISE_KINDS, inject_noise

DEFAULT_METHODS = list(METHODS)

COLUMNS = [
    ("method", "method", 26, 0),
    ("auroc", "AUROC", 6, 3),
    ("auprc", "AUPRC", 6, 3),
    ("p_at_errors", "P@err", 6, 3),
    ("p_at_1pct", "P@1%", 6, 3),
    ("r_at_5pct", "R@5%", 6, 3),
    ("flag_precision", "flagP", 6, 3),
    ("flag_recall", "flagR", 6, 3),
    ("flag_f1", "flagF1", 6, 3),
    ("flag_ratio", "#fl/#e", 6, 2),
    ("acc_after_fix", "acc_fix", 7, 4),
    ("fix", "fix", 4, 0),
    ("seconds", "sec", 7, 1),
]


def run_quality(
    dataset,
    noise,
    rate,
    seed,
    methods=None,
    n=None,
    features=None,
    d=256,
    n_classes=80,
    data=None,
):
    """Run the quality benchmark once and return a JSON-able dict.

    ``methods``: names from ``METHODS`` (default: all). ``data``: optional
    ``(X, y_true, meta)`` to bypass the loaders (``meta`` needs
    ``n_classes`` and, for pair noise, ``pairs``).

    Returns ``{"config": {...}, "results": {method: {metrics..., "status",
    "seconds", "note"}}}``; ``status`` is "ok", "skipped" or "error".
    """
    methods = list(DEFAULT_METHODS if methods is None else methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError("unknown methods %s (choose from %s)" % (unknown, ", ".join(METHODS)))

    t0 = time.perf_counter()
    if data is None:
        X, y_true, meta = load_dataset(dataset, n=n, features=features, random_state=seed,
                                       d=d, n_classes=n_classes)
    else:
        X, y_true, meta = data
    load_s = time.perf_counter() - t0
    K = int(meta["n_classes"])

    t0 = time.perf_counter()
    noisy = inject_noise(y_true, noise, rate, random_state=seed, X=X,
                         pairs=meta.get("pairs"), n_classes=K)
    noise_s = time.perf_counter() - t0
    is_error = noisy != y_true

    ctx = Context(X=X, labels=noisy, n_classes=K, random_state=seed)
    results = {}
    for name in methods:
        row = {}
        t0 = time.perf_counter()
        try:
            if name in USES_OOF:
                ctx.oof_probs  # computed once; its time is reported separately
                t0 = time.perf_counter()
            out = METHODS[name](ctx)
            secs = time.perf_counter() - t0
            row.update(evaluate(y_true, noisy, out.scores, out.flags, out.suggested,
                                random_state=seed))
            row.update(status="ok", seconds=secs, note=out.note, choices=out.choices)
        except SkipMethod as e:
            row.update(evaluate(y_true, noisy), status="skipped", seconds=None, note=str(e))
        except Exception as e:  # keep the other rows
            row.update(evaluate(y_true, noisy), status="error", seconds=None,
                       note="%s: %s" % (type(e).__name__, e),
                       traceback=traceback.format_exc(limit=5))
        results[name] = row

    config = dict(
        dataset=meta.get("name", dataset),
        features=meta.get("features"),
        noise=noise,
        rate=float(rate),
        seed=int(seed),
        n=int(len(y_true)),
        d=int(X.shape[1]),
        n_classes=K,
        n_errors=int(is_error.sum()),
        acc_before_fix=float(1.0 - is_error.mean()),
        cores=_common.n_cores(),
        blas_threads=_common.blas_threads(),
        oof_model="5-fold StandardScaler+LogisticRegression(C=1, max_iter=100)",
        oof_seconds=ctx.oof_seconds if ctx._oof is not None else None,
        load_seconds=load_s,
        noise_seconds=noise_s,
        fix_rule="top-B (B=#errors) replaced by the method's suggested label; "
                 "'true' = method has no suggestion, fixed with the true label",
        score_seconds_note="sec excludes the shared OOF probabilities (oof_seconds)",
    )
    return dict(config=config, results=results)


def format_quality(res):
    c = res["config"]
    head = (
        "label-quality benchmark | dataset=%s (%s) noise=%s rate=%.3g seed=%d | "
        "n=%d d=%d classes=%d errors=%d acc_before=%.4f | machine: %d cores, "
        "BLAS threads=%s"
        % (c["dataset"], c["features"], c["noise"], c["rate"], c["seed"], c["n"], c["d"],
           c["n_classes"], c["n_errors"], c["acc_before_fix"], c["cores"], c["blas_threads"])
    )
    rows, notes = [], []
    for name, r in res["results"].items():
        row = dict(r, method=name)
        row["fix"] = {"suggested": "sugg", "true": "true"}.get(r.get("fix_with"), None)
        if r["status"] != "ok":
            row["method"] = "%s [%s]" % (name, r["status"])
        rows.append(row)
        if r.get("note"):
            notes.append("  %s: %s" % (name, r["note"]))
    lines = [head, _common.table(rows, COLUMNS)]
    if c.get("oof_seconds") is not None:
        lines.append("shared OOF probabilities (%s): %.1f s (not in 'sec')"
                     % (c["oof_model"], c["oof_seconds"]))
    lines.append("acc_fix: top-B (B=#errors) replaced by the suggested label (fix=sugg) "
                 "or by the true label when the method has none (fix=true)")
    if notes:
        lines.append("notes:")
        lines.extend(notes)
    return "\n".join(lines)


# the nine benchmarks of the README summary: (dataset, noise, rate, n)
SUITE = [
    ("digits", "pair", 0.1, None), ("digits", "uniform", 0.1, None), ("digits", "instance", 0.1, None),
    ("fashion-mnist", "pair", 0.1, None), ("fashion-mnist", "uniform", 0.1, None),
    ("fashion-mnist", "instance", 0.1, None),
    ("synthetic", "pair", 0.05, 20000), ("synthetic", "uniform", 0.05, 10000),
    ("synthetic", "instance", 0.05, 10000),
]


def _best_anchor(results, metric):
    """(value, method) of the best anchor (every method but label-audit and random) on ``metric``."""
    vals = [(r[metric], name) for name, r in results.items()
            if name not in ("label-audit", "random") and r.get("status") == "ok"
            and r.get(metric) is not None and r[metric] == r[metric]]
    return max(vals) if vals else (float("nan"), "-")


def run_suite(seeds=(0,), methods=None, suite=SUITE, progress=None):
    """Run every benchmark of ``suite`` for every seed; returns a list of summary rows
    (label-audit vs the best anchor on AUPRC and flag F1, with label-audit's chosen weights)."""
    rows = []
    for seed in seeds:
        for dataset, noise, rate, n in suite:
            res = run_quality(dataset, noise, rate, seed, methods=methods, n=n)
            la = res["results"].get("label-audit", {})
            a_val, a_name = _best_anchor(res["results"], "auprc")
            f_val, f_name = _best_anchor(res["results"], "flag_f1")
            rows.append(dict(
                benchmark="%s %s" % (dataset, noise), rate=rate, seed=seed, n=res["config"]["n"],
                auprc=la.get("auprc"), anchor_auprc=a_val, anchor_auprc_method=a_name,
                auprc_margin=None if la.get("auprc") is None else la["auprc"] - a_val,
                flag_f1=la.get("flag_f1"), anchor_f1=f_val, anchor_f1_method=f_name,
                f1_margin=None if la.get("flag_f1") is None else la["flag_f1"] - f_val,
                weights=" ".join("%s=%s" % (k, ("%.2f" % v) if isinstance(v, float) else v)
                                 for k, v in la.get("choices", {}).items()),
                seconds=la.get("seconds"),
            ))
            if progress is not None:
                progress(rows[-1])
    return rows


SUITE_COLUMNS = [
    ("benchmark", "benchmark", 24, 0), ("seed", "seed", 4, 0), ("n", "n", 6, 0),
    ("auprc", "AUPRC", 6, 3), ("anchor_auprc", "anchor", 6, 3), ("auprc_margin", "diff", 6, 3),
    ("anchor_auprc_method", "best anchor (AUPRC)", 26, 0),
    ("flag_f1", "flagF1", 6, 3), ("anchor_f1", "anchor", 6, 3), ("f1_margin", "diff", 6, 3),
    ("anchor_f1_method", "best anchor (flag F1)", 26, 0), ("weights", "label-audit choices", 54, 0),
]


def format_suite(rows):
    lines = ["label-quality suite: label-audit vs the best anchor of the same run "
             "(machine: %d cores, BLAS threads=%s)" % (_common.n_cores(), _common.blas_threads()),
             _common.table(rows, SUITE_COLUMNS)]
    ok = [r for r in rows if r["auprc"] is not None]
    hard = [r for r in ok if not r["benchmark"].endswith("uniform")]
    lines.append("AUPRC >= best anchor: %d/%d; AUPRC >= best anchor + 0.05 on pair/instance noise: %d/%d; "
                 "flag F1 >= best anchor: %d/%d" % (
                     sum(r["auprc_margin"] >= 0 for r in ok), len(ok),
                     sum(r["auprc_margin"] >= 0.05 for r in hard), len(hard),
                     sum(r["f1_margin"] >= 0 for r in ok if r["f1_margin"] is not None), len(ok)))
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(prog="label-audit bench quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=DATASETS, default="digits")
    p.add_argument("--noise", choices=NOISE_KINDS, default="pair")
    p.add_argument("--rate", type=float, default=0.1, help="fraction of labels flipped (exact)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=None,
                   help="samples (fashion-mnist subsample, default 10000; synthetic, default 100000)")
    p.add_argument("--d", type=int, default=256, help="synthetic feature dimension")
    p.add_argument("--classes", type=int, default=80, help="synthetic classes")
    p.add_argument("--features", choices=("pixels", "efficientnet"), default=None,
                   help="digits features (default standardized pixels)")
    p.add_argument("--methods", default=None,
                   help="comma-separated subset of: " + ", ".join(METHODS))
    p.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP threads (threadpoolctl)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--suite", action="store_true",
                   help="run the nine README benchmarks (ignores --dataset/--noise/--rate/--n) and "
                        "print the summary table")
    p.add_argument("--seeds", default="0", help="with --suite: comma-separated seeds (e.g. 0,1,2)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    methods = args.methods.split(",") if args.methods else None
    if args.suite:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]

        def progress(r):
            if not args.json:
                print("  done: %s seed %d (AUPRC %.3f vs %.3f)" % (
                    r["benchmark"], r["seed"], r["auprc"] or float("nan"), r["anchor_auprc"]),
                    file=sys.stderr, flush=True)

        try:
            with _common.limit_threads(args.threads):
                rows = run_suite(seeds, methods=methods, progress=progress)
                text = json.dumps(_common.json_safe(rows), indent=2) if args.json else format_suite(rows)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            print("error: %s" % e, file=sys.stderr)
            return 2
        print(text)
        return 0
    try:
        with _common.limit_threads(args.threads):
            res = run_quality(args.dataset, args.noise, args.rate, args.seed, methods=methods,
                              n=args.n, features=args.features, d=args.d, n_classes=args.classes)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_common.json_safe(res), indent=2))
    else:
        print(format_quality(res))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
