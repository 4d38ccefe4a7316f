"""The methods compared by the quality benchmark.

Every method takes a :class:`Context` (features, given labels, seed, shared
out-of-fold probabilities) and returns a :class:`MethodOutput` with

* ``scores``: issue scores, higher = more likely a label error (or None for a
  flags-only method),
* ``flags``: a boolean "is a label issue" vector (or None for ranking-only
  methods),
* ``suggested``: the label the method would change a flagged label to (or
  None: the benchmark then fixes with the true label, an oracle reviewer).

Anchors:

* ``cleanlab-*``: cleanlab 2.9 on 5-fold out-of-fold probabilities of a
  standardized sklearn ``LogisticRegression`` (the same probabilities for all
  cleanlab rows and for FiftyOne's mistakenness).
* ``cleanlab-datalab-knn``: ``cleanlab.Datalab`` label issues given only the
  features, so Datalab builds its own (k=10, Euclidean) KNN probabilities.
* ``fo-mistakenness*``: FiftyOne Brain's per-sample classification
  mistakenness, reimplemented from ``fiftyone/brain/internal/core/
  mistakenness.py`` (fiftyone-brain 0.25.0: ``_compute_mistakenness_class``
  and ``_compute_mistakenness_class_conf``) on the OOF probabilities, with
  the prediction = argmax, so no database is needed.
* ``knn-disagreement``: fraction of the 10 cosine nearest neighbours whose
  label differs from the sample's label.
* ``random``: uniform random scores.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np


@dataclass
class MethodOutput:
    scores: Optional[np.ndarray] = None
    flags: Optional[np.ndarray] = None
    suggested: Optional[np.ndarray] = None
    note: str = ""
    choices: Dict[str, object] = field(default_factory=dict)  # what the method chose per dataset


class SkipMethod(Exception):
    """Raised by a method that cannot run here (e.g. engine not installed)."""


@dataclass
class Context:
    X: np.ndarray
    labels: np.ndarray
    n_classes: int
    random_state: int = 0
    n_folds: int = 5
    _oof: Optional[np.ndarray] = field(default=None, repr=False)
    oof_seconds: float = 0.0

    @property
    def oof_probs(self):
        """5-fold out-of-fold LogisticRegression probabilities (cached)."""
        if self._oof is None:
            t0 = time.perf_counter()
            self._oof = oof_probs(
                self.X, self.labels, self.n_classes, self.n_folds, self.random_state
            )
            self.oof_seconds = time.perf_counter() - t0
        return self._oof


# --------------------------------------------------------------------------
# shared building blocks
# --------------------------------------------------------------------------
def logistic_model(max_iter=100, C=1.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C))


def oof_probs(X, labels, n_classes=None, n_folds=5, random_state=0, max_iter=100):
    """Out-of-fold predicted probabilities (n x K) of a standardized
    multinomial LogisticRegression, stratified ``n_folds``-fold CV. Columns of
    classes missing from a training fold are 0."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, dtype=np.int64)
    K = int(n_classes or labels.max() + 1)
    P = np.zeros((len(labels), K), dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence / tiny-class warnings
        cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
        for tr, te in cv.split(np.zeros(len(labels)), labels):
            model = logistic_model(max_iter=max_iter)
            model.fit(X[tr], labels[tr])
            P[np.ix_(te, model.classes_)] = model.predict_proba(X[te])
    # rows must sum to 1 for cleanlab; guard against numerical drift
    P /= P.sum(1, keepdims=True)
    return P


def knn_indices(X, k=10, metric="cosine"):
    """Indices (n x k) of each sample's k nearest neighbours, self excluded."""
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(X, dtype=np.float32)
    if metric == "cosine":  # cosine = Euclidean on L2-normalised rows
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        X = X / norms
    nn = NearestNeighbors(n_neighbors=min(k + 1, len(X)), algorithm="brute", metric="euclidean")
    nn.fit(X)
    _, idx = nn.kneighbors(X)
    n = len(X)
    # drop self; if a duplicate displaced self from column 0, drop the last
    is_self = idx == np.arange(n)[:, None]
    has_self = is_self.any(1)
    keep = ~is_self
    keep[~has_self, -1] = False
    return idx[keep].reshape(n, -1)[:, :k]


# --------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------
def m_label_audit(ctx: Context) -> MethodOutput:
    try:
        from label_audit.scoring import score_label_issues
    except ImportError as e:
        raise SkipMethod("label_audit.scoring.score_label_issues not available (%s)" % e)
    res = score_label_issues(ctx.labels, features=ctx.X, random_state=ctx.random_state)
    scores = np.asarray(res.label_issue_score, dtype=np.float64)
    params = getattr(res, "params", {})
    flags = getattr(res, "is_label_issue", None)
    sugg = getattr(res, "suggested_label", None)
    choices = {"model": params.get("model_used", "logistic"),
               "knn_weight": params.get("knn_weight_used"),
               "margin_weight": params.get("margin_weight_used", 1.0),
               "flag_margin": params.get("flag_margin_used", 0.3)}
    return MethodOutput(
        scores=scores,
        flags=None if flags is None else np.asarray(flags, bool),
        suggested=None if sugg is None else np.asarray(sugg),
        note="model=%s knn_weight=%s margin_weight=%.2f flag_margin=%.2f; score_label_issues(labels, "
             "features=X, random_state=seed), defaults; sec includes its own model fitting" % (
                 choices["model"], choices["knn_weight"], choices["margin_weight"], choices["flag_margin"]),
        choices=choices,
    )


def m_self_confidence(ctx: Context) -> MethodOutput:
    from cleanlab.rank import get_label_quality_scores

    P = ctx.oof_probs
    q = get_label_quality_scores(ctx.labels, P, method="self_confidence")
    return MethodOutput(scores=1.0 - q, suggested=P.argmax(1))


def m_normalized_margin(ctx: Context) -> MethodOutput:
    from cleanlab.rank import get_label_quality_scores

    P = ctx.oof_probs
    q = get_label_quality_scores(ctx.labels, P, method="normalized_margin")
    return MethodOutput(scores=1.0 - q, suggested=P.argmax(1))


def m_find_label_issues(ctx: Context) -> MethodOutput:
    from cleanlab.filter import find_label_issues

    P = ctx.oof_probs
    flags = find_label_issues(ctx.labels, P, n_jobs=1)
    return MethodOutput(flags=np.asarray(flags, bool), suggested=P.argmax(1),
                        note="flags only (prune_by_noise_rate)")


def datalab_knn_label_issues(X, labels, k=10):
    """Datalab's features-only label-issue path without Datalab's ``datasets``
    container: the same steps as ``LabelIssueManager.find_issues`` in
    ``cleanlab/datalab/internal/issue_manager/label.py`` (cleanlab 2.9) when
    ``pred_probs`` is None: a ``KNeighborsClassifier(n_neighbors=k+1)`` fitted
    on the features, its in-sample probabilities made out-of-sample by removing
    the sample's own vote, then ``CleanLearning().find_label_issues``.
    Returns the CleanLearning DataFrame (is_label_issue, label_quality,
    given_label, predicted_label)."""
    from cleanlab.classification import CleanLearning
    from sklearn.neighbors import KNeighborsClassifier

    labels = np.asarray(labels, dtype=np.int64)
    classes, lab = np.unique(labels, return_inverse=True)  # Datalab's label map
    knn = KNeighborsClassifier(n_neighbors=k + 1)
    knn.fit(X, lab)
    P = knn.predict_proba(X)
    one_hot = np.eye(len(classes))[lab]
    P = (P - 1.0 / (k + 1) * one_hot) * (k + 1) / k
    df = CleanLearning().find_label_issues(labels=lab, pred_probs=P)
    df["predicted_label"] = classes[df["predicted_label"].to_numpy()]
    return df


def m_datalab_knn(ctx: Context) -> MethodOutput:
    X = np.asarray(ctx.X, dtype=np.float32)
    note = "features only: Datalab's own k=10 Euclidean KNN probs"
    try:
        from cleanlab.datalab.datalab import Datalab

        lab = Datalab(data={"label": ctx.labels}, label_name="label", verbosity=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lab.find_issues(features=X, issue_types={"label": {}})
        df = lab.get_issues("label")
        scores = 1.0 - df["label_score"].to_numpy(dtype=np.float64)
        sugg = df["predicted_label"].to_numpy() if "predicted_label" in df else None
    except Exception as e:  # ImportError (no `datasets`) or DatasetLoadError
        reason = str(e).strip().split("\n")[0][:80]
        note += ("; cleanlab.Datalab unusable here (%s: %s), so its LabelIssueManager "
                 "steps were run directly" % (type(e).__name__, reason))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = datalab_knn_label_issues(X, ctx.labels, k=10)
        scores = 1.0 - df["label_quality"].to_numpy(dtype=np.float64)
        sugg = df["predicted_label"].to_numpy()
    flags = df["is_label_issue"].to_numpy(dtype=bool)
    return MethodOutput(scores=scores, flags=flags, suggested=sugg, note=note)


def fo_mistakenness(probs, labels, use_logits=False):
    """FiftyOne Brain classification mistakenness, vectorised.

    Reimplements ``_compute_mistakenness_class_conf`` (``use_logits=False``,
    FiftyOne's default) and ``_compute_mistakenness_class`` (``use_logits=True``)
    from ``fiftyone/brain/internal/core/mistakenness.py`` (fiftyone-brain
    0.25.0)::

        m = +1 if predicted label != ground truth else -1
        conf:   mistakenness = (m * confidence + 1) / 2
        logits: mistakenness = (m * exp(-entropy(softmax(logits))) + 1) / 2

    with the prediction = argmax of ``probs``, ``confidence`` = its
    probability, and ``logits = log(probs)`` so that
    ``softmax(logits) = probs``.
    """
    P = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    pred = P.argmax(1)
    m = np.where(pred == labels, -1.0, 1.0)
    if use_logits:
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(P > 0, P * np.log(P), 0.0).sum(1)
        c = np.exp(-ent)
    else:
        c = P[np.arange(len(P)), pred]
    return (m * c + 1.0) / 2.0


def m_fo_mistakenness(ctx: Context) -> MethodOutput:
    P = ctx.oof_probs
    s = fo_mistakenness(P, ctx.labels, use_logits=False)
    return MethodOutput(scores=s, flags=s > 0.5, suggested=P.argmax(1),
                        note="use_logits=False; flag = mistakenness > 0.5")


def m_fo_mistakenness_logits(ctx: Context) -> MethodOutput:
    P = ctx.oof_probs
    s = fo_mistakenness(P, ctx.labels, use_logits=True)
    return MethodOutput(scores=s, flags=s > 0.5, suggested=P.argmax(1),
                        note="use_logits=True; flag = mistakenness > 0.5")


def knn_disagreement(X, labels, k=10, n_classes=None):
    """(scores, majority neighbour label): score = fraction of the k cosine
    nearest neighbours whose label differs from the sample's own."""
    labels = np.asarray(labels, dtype=np.int64)
    K = int(n_classes or labels.max() + 1)
    idx = knn_indices(X, k=k, metric="cosine")
    nl = labels[idx]
    scores = (nl != labels[:, None]).mean(1)
    counts = np.zeros((len(labels), K), dtype=np.int32)
    np.add.at(counts, (np.repeat(np.arange(len(labels)), idx.shape[1]), nl.ravel()), 1)
    return scores, counts.argmax(1)


def m_knn(ctx: Context) -> MethodOutput:
    scores, majority = knn_disagreement(ctx.X, ctx.labels, k=10, n_classes=ctx.n_classes)
    return MethodOutput(scores=scores, flags=scores > 0.5, suggested=majority,
                        note="flag = majority of neighbours disagree")


def m_random(ctx: Context) -> MethodOutput:
    rng = np.random.default_rng([ctx.random_state, 12345])
    return MethodOutput(scores=rng.random(len(ctx.labels)))


METHODS: Dict[str, Callable[[Context], MethodOutput]] = {
    "label-audit": m_label_audit,
    "cleanlab-self-confidence": m_self_confidence,
    "cleanlab-normalized-margin": m_normalized_margin,
    "cleanlab-find-label-issues": m_find_label_issues,
    "cleanlab-datalab-knn": m_datalab_knn,
    "fo-mistakenness": m_fo_mistakenness,
    "fo-mistakenness-logits": m_fo_mistakenness_logits,
    "knn-disagreement": m_knn,
    "random": m_random,
}

# methods that read the shared OOF probabilities
USES_OOF = {
    "cleanlab-self-confidence",
    "cleanlab-normalized-margin",
    "cleanlab-find-label-issues",
    "fo-mistakenness",
    "fo-mistakenness-logits",
}
