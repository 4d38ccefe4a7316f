"""Cleaning rounds: reviewed, fixed, fix rate and K-fold AUC after each apply.

Each :func:`label_audit.review.apply.apply_decisions` records a round (the
first one also records round 0, the baseline before any change). The AUC is
the cross-validated one-vs-rest ROC AUC of a logistic-regression probe on
the embeddings with the current labels (excluded rows left out), macro and
for the class of interest: it rises while the cleaning removes label noise
and plateaus when the remaining suspects are mostly correct.
"""

import numpy as np

from .context import ReviewContext
from .probe import auc_plateaued, cross_validated_auc
from .state import load_state, now_iso


def _current_rows(ctx):
    """Labels and embeddings of the scored rows that are not excluded."""
    ids, sids = ctx.scored_rows()
    excl = ctx.fields["excluded"]
    vals = ctx.read(ids, sids, ["label", excl, ctx.embeddings_field])
    labels, X = [], []
    for lab, ex, e in zip(vals["label"], vals[excl], vals[ctx.embeddings_field]):
        if lab is not None and not ex and e is not None:
            labels.append(lab)
            X.append(e)
    return labels, X, sum(bool(x) for x in vals[excl])


def measure_round(ctx, class_of_interest=None, round_index=0, n_folds=5, max_dim=64,
                  random_state=0):
    """One round's measurements on the current labels (dict)."""
    labels, X, n_excluded = _current_rows(ctx)
    classes = ctx.classes()
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[l] for l in labels], dtype=np.int64)
    coi = index.get(class_of_interest) if class_of_interest is not None else None
    auc = cross_validated_auc(np.asarray(X, np.float32), y, len(classes), n_folds=n_folds,
                              class_of_interest=coi, max_dim=max_dim,
                              random_state=random_state)
    return dict(round=round_index, timestamp=now_iso(), reviewed=0, fixed=0, relabeled=0,
                deleted=0, ok=0, fix_rate=None, auc_macro=auc["macro"],
                auc_class=auc["class_of_interest"], class_of_interest=class_of_interest,
                n_rows=len(labels), n_excluded=n_excluded, history_id=None)


class CleaningRounds:
    """The rounds of an audit run.

    Attributes:
        rounds: list of dicts ``round, timestamp, reviewed, fixed, relabeled,
            deleted, ok, fix_rate, auc_macro, auc_class, class_of_interest,
            n_rows, n_excluded, rescore, rescore_seconds``
        plateaued: True when the last ``patience`` round(s) improved the AUC
            (``metric``) by less than ``tol`` over the best earlier round
        metric: "auc_macro" (default, stable) or "auc_class" (the class of
            interest; noisy on small classes; falls back to macro if missing or if
            the class of interest changed between rounds)
    """

    def __init__(self, rounds, tol=0.002, patience=1, metric="auc_macro"):
        self.rounds = rounds
        if metric not in ("auc_macro", "auc_class"):
            raise ValueError("metric must be 'auc_macro' or 'auc_class'")
        if metric == "auc_class" and not all(r.get("auc_class") is not None for r in rounds):
            metric = "auc_macro"
        if metric == "auc_class" and len({r.get("class_of_interest") for r in rounds}) > 1:
            metric = "auc_macro"  # the class of interest changed: its AUCs are not comparable
        self.metric = metric
        self.values = [r[self.metric] for r in rounds]
        self.plateaued = auc_plateaued(self.values, tol=tol, patience=patience)
        self.tol = tol

    def __len__(self):
        return len(self.rounds)

    def summary(self):
        if not self.rounds:
            return "No cleaning rounds yet: apply some decisions first"
        lines = ["round  reviewed  fixed  fix_rate  auc_macro  auc_class"]
        for r in self.rounds:
            lines.append("%5d  %8d  %5d  %8s  %9.4f  %9s" % (
                r["round"], r["reviewed"], r["fixed"],
                "-" if r["fix_rate"] is None else "%.2f" % r["fix_rate"], r["auc_macro"],
                "-" if r.get("auc_class") is None else "%.4f" % r["auc_class"]))
        lines.append("AUC plateaued (%s gained < %g): stop reviewing" % (self.metric, self.tol)
                     if self.plateaued else "AUC still improving: review another round")
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()


def cleaning_rounds(samples, audit_key="audit", tol=0.002, patience=1, metric="auc_macro",
                    label_field=None):
    """The cleaning rounds recorded for an audit run (a :class:`CleaningRounds`,
    whose ``plateaued`` says when to stop; see there for ``tol``, ``patience``
    and ``metric``)."""
    ctx = ReviewContext(samples, audit_key, label_field)
    rounds = [dict(r) for r in load_state(ctx)["rounds"]]
    for i, r in enumerate(rounds):
        r["round"] = i
    return CleaningRounds(rounds, tol=tol, patience=patience, metric=metric)
