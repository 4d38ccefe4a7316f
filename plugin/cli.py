"""The ``label-audit`` command line.

    label-audit demo [--no-app] ...
    label-audit embed DATASET [--model resnet50] [--patches-field F] ...
    label-audit score DATASET LABEL_FIELD [LABEL_FIELD ...] [--embeddings-field F] [--audit-key audit]
    label-audit bench quality|speed|embeddings|detection ...
"""

import argparse
import sys


def _embed(argv):
    parser = argparse.ArgumentParser(prog="label-audit embed",
                                     description="Compute embeddings for a FiftyOne dataset")
    parser.add_argument("dataset", help="FiftyOne dataset name")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--embeddings-field", default="embeddings")
    parser.add_argument("--patches-field", default=None)
    parser.add_argument("--use-masks", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--reduce-dims", type=int, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    import fiftyone as fo

    import label_audit

    if not fo.dataset_exists(args.dataset):
        print("error: no FiftyOne dataset named %r (fiftyone datasets list)" % args.dataset,
              file=sys.stderr)
        return 2
    try:
        report = label_audit.compute_embeddings(
            fo.load_dataset(args.dataset), model=args.model,
            embeddings_field=args.embeddings_field, patches_field=args.patches_field,
            use_masks=args.use_masks, batch_size=args.batch_size,
            num_workers=args.num_workers, reduce_dims=args.reduce_dims, device=args.device)
    except ValueError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def _int_or_auto(value):
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a positive integer or 'auto'; got %r" % value) from None


def _positive_int(value):
    try:
        v = int(value)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError("expected a positive integer; got %r" % value)
    return v


def _score(argv):
    parser = argparse.ArgumentParser(prog="label-audit score",
                                     description="Compute label quality for a FiftyOne dataset")
    parser.add_argument("dataset", help="FiftyOne dataset name")
    parser.add_argument("label_field", nargs="+",
                        help="Classification, Detections or Polylines field; several "
                             "Classification fields = one task each (multi-task audit)")
    parser.add_argument("--embeddings-field", default="embeddings")
    parser.add_argument("--audit-key", default="audit")
    parser.add_argument("--n-folds", type=_positive_int, default=5)
    parser.add_argument("--n-repeats", type=_int_or_auto, default="auto",
                        help="fold assignments the out-of-fold probabilities are averaged over "
                             "(an int, or 'auto': 5 on small data down to 1 from 100k x 256 x 80)")
    parser.add_argument("--k", type=_positive_int, default=10, help="neighbours per sample")
    parser.add_argument("--model", choices=("auto", "logistic", "mlp"), default="auto",
                        help="out-of-fold model: logistic regression, a one-hidden-layer MLP, or "
                             "auto (the MLP where it predicts the given labels clearly better out "
                             "of fold; only tried up to N x d' = 10k x 256)")
    parser.add_argument("--combine", choices=("max", "noisy_or"), default="max",
                        help="multi-task: how the per-task scores combine into one ranking")
    args = parser.parse_args(argv)

    import fiftyone as fo

    import label_audit

    if not fo.dataset_exists(args.dataset):
        print("error: no FiftyOne dataset named %r (fiftyone datasets list)" % args.dataset,
              file=sys.stderr)
        return 2
    try:
        fields = args.label_field
        extra = {} if len(fields) == 1 else dict(combine=args.combine)
        results = label_audit.compute_label_quality(
            fo.load_dataset(args.dataset), fields[0] if len(fields) == 1 else fields,
            embeddings_field=args.embeddings_field, audit_key=args.audit_key,
            n_folds=args.n_folds, n_repeats=args.n_repeats, k=args.k, model=args.model, **extra)
    except ValueError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    print(results.summary())
    return 0


def _bench(argv):
    if not argv or argv[0] not in ("quality", "speed", "embeddings", "writes", "detection",
                                   "incremental"):
        print("usage: label-audit bench {quality,speed,embeddings,writes,detection,incremental} "
              "[options]",
              file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module("label_audit.benchmarks." + argv[0])
    return module.main(argv[1:])


COMMANDS = {
    "demo": lambda argv: __import__("label_audit.demo", fromlist=["main"]).main(argv),
    "embed": _embed,
    "score": _score,
    "bench": _bench,
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
