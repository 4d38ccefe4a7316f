"""``find_confused_classes``: which classes a linear probe confuses (FiftyOne glue
over :mod:`label_audit.review.probe`)."""

import numpy as np

from .context import ReviewContext
from .probe import false_positives, most_confused_pairs, probe_confusion
from .state import load_state, save_state, snapshot


class ConfusionReport:
    """Attributes: ``classes``, ``matrix`` (rows = given label, columns =
    predicted, held-out rows), ``accuracy``, ``pairs`` (most-confused
    unordered pairs), ``false_positives`` ``{class: count}``,
    ``class_of_interest`` (most false positives), ``n_train``, ``n_test``."""

    def __init__(self, classes, matrix, accuracy, pairs, fps, n_train, n_test, label_field):
        self.classes = classes
        self.matrix = matrix
        self.accuracy = accuracy
        self.pairs = pairs
        self.false_positives = fps
        # none when the probe makes no false positive: nothing to point the review at
        self.class_of_interest = (max(fps, key=lambda c: fps[c])
                                  if fps and max(fps.values()) > 0 else None)
        self.n_train = n_train
        self.n_test = n_test
        self.label_field = label_field

    def to_dict(self):
        return dict(classes=self.classes, matrix=np.asarray(self.matrix).tolist(),
                    accuracy=self.accuracy, pairs=self.pairs,
                    false_positives=self.false_positives,
                    class_of_interest=self.class_of_interest, n_train=self.n_train,
                    n_test=self.n_test)

    def summary(self):
        lines = ["Linear probe on %r: held-out accuracy %.3f (%d train, %d test)"
                 % (self.label_field, self.accuracy, self.n_train, self.n_test)]
        for p in self.pairs:
            lines.append("  %s <-> %s: %d confusions (%d %s as %s, %d %s as %s)" % (
                p["a"], p["b"], p["count"], p["a_as_b"], p["a"], p["b"], p["b_as_a"], p["b"],
                p["a"]))
        if self.class_of_interest is not None:
            lines.append("Most false positives: %r (%d): review it first, e.g. "
                         "suspects(dataset, classes=[%r], score='importance')"
                         % (self.class_of_interest,
                            self.false_positives[self.class_of_interest],
                            self.class_of_interest))
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()


def find_confused_classes(samples, audit_key="audit", label_field=None, embeddings_field=None,
                          test_size=0.25, max_dim=64, top=5, random_state=0):
    """Fits a linear probe on the embeddings and finds the confused classes.

    Args:
        samples: a dataset or view
        audit_key ("audit"): the compute_label_quality run (gives the label
            and embeddings fields); excluded rows are left out
        label_field (None), embeddings_field (None): override the run's
        test_size (0.25): held-out fraction for the confusion matrix
        max_dim (64): PCA dimension for larger embeddings
        top (5): how many pairs
        random_state (0)

    Returns:
        a :class:`ConfusionReport` (also recorded as the audit run's class of
        interest, used by the cleaning rounds)
    """
    ctx = ReviewContext(samples, audit_key, label_field)
    emb = embeddings_field or ctx.embeddings_field
    ids, sids = ctx.target_rows()
    excl = ctx.fields["excluded"]
    vals = ctx.read(ids, sids, ["label", excl, emb])
    classes = ctx.classes()
    index = {c: i for i, c in enumerate(classes)}
    y, X = [], []
    for lab, ex, e in zip(vals["label"], vals[excl], vals[emb]):
        if lab is not None and not ex and e is not None:
            y.append(index[lab])
            X.append(e)
    if len(y) < 4:
        raise ValueError("Only %d %ss have both a label in %r and an embedding in %r: need more"
                         % (len(y), ctx.what, ctx.label_field, emb))
    dims = {np.shape(e) for e in X}
    if len(dims) > 1:
        raise ValueError("Embeddings in %r have different dimensions %s" % (emb, sorted(dims)))
    out = probe_confusion(np.asarray(X, np.float32), np.asarray(y), len(classes),
                          test_size=test_size, max_dim=max_dim, random_state=random_state)
    fp = false_positives(out["matrix"])
    present = set(y)
    fps = {c: int(fp[i]) for i, c in enumerate(classes) if i in present}
    report = ConfusionReport(classes, out["matrix"], out["accuracy"],
                             most_confused_pairs(out["matrix"], classes, top), fps,
                             out["n_train"], out["n_test"], ctx.label_field)
    if ctx.run_info is not None:
        state = load_state(ctx)
        snapshot(ctx, state)
        state["confusion"] = report.to_dict()
        save_state(ctx, state)
    return report
