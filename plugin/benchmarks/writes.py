"""``label-audit bench writes``: writing per-sample scores to FiftyOne.

Times label-audit's bulk writer (:func:`label_audit.writes.write_rows`, the
11 score fields of ``compute_label_quality`` in one pass, with its backup
read for rollback) against FiftyOne Brain's ``compute_mistakenness`` (which
computes and writes ``mistakenness``) and FiftyOne's ``set_values`` (one call
per field), on the same dataset of N samples with Classification labels and
logits, in a private MongoDB.

    label-audit bench writes [--n 100000] [--json]
"""

import argparse
import json
import os
import sys
import time

import numpy as np


def run(n, n_classes=80, seed=0):
    from label_audit.database import use_private_mongo

    use_private_mongo()
    import fiftyone as fo
    import fiftyone.brain as fob

    from label_audit.quality import SCORE_FIELDS, field_names
    from label_audit.writes import write_rows

    rng = np.random.RandomState(seed)
    classes = ["class_%02d" % i for i in range(n_classes)]
    logits = rng.randn(n, n_classes).astype(np.float32)
    given = rng.randint(n_classes, size=n)
    p = np.exp(logits - logits.max(1, keepdims=True))
    conf = (p / p.sum(1, keepdims=True)).max(1)
    t0 = time.perf_counter()
    ds = fo.Dataset()
    ds.add_samples(
        [fo.Sample(filepath="/data/img_%07d.jpg" % i,
                   ground_truth=fo.Classification(label=classes[given[i]]),
                   predictions=fo.Classification(label=classes[int(logits[i].argmax())],
                                                 confidence=float(conf[i]),
                                                 logits=logits[i]))
         for i in range(n)], progress=False)
    build_s = time.perf_counter() - t0
    ids = ds.values("id")
    names = field_names("audit")
    columns = {}
    for name, kind in SCORE_FIELDS:
        if kind == "float":
            vals = rng.rand(n).tolist()
        elif kind == "bool":
            vals = (rng.rand(n) < 0.05).tolist()
        else:
            vals = [classes[i] for i in rng.randint(n_classes, size=n)]
        columns[names[name]] = (kind, vals)

    rows = []
    t0 = time.perf_counter()
    fob.compute_mistakenness(ds, "predictions", label_field="ground_truth",
                             mistakenness_field="mistakenness", progress=False)
    rows.append(("fiftyone-brain compute_mistakenness (1 field)", 1,
                 time.perf_counter() - t0))
    t0 = time.perf_counter()
    for name, (_, vals) in columns.items():
        ds.set_values("sv_" + name, vals)
    rows.append(("fiftyone set_values, one call per field", len(columns),
                 time.perf_counter() - t0))
    t0 = time.perf_counter()
    write_rows(ds, columns, ids, ids)
    rows.append(("label-audit write_rows (one bulk pass + backup)", len(columns),
                 time.perf_counter() - t0))
    # check the written values
    check = ds.values(names["label_issue_score"])
    assert np.allclose(check, columns[names["label_issue_score"]][1])
    anchor = rows[0][2]
    out = [dict(method=m, fields=f, seconds=s, samples_per_s=n / s,
                speedup_vs_mistakenness=anchor / s) for m, f, s in rows]
    return dict(n=n, classes=n_classes, build_seconds=build_s,
                cpu_count=os.cpu_count(), fiftyone=fo.__version__, rows=out)


def format_table(result):
    lines = ["Score writes: %d samples, %d classes, %d CPU cores, fiftyone %s, private mongod"
             % (result["n"], result["classes"], result["cpu_count"], result["fiftyone"]),
             "%-50s %6s %9s %11s %9s" % ("method", "fields", "seconds", "samples/s", "speedup")]
    for r in result["rows"]:
        lines.append("%-50s %6d %9.2f %11.0f %8.1fx" % (
            r["method"], r["fields"], r["seconds"], r["samples_per_s"],
            r["speedup_vs_mistakenness"]))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="label-audit bench writes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.n, args.classes)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
