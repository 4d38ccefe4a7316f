"""Linear-probe science over plain arrays (numpy / scikit-learn, no FiftyOne).

* :func:`probe_confusion`: fit a logistic-regression probe on a stratified
  training split of the embeddings, predict the held-out split, and return
  the confusion matrix, the most-confused class pairs and the false positives
  per class.
* :func:`cross_validated_auc`: K-fold out-of-fold probabilities of the same
  probe, one-vs-rest ROC AUC per class, macro AUC and the AUC of a class of
  interest: the quality measure of a cleaning round.
* :func:`auc_plateaued`: whether a sequence of AUCs stopped improving.
* :func:`assign_folds` / :func:`fold_features` / :func:`cross_validated_scores`:
  fixed K-fold assignments, the per-fold probe features (PCA fitted once per
  fold, without labels) and the held-out accuracy and macro AUC of a probe
  trained on one set of labels and scored against another (the same folds
  for every label variant, see :mod:`label_audit.review.evaluate`).

Large embeddings are PCA-reduced inside the probe pipeline (fit on the
training rows only, so nothing leaks from the held-out rows).
"""

import numpy as np

__all__ = ["probe_confusion", "most_confused_pairs", "false_positives",
           "cross_validated_auc", "auc_plateaued", "assign_folds", "fold_features",
           "cross_validated_scores"]


def _probe(n_features, n_samples, max_dim, random_state, C=1.0, max_iter=300):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [StandardScaler()]
    dim = min(max_dim, n_samples - 1)
    if max_dim and n_features > max_dim and dim >= 2:
        steps += [PCA(n_components=dim, random_state=random_state), StandardScaler()]
    steps.append(LogisticRegression(C=C, max_iter=max_iter))
    return make_pipeline(*steps)


def _validate(X, y, n_classes):
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError("X must be (N, d) with one row per label; got X %s and %d labels"
                         % (X.shape, y.shape[0]))
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError("labels must be in [0, %d)" % n_classes)
    if np.unique(y).size < 2:
        raise ValueError("The probe needs labels of at least two classes")
    return X, y


def _full_proba(model, X, n_classes):
    """predict_proba with one column per class (0 for classes unseen in training)."""
    P = np.zeros((X.shape[0], n_classes), dtype=np.float64)
    P[:, model.classes_] = model.predict_proba(X)
    return P


def probe_confusion(X, y, n_classes, test_size=0.25, max_dim=64, random_state=0, C=1.0):
    """Confusion matrix of a linear probe on a held-out split.

    Args:
        X: (N, d) features
        y: (N,) int labels in ``[0, n_classes)``
        n_classes: K
        test_size (0.25): held-out fraction, stratified; a class with a
            single row stays in training
        max_dim (64): PCA dimension when ``d`` is larger (0: never reduce)
        random_state (0), C (1.0): split seed, inverse regularization

    Returns:
        dict with ``matrix`` (K, K) int, rows = given label, columns =
        predicted; ``accuracy`` on the held-out rows; ``n_train``, ``n_test``;
        ``test_index`` (rows of the held-out split)
    """
    from sklearn.model_selection import train_test_split

    X, y = _validate(X, y, n_classes)
    counts = np.bincount(y, minlength=n_classes)
    # a class with a single row cannot be split: it stays in training (held-out rows of the
    # other classes can still be predicted as it); the rest is split stratified
    single = counts[y] < 2
    idx = np.flatnonzero(~single)
    if np.unique(y[idx]).size < 2:
        raise ValueError("The confusion probe needs at least two classes with 2 or more labelled rows; "
                         "got class sizes %s" % sorted(counts[counts > 0].tolist(), reverse=True)[:10])
    n_test = max(int(round(test_size * len(idx))), len(np.unique(y[idx])))
    if n_test >= len(idx):
        raise ValueError("Too few labelled rows (%d) for a held-out split of every class: label more "
                         "samples or lower test_size" % len(idx))
    tr, te = train_test_split(idx, test_size=n_test, random_state=random_state, stratify=y[idx])
    tr = np.sort(np.concatenate([tr, np.flatnonzero(single)]))
    model = _probe(X.shape[1], len(tr), max_dim, random_state, C=C).fit(X[tr], y[tr])
    pred = _full_proba(model, X[te], n_classes).argmax(axis=1)
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y[te], pred), 1)
    return dict(matrix=matrix, accuracy=float(np.mean(pred == y[te])),
                n_train=int(len(tr)), n_test=int(len(te)), test_index=te)


def false_positives(matrix):
    """Per class: held-out rows predicted as that class but labelled otherwise."""
    m = np.asarray(matrix)
    return m.sum(axis=0) - np.diag(m)


def most_confused_pairs(matrix, classes, top=5):
    """The ``top`` unordered class pairs with the most mutual confusions.

    Returns a list of dicts ``{a, b, count, a_as_b, b_as_a, rate}`` sorted by
    decreasing ``count`` (``a_as_b``: rows labelled ``a`` predicted ``b``;
    ``rate``: count / held-out rows of the two classes).
    """
    m = np.asarray(matrix)
    K = m.shape[0]
    pairs = []
    for a in range(K):
        for b in range(a + 1, K):
            count = int(m[a, b] + m[b, a])
            if count:
                support = int(m[a].sum() + m[b].sum())
                pairs.append(dict(a=classes[a], b=classes[b], count=count,
                                  a_as_b=int(m[a, b]), b_as_a=int(m[b, a]),
                                  rate=count / support if support else 0.0))
    pairs.sort(key=lambda p: (-p["count"], -p["rate"]))
    return pairs[:top]


def cross_validated_auc(X, y, n_classes, n_folds=5, class_of_interest=None, max_dim=64,
                        random_state=0, C=1.0):
    """K-fold cross-validated one-vs-rest ROC AUC of a linear probe.

    Args:
        X, y, n_classes: as in :func:`probe_confusion`
        n_folds (5): folds (reduced to the smallest class count, at least 2)
        class_of_interest (None): a class index whose AUC is reported too
        max_dim, random_state, C: probe parameters

    Returns:
        dict ``macro`` (mean AUC over classes with positives and negatives),
        ``per_class`` (list, NaN for classes without rows), ``class_of_interest``
        (its AUC or None), ``n_folds``
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import KFold, StratifiedKFold

    X, y = _validate(X, y, n_classes)
    counts = np.bincount(y, minlength=n_classes)
    smallest = counts[counts > 0].min()
    folds = max(2, min(int(n_folds), len(y)))
    if smallest >= folds:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    else:
        splitter = KFold(folds, shuffle=True, random_state=random_state)
    P = np.zeros((len(y), n_classes))
    for tr, te in splitter.split(X, y):
        if np.unique(y[tr]).size < 2:
            P[te] = 1.0 / n_classes
            continue
        model = _probe(X.shape[1], len(tr), max_dim, random_state, C=C).fit(X[tr], y[tr])
        P[te] = _full_proba(model, X[te], n_classes)
    per_class = np.full(n_classes, np.nan)
    for c in range(n_classes):
        pos = y == c
        if 0 < pos.sum() < len(y):
            per_class[c] = roc_auc_score(pos, P[:, c])
    macro = float(np.nanmean(per_class))
    coi = None
    if class_of_interest is not None and np.isfinite(per_class[class_of_interest]):
        coi = float(per_class[class_of_interest])
    return dict(macro=macro, per_class=per_class.tolist(), class_of_interest=coi,
                n_folds=folds)


def auc_plateaued(values, tol=0.002, patience=1):
    """True when the last ``patience`` values improved on the best earlier
    value by less than ``tol`` (needs at least ``patience + 1`` values)."""
    v = [x for x in values if x is not None and np.isfinite(x)]
    if len(v) < patience + 1:
        return False
    best_before = max(v[:-patience])
    return max(v[-patience:]) - best_before < tol


def assign_folds(y, n_folds=5, random_state=0):
    """A fold index per row, stratified by ``y`` where every class has at least
    ``n_folds`` rows (else plain shuffled K-fold).

    Args:
        y: (N,) int labels; -1 = no label (such rows are spread over the
            folds at random)
        n_folds (5): K (at least 2, at most N)
        random_state (0): seed

    Returns:
        ``(folds, K)``: (N,) int64 fold indices in [0, K) and K
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    K = max(2, min(int(n_folds), n))
    folds = np.zeros(n, dtype=np.int64)
    lab = np.flatnonzero(y >= 0)
    rest = np.flatnonzero(y < 0)
    if len(lab) >= K:
        counts = np.bincount(y[lab])
        stratified = counts[counts > 0].min() >= K
        splitter = (StratifiedKFold if stratified else KFold)(K, shuffle=True,
                                                               random_state=random_state)
        for f, (_, te) in enumerate(splitter.split(np.zeros(len(lab)), y[lab])):
            folds[lab[te]] = f
    else:
        rest = np.arange(n)
    if len(rest):
        folds[rest] = np.random.RandomState(random_state).permutation(len(rest)) % K
    return folds, K


def fold_features(X, folds, max_dim=64, random_state=0):
    """The probe's input features for each fold, computed once per fold so that
    several label variants (and tasks) sharing the folds reuse them.

    For fold ``f``: standardize, PCA to ``max_dim`` (when ``d`` is larger) and
    standardize again, fitted without labels on the rows outside ``f``
    only, then applied to every row (the held-out rows never shape it).

    Args:
        X: (N, d) features
        folds: (N,) int fold per row
        max_dim (64): PCA dimension (0: never reduce)
        random_state (0): PCA seed

    Returns:
        ``{fold: (N, d') float32}``
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=np.float32)
    folds = np.asarray(folds, dtype=np.int64)
    out = {}
    for f in np.unique(folds):
        tr = np.flatnonzero(folds != f)
        steps = [StandardScaler()]
        dim = min(max_dim, len(tr) - 1)
        if max_dim and X.shape[1] > max_dim and dim >= 2:
            steps += [PCA(n_components=dim, random_state=random_state), StandardScaler()]
        pipe = make_pipeline(*steps).fit(X[tr])
        out[int(f)] = pipe.transform(X).astype(np.float32)
    return out


def cross_validated_scores(X, y_train, n_classes, folds, y_eval=None, max_dim=64,
                           random_state=0, C=1.0, features=None):
    """Held-out accuracy and macro one-vs-rest AUC of a linear probe.

    For each fold ``f``: a multinomial logistic regression on the fold's
    features (see :func:`fold_features`: standardize + PCA fitted without
    labels on the rows outside ``f``) is fitted on the rows outside ``f``
    that have a training label, and predicts the rows of ``f`` that have an
    evaluation label. Every row is predicted exactly once, by a model that
    never saw it.

    Args:
        X: (N, d) features (float32 kept)
        y_train: (N,) int labels in [0, n_classes) the probe is trained on;
            -1 = not trained on (e.g. an excluded row)
        n_classes: K
        folds: (N,) int fold index per row (see :func:`assign_folds`)
        y_eval (None): (N,) int labels the held-out predictions are scored
            against, -1 = not scored; default ``y_train`` (each row against
            its own label)
        max_dim (64), random_state (0), C (1.0): probe parameters
        features (None): the :func:`fold_features` of ``X`` and ``folds``
            (pass them to evaluate several label variants on the same folds
            without refitting the PCA); computed here by default

    Returns:
        dict ``accuracy`` (fraction of scored rows whose predicted class
        equals their evaluation label; higher is better), ``auc_macro``
        (mean over classes with positive and negative scored rows of the ROC
        AUC of P(class); NaN if none), ``per_class_auc`` (list, NaN where
        undefined), ``n_train`` (rows with a training label), ``n_eval``
        (rows scored), ``n_folds``
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    X = np.asarray(X)
    y_train = np.asarray(y_train, dtype=np.int64)
    y_eval = y_train if y_eval is None else np.asarray(y_eval, dtype=np.int64)
    folds = np.asarray(folds, dtype=np.int64)
    n = X.shape[0]
    if X.ndim != 2 or not (len(y_train) == len(y_eval) == len(folds) == n):
        raise ValueError("X (N, d), y_train, y_eval and folds must have one row per sample; "
                         "got X %s, %d, %d, %d" % (X.shape, len(y_train), len(y_eval),
                                                   len(folds)))
    for name, y in (("y_train", y_train), ("y_eval", y_eval)):
        if y.size and y.max() >= n_classes:
            raise ValueError("%s has labels >= n_classes (%d)" % (name, n_classes))
    if np.unique(y_train[y_train >= 0]).size < 2:
        raise ValueError("The probe needs training labels of at least two classes")
    if features is None:
        features = fold_features(X, folds, max_dim=max_dim, random_state=random_state)
    P = np.full((n, n_classes), np.nan)
    for f in np.unique(folds):
        te = np.flatnonzero((folds == f) & (y_eval >= 0))
        if not len(te):
            continue
        tr = np.flatnonzero((folds != f) & (y_train >= 0))
        if np.unique(y_train[tr]).size < 2:
            P[te] = 1.0 / n_classes
            continue
        Z = features[int(f)]
        model = LogisticRegression(C=C, max_iter=300).fit(Z[tr], y_train[tr])
        P[te] = _full_proba(model, Z[te], n_classes)
    ev = np.flatnonzero(y_eval >= 0)
    if not len(ev):
        raise ValueError("No row has an evaluation label")
    pred = P[ev].argmax(axis=1)
    per_class = np.full(n_classes, np.nan)
    for c in range(n_classes):
        pos = y_eval[ev] == c
        if 0 < pos.sum() < len(ev):
            per_class[c] = roc_auc_score(pos, P[ev, c])
    finite = per_class[np.isfinite(per_class)]
    return dict(accuracy=float(np.mean(pred == y_eval[ev])),
                auc_macro=float(finite.mean()) if finite.size else float("nan"),
                per_class_auc=per_class.tolist(), n_train=int((y_train >= 0).sum()),
                n_eval=int(len(ev)), n_folds=int(len(np.unique(folds))))
