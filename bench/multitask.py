#!/usr/bin/env python
"""Multi-task label audit on real images with injected per-task noise.

    python bench/multitask.py [--dataset digits|fashion-mnist] [--n N] [--noise 0.1]

Builds the ``--multitask`` demo dataset (real images, one Classification field
per task, noise injected independently per task, truth kept in
``<task>_true``) in a private MongoDB, embeds the images with the offline
EfficientNet-Lite0 (``compute_embeddings``), and measures, in the same run:

1. per task, how well the ranking finds the injected errors: precision of the
   top-#errors suspects by ``<key>_label_issue_score`` and flag
   precision/recall of ``<key>_is_label_issue``; anchors on the same
   embeddings: cleanlab 2.9 self-confidence on 5-fold scikit-learn
   ``LogisticRegression`` out-of-fold probabilities, and random (= the noise
   rate);
2. the combined ranking over tasks (``max`` and ``noisy_or``) against "the
   sample has at least one wrong label";
3. ``evaluate_cleaning`` against the true labels: a 5-fold linear probe trained
   on the original, cleaned and suggested labels (and how many of those labels
   equal the truth), where "cleaned" = (a) a simulated reviewer accepted the
   suggested label of every flagged sample of every task, unchecked, and
   applied it; (b) after undoing that, a careful reviewer checked every flagged
   sample (relabel to the true class if wrong, mark ok if right).
"""

import argparse
import os
import sys
import time

import numpy as np


def _cleanlab_precision(X, given, n_classes, flipped, random_state=0):
    from cleanlab.rank import get_label_quality_scores
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(5, shuffle=True, random_state=random_state)
    P = cross_val_predict(model, X, given, cv=cv, method="predict_proba")
    quality = get_label_quality_scores(given, P, method="self_confidence")
    k = int(flipped.sum())
    top = np.argsort(quality)[:k]
    return float(flipped[top].mean())


def _oracle_review(ds, task_keys):
    """A careful reviewer: every flagged sample of every task is checked against
    the truth: relabeled to the true class if wrong, marked ok if right."""
    import label_audit as la

    reports = {}
    for t, key in task_keys.items():
        flagged = ds.match({"%s_is_label_issue" % key: True})
        ids, given, truth = flagged.values(["id", t + ".label", t + "_true.label"])
        ok = [i for i, g, y in zip(ids, given, truth) if g == y]
        if ok:
            la.tag_decisions(ds.select(ok), "ok", audit_key=key)
        for label in sorted(set(truth)):
            wrong = [i for i, g, y in zip(ids, given, truth) if g != y and y == label]
            if wrong:
                la.tag_decisions(ds.select(wrong), "relabel", label=label, audit_key=key)
        reports[t] = la.apply_decisions(ds, audit_key=key)
    return reports


def _cache_path(filepaths):
    import hashlib

    key = hashlib.sha1("\n".join(filepaths).encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser("~"), ".cache", "label-audit", "bench",
                        "multitask-efficientnet-lite0-%s.npy" % key)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist"])
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", action="store_true",
                        help="reuse the embeddings of an earlier run with the same images "
                             "(saved under ~/.cache/label-audit/bench; the embedding step is "
                             "what takes minutes on a CPU)")
    args = parser.parse_args(argv)

    from threadpoolctl import threadpool_limits

    import torch

    torch.set_num_threads(args.threads)
    from label_audit.database import use_private_mongo

    use_private_mongo()
    os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")

    import label_audit as la
    from label_audit.demo import accept_flagged, build_multitask_dataset
    from label_audit.multitask import combine_task_scores

    with threadpool_limits(args.threads):
        t0 = time.time()
        ds = build_multitask_dataset(args.dataset, n=args.n, noise=args.noise,
                                     name="label-audit-bench-multitask", seed=args.seed)
        tasks = ds.info["label_audit_demo"]["tasks"]
        print("multi-task benchmark | %s n=%d tasks=%s noise=%.2f per task seed=%d | "
              "EfficientNet-Lite0 embeddings | %d threads"
              % (args.dataset, len(ds), ",".join(tasks), args.noise, args.seed, args.threads))
        cache = _cache_path(ds.values("filepath"))
        if args.cache and os.path.exists(cache):
            ds.set_values("embeddings", list(np.load(cache)))
            print("embeddings: loaded from %s" % cache)
        else:
            la.compute_embeddings(ds, model="efficientnet-lite0", batch_size=32, num_workers=1)
            if args.cache:
                os.makedirs(os.path.dirname(cache), exist_ok=True)
                np.save(cache, np.stack(ds.values("embeddings")).astype(np.float32))
        t_embed = time.time() - t0
        t0 = time.time()
        res = la.compute_label_quality(ds, tasks, progress=False)
        t_score = time.time() - t0
        print("embeddings %.1f s, multi-task label quality %.1f s" % (t_embed, t_score))
        print(res.summary())

        X = np.stack(ds.values("embeddings")).astype(np.float32)
        print()
        print("1. per task: finding the injected errors")
        print("%-10s  %7s  %6s  %13s  %13s  %8s  %7s  %8s  %6s" % (
            "task", "classes", "errors", "P@#err (la)", "P@#err (cl-sc)", "random",
            "flagged", "flag P", "flag R"))
        any_flip = np.zeros(len(ds), bool)
        S = []
        for t in tasks:
            key = res.task_keys[t]
            classes = res.tasks[t].result.classes
            flipped = np.array(ds.values(t + "_flipped"), bool)
            any_flip |= flipped
            score = np.array(ds.values(key + "_label_issue_score"), float)
            S.append(score)
            flags = np.array(ds.values(key + "_is_label_issue"), bool)
            k = int(flipped.sum())
            top = np.argsort(-score)[:k]
            index = {c: i for i, c in enumerate(classes)}
            given = np.array([index[v] for v in ds.values(t + ".label")])
            cl = _cleanlab_precision(X, given, len(classes), flipped, args.seed)
            print("%-10s  %7d  %6d  %13.3f  %13.3f  %8.3f  %7d  %8.3f  %6.3f" % (
                t, len(classes), k, flipped[top].mean(), cl, flipped.mean(), flags.sum(),
                flipped[flags].mean() if flags.any() else float("nan"), flags[flipped].mean()))

        print()
        print("2. combined ranking vs 'at least one wrong label' (%d samples)" % any_flip.sum())
        S = np.stack(S, 1)
        k = int(any_flip.sum())
        for combine in ("max", "noisy_or"):
            comb, _ = combine_task_scores(S, combine)
            top = np.argsort(-comb)[:k]
            from sklearn.metrics import average_precision_score

            print("%-9s precision@%d %.3f  AUPRC %.3f" % (
                combine, k, any_flip[top].mean(), average_precision_score(any_flip, comb)))

        print()
        refs = {t: t + "_true" for t in tasks}
        print("3a. evaluate_cleaning against the true labels; 'cleaned' = a reviewer accepted "
              "the suggested label of every flagged sample, unchecked")
        t0 = time.time()
        reports = accept_flagged(ds, res.task_keys)
        for t, rep in reports.items():
            changes = [c for c in rep.changes if c["decision"] == "relabel"]
            truth = dict(zip(*ds.select([c["sample_id"] for c in changes]).values(
                ["id", t + "_true.label"])))
            right = sum(truth[c["sample_id"]] == c["to"] for c in changes)
            print("%-10s accepted %d suggestions: %d relabels, %d of them to the true label "
                  "(re-score: %s)" % (t, rep.num_applied, len(changes), right, rep.rescore))
        t_review = time.time() - t0
        t0 = time.time()
        table = la.evaluate_cleaning(ds, tasks, reference_fields=refs)
        t_eval = time.time() - t0
        print(table)
        print("simulated review + apply %.1f s, evaluate_cleaning %.1f s" % (t_review, t_eval))
        for key in res.task_keys.values():
            la.undo_decisions(ds, audit_key=key)

        print()
        print("3b. the same after undo; 'cleaned' = a reviewer checked every flagged sample "
              "(relabel to the true class if wrong, mark ok if right)")
        for t, rep in _oracle_review(ds, res.task_keys).items():
            print("%-10s reviewed %d flagged: %d relabeled, %d ok (re-score: %s)" % (
                t, rep.num_applied, rep.applied.get("relabel", 0), rep.applied.get("ok", 0),
                rep.rescore))
        print(la.evaluate_cleaning(ds, tasks, reference_fields=refs))
        ds.delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
