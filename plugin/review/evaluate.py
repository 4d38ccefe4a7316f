"""``evaluate_cleaning``: per task, does a linear probe on the embeddings do
better with the original, the cleaned or the suggested labels?

Label variants of a task (label field ``f``, audit key ``k``), over the
samples of the collection that have an embedding:

=============  ================================================================
``original``   the labels before any review correction: ``k_original_label``
               where an applied relabel set it, else the current label of ``f``
               (excluded rows included: they were part of the original labels)
``cleaned``    the current labels of ``f`` after the applied decisions, rows
               excluded by an applied deletion (``k_excluded``) dropped
``suggested``  ``k_suggested_label`` from the latest scoring (or re-score) of
               the task, for every row that has one
=============  ================================================================

Every task and variant uses the same fold assignment (stratified by the
first task's reference labels when given, else by its original labels) and
the same per-fold features (standardize + PCA to ``max_dim``, fitted once per
fold without labels on the rows outside it). For each fold, a logistic
regression (see :func:`label_audit.review.probe.cross_validated_scores`) is
trained on the variant's labels of the other folds and predicts the fold.

What the predictions are scored against:

* default (no ``reference_fields``): **each variant's own held-out labels**.
  This is agreement between the labels and what the embeddings predict, not
  accuracy against the truth: cleaner labels agree more, but the
  ``suggested`` labels are the argmax of a similar probe's out-of-fold
  probabilities, so they agree with a probe by construction and score high
  whether or not they are right.
* ``reference_fields`` (e.g. labels re-annotated by an expert, or the
  demo's hidden ``<task>_true`` fields): **the same reference labels on the
  same held-out rows for every variant** (every row with a reference label,
  excluded rows included); only the training labels differ. This is the
  meaningful before/after comparison. Each row then also says how many of
  the variant's labels equal the reference (``label_agreement``).

The probe's accuracy measures how useful a label set is for training a linear
model on these embeddings, not how correct the labels are: with weak
embeddings, labels that follow the embeddings' structure (e.g. unchecked
suggestions) can train a better probe while being wrong more often. Read
``label_agreement`` beside it.
"""

import numpy as np

from ..runs import run_key_for, save_run

VARIANTS = ("original", "cleaned", "suggested")
METHOD = "label_audit.evaluation"


def evaluation_key(audit_key):
    """The run key of the evaluation record of an audit (``<key>_evaluation``)."""
    return run_key_for(audit_key, "evaluation")


def _fmt(v, spec="%.4f"):
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else spec % v


class CleaningEvaluation:
    """The table computed by :func:`evaluate_cleaning`.

    Attributes:
        rows: list of dicts, one per (task, variant): ``task`` (label
            field), ``audit_key`` (the task's key), ``variant``, ``n_train``
            (rows with a label of that variant), ``changed`` (rows whose
            variant label differs from the original one),
            ``label_agreement`` (fraction of the variant's labels equal to
            the reference label; None without a reference: a direct measure
            of the labels themselves), ``n_eval`` (rows scored), ``accuracy`` and ``auc_macro`` (held-out, higher is
            better; see :func:`label_audit.review.probe.cross_validated_scores`),
            ``against`` (the reference field, or "own labels")
        audit_key, embeddings_field, n_folds, reference_fields ``{task:
        field or None}``
    """

    def __init__(self, rows, audit_key, embeddings_field, n_folds, reference_fields):
        self.rows = rows
        self.audit_key = audit_key
        self.embeddings_field = embeddings_field
        self.n_folds = n_folds
        self.reference_fields = dict(reference_fields)

    def get(self, task, variant):
        """The row of one task and variant (dict)."""
        for r in self.rows:
            if r["task"] == task and r["variant"] == variant:
                return r
        raise KeyError((task, variant))

    @property
    def tasks(self):
        return list(dict.fromkeys(r["task"] for r in self.rows))

    def _header(self):
        refs = {t: f for t, f in self.reference_fields.items() if f}
        if refs:
            against = ("reference labels %s (the same held-out rows for every variant)"
                       % ", ".join("%s=%r" % (t, f) for t, f in refs.items()))
        else:
            against = ("each variant's own held-out labels (agreement, not accuracy against "
                       "the truth: suggested labels agree with a probe by construction; pass "
                       "reference_fields to compare against trusted labels)")
        if refs and len(refs) < len(self.reference_fields):
            against += "; tasks without a reference: own held-out labels"
        return ["Cleaning evaluation %r: %d-fold linear probe on %r" % (
            self.audit_key, self.n_folds, self.embeddings_field), "scored against: " + against]

    def summary(self):
        width = max([4] + [len(t) for t in self.tasks])
        lines = self._header()
        lines.append("%-*s  %-9s  %7s  %7s  %9s  %6s  %8s  %9s" % (
            width, "task", "variant", "n_train", "changed", "labels_ok", "n_eval", "accuracy",
            "auc_macro"))
        for r in self.rows:
            lines.append("%-*s  %-9s  %7d  %7d  %9s  %6d  %8s  %9s" % (
                width, r["task"], r["variant"], r["n_train"], r["changed"],
                _fmt(r.get("label_agreement"), "%.3f"), r["n_eval"], _fmt(r["accuracy"]),
                _fmt(r["auc_macro"])))
        return "\n".join(lines)

    def markdown(self):
        """The table as Markdown (for the App panel)."""
        lines = ["\n\n".join(self._header()), "",
                 "| task | variant | n_train | changed | labels = reference | n_eval | "
                 "probe accuracy | probe AUC (macro) |",
                 "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            lines.append("| %s | %s | %d | %d | %s | %d | %s | %s |" % (
                r["task"], r["variant"], r["n_train"], r["changed"],
                _fmt(r.get("label_agreement"), "%.3f"), r["n_eval"], _fmt(r["accuracy"]),
                _fmt(r["auc_macro"])))
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()


def resolve_tasks(samples, label_fields=None, audit_key="audit"):
    """``[(label field, task audit key), ...]`` for a multi-task group key, a
    single label-quality run key, or a prefix whose task runs are
    ``<audit_key>_<field>``."""
    from ..multitask import group_config, task_key
    from ..quality import RUN_METHOD

    root = samples._root_dataset
    group = group_config(root, audit_key)
    if isinstance(label_fields, str):
        label_fields = [label_fields]
    if label_fields is None:
        if group is not None:
            label_fields = list(group["label_fields"])
        elif audit_key in root.list_runs(method=RUN_METHOD):
            label_fields = [root.get_run_info(audit_key).config.serialize()["label_field"]]
        else:
            raise ValueError(
                "No label-quality run %r on dataset %r: run label_audit.compute_label_quality"
                "(dataset, label_fields, audit_key=%r) first, or pass label_fields"
                % (audit_key, root.name, audit_key))
    label_fields = list(label_fields)
    if not label_fields:
        raise ValueError("label_fields is empty")
    runs = set(root.list_runs(method=RUN_METHOD))
    out = []
    for f in label_fields:
        candidates = []
        if group is not None and f in group["task_keys"]:
            candidates.append(group["task_keys"][f])
        candidates += [audit_key, task_key(audit_key, f)]
        key = None
        for c in candidates:
            if c in runs and root.get_run_info(c).config.serialize().get("label_field") == f:
                key = c
                break
        if key is None:
            raise ValueError(
                "No label-quality run for field %r under audit key %r on dataset %r: run "
                "label_audit.compute_label_quality(dataset, %r, audit_key=%r) first"
                % (f, audit_key, root.name, label_fields if len(label_fields) > 1 else f,
                   audit_key))
        if root.get_run_info(key).config.serialize().get("patches"):
            raise ValueError(
                "Audit run %r scored the objects of %r (a Detections/Polylines field): "
                "evaluate_cleaning compares a linear probe per sample, so it needs "
                "Classification fields; object-level runs are not supported" % (key, f))
        out.append((f, key))
    return out


def _reference_map(samples, tasks, reference_fields):
    import fiftyone as fo

    fields = [f for f, _ in tasks]
    if reference_fields is None:
        refs = {}
    elif isinstance(reference_fields, str):
        if len(fields) != 1:
            raise ValueError("With several tasks, reference_fields must be a dict {task: field} "
                             "or a list aligned with label_fields")
        refs = {fields[0]: reference_fields}
    elif isinstance(reference_fields, dict):
        refs = dict(reference_fields)
    else:
        reference_fields = list(reference_fields)
        if len(reference_fields) != len(fields):
            raise ValueError("reference_fields has %d entries for %d tasks %s"
                             % (len(reference_fields), len(fields), fields))
        refs = dict(zip(fields, reference_fields))
    unknown = sorted(set(refs) - set(fields))
    if unknown:
        raise ValueError("reference_fields names tasks %s that are not evaluated (%s)"
                         % (unknown, fields))
    for t, f in refs.items():
        if f is None:
            continue
        field = samples.get_field(f)
        doc_type = getattr(field, "document_type", None)
        if doc_type is None or not issubclass(doc_type, fo.Classification):
            raise ValueError("Reference field %r of task %r must be a Classification field; "
                             "found %s" % (f, t, "no such field" if field is None else
                                           getattr(doc_type, "__name__", type(field).__name__)))
    return {f: refs.get(f) for f in fields}


def _task_labels(samples, field, key, ref, emb_rows):
    """Per-variant label lists (None = no label) of the rows ``emb_rows``."""
    root = samples._root_dataset
    paths = {"current": field + ".label"}
    for name in ("original_label", "excluded", "suggested_label"):
        if root.has_field("%s_%s" % (key, name)):
            paths[name] = "%s_%s" % (key, name)
    if ref:
        paths["reference"] = ref + ".label"
    names = list(paths)
    vals = dict(zip(names, samples.values([paths[n] for n in names])))
    get = {nm: [vals[nm][i] for i in emb_rows] if nm in vals else [None] * len(emb_rows)
           for nm in ("current", "original_label", "excluded", "suggested_label", "reference")}
    original = [o if o is not None else c for o, c in zip(get["original_label"], get["current"])]
    cleaned = [None if ex else c for c, ex in zip(get["current"], get["excluded"])]
    return dict(original=original, cleaned=cleaned, suggested=get["suggested_label"],
                reference=get["reference"])


def evaluate_cleaning(samples, label_fields=None, embeddings_field=None, audit_key="audit",
                      reference_fields=None, variants=VARIANTS, n_folds=5, max_dim=64, C=1.0,
                      random_state=0, record=True, progress_callback=None):
    """K-fold cross-validated accuracy and macro AUC of a linear probe per task,
    trained on the original, cleaned and suggested labels (see the module
    docstring for the variants and what they are scored against).

    Args:
        samples: a dataset or view (its samples with an embedding are used)
        label_fields (None): the tasks' label fields (a str for one); default:
            the tasks of the multi-task audit ``audit_key``, or the field of
            the single label-quality run ``audit_key``
        embeddings_field (None): default: the first task run's embeddings field
        audit_key ("audit"): a multi-task group key, a label-quality run key,
            or the prefix of the task keys (``<audit_key>_<field>``)
        reference_fields (None): trusted labels to score against: a dict
            ``{task: Classification field}``, a list aligned with the tasks,
            or a str for one task; tasks without one are scored against
            each variant's own held-out labels
        variants (all three): a subset of "original", "cleaned", "suggested"
        n_folds (5), max_dim (64), C (1.0), random_state (0): the probe and
            its folds (the same folds for every task and variant)
        record (True): save the table as run ``<audit_key>_evaluation``
            (shown by the "Label audit" panel; :func:`load_evaluation`)
        progress_callback (None): called with ``(fraction, label)``

    Returns:
        a :class:`CleaningEvaluation` (``.rows``; printing it prints the
        task x variant table)
    """
    from .probe import assign_folds, cross_validated_scores, fold_features

    variants = [variants] if isinstance(variants, str) else list(variants)
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise ValueError("variants must be a non-empty subset of %s; got %r"
                         % (", ".join(VARIANTS), variants))
    tasks = resolve_tasks(samples, label_fields, audit_key)
    root = samples._root_dataset
    refs = _reference_map(samples, tasks, reference_fields)
    if embeddings_field is None:
        embeddings_field = root.get_run_info(tasks[0][1]).config.serialize().get(
            "embeddings_field", "embeddings")
    if not samples.has_field(embeddings_field):
        raise ValueError("No embeddings field %r: run label_audit.compute_embeddings first"
                         % embeddings_field)
    if len(samples) == 0:
        raise ValueError("The view is empty: there is nothing to evaluate")
    sample_ids, embs = samples.values(["id", embeddings_field])
    emb_rows = [i for i, e in enumerate(embs) if e is not None]
    if emb_rows:
        dim = np.shape(embs[emb_rows[0]])[-1]
        for i in emb_rows:
            e = np.asarray(embs[i], dtype=np.float32)
            if e.shape != (dim,):
                raise ValueError(
                    "Embeddings in %r have different dimensions (%d in sample %s, %d in sample "
                    "%s): recompute them with one model"
                    % (embeddings_field, dim, sample_ids[emb_rows[0]], e.shape[-1] if e.ndim else 0,
                       sample_ids[i]))
            if not np.all(np.isfinite(e)) or not np.any(e):
                raise ValueError(
                    "The embedding of sample %s in %r is %s: recompute it "
                    "(label_audit.compute_embeddings) or exclude that sample from the view"
                    % (sample_ids[i], embeddings_field,
                       "all zeros" if np.all(np.isfinite(e)) else "not finite (NaN/inf)"))
    if len(emb_rows) < 4:
        raise ValueError("Only %d samples have an embedding in %r: too few to cross-validate"
                         % (len(emb_rows), embeddings_field))
    X = np.empty((len(emb_rows), len(embs[emb_rows[0]])), dtype=np.float32)
    for j, i in enumerate(emb_rows):
        X[j] = embs[i]
    del embs

    rows = []
    total = len(tasks) * len(variants)
    step = 0
    folds = features = K = None
    for field, key in tasks:
        labels = _task_labels(samples, field, key, refs[field], emb_rows)
        classes = list(root.get_run_info(key).config.serialize().get("classes") or [])
        seen = set(classes)
        for name in ("original", "cleaned", "suggested", "reference"):
            for lab in labels[name]:
                if lab is not None and lab not in seen:
                    classes.append(lab)
                    seen.add(lab)
        index = {c: i for i, c in enumerate(classes)}

        def encode(labs):
            return np.array([-1 if lab is None else index[lab] for lab in labs], np.int64)

        y_orig = encode(labels["original"])
        y_ref = encode(labels["reference"]) if refs[field] else None
        if y_ref is not None and not (y_ref >= 0).any():
            raise ValueError("Reference field %r has no label on the samples with an embedding"
                             % refs[field])
        if folds is None:  # the first task's labels stratify the folds of every task
            folds, K = assign_folds(y_ref if y_ref is not None else y_orig, n_folds=n_folds,
                                    random_state=random_state)
            if progress_callback is not None:
                progress_callback(0.0, "Fitting the per-fold PCA")
            features = fold_features(X, folds, max_dim=max_dim, random_state=random_state)
        for variant in variants:
            if progress_callback is not None:
                progress_callback(step / total, "Task %r, %s labels" % (field, variant))
            step += 1
            y = encode(labels[variant])
            if np.unique(y[y >= 0]).size < 2:
                raise ValueError(
                    "Task %r: the %s labels have %d class(es): a probe needs two. Check the "
                    "field %r (a task with one class cannot be evaluated)"
                    % (field, variant, np.unique(y[y >= 0]).size, field))
            scores = cross_validated_scores(X, y, len(classes), folds, y_eval=y_ref,
                                            max_dim=max_dim, random_state=random_state, C=C,
                                            features=features)
            both = (y >= 0) & (y_orig >= 0)
            agreement = None
            if y_ref is not None:
                ok = (y >= 0) & (y_ref >= 0)
                agreement = float(np.mean(y[ok] == y_ref[ok])) if ok.any() else None
            rows.append(dict(task=field, audit_key=key, variant=variant,
                             n_train=scores["n_train"],
                             changed=int((y[both] != y_orig[both]).sum()),
                             label_agreement=agreement,
                             n_eval=scores["n_eval"], accuracy=scores["accuracy"],
                             auc_macro=scores["auc_macro"],
                             against=refs[field] or "own labels"))
    result = CleaningEvaluation(rows, audit_key, embeddings_field, K, refs)
    if record:
        save_run(samples, evaluation_key(audit_key), METHOD,
                 dict(audit_key=audit_key, tasks=[f for f, _ in tasks],
                      task_keys={f: k for f, k in tasks}, embeddings_field=embeddings_field,
                      reference_fields=refs, variants=variants, n_folds=n_folds,
                      max_dim=max_dim, C=C, random_state=random_state),
                 dict(rows=[{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                             for k, v in r.items()} for r in rows], n_folds=K))
    if progress_callback is not None:
        progress_callback(1.0, "Done")
    return result


def load_evaluation(samples, audit_key="audit"):
    """The last :func:`evaluate_cleaning` table recorded for ``audit_key``
    (a :class:`CleaningEvaluation`), or None."""
    root = samples._root_dataset
    key = evaluation_key(audit_key)
    if key not in root.list_runs(method=METHOD):
        return None
    cfg = root.get_run_info(key).config.serialize()
    res = root.load_run_results(key, cache=False)
    rows = [dict(r) for r in (getattr(res, "rows", None) or [])]
    for r in rows:
        for k in ("accuracy", "auc_macro"):
            if r.get(k) is None:
                r[k] = float("nan")
    return CleaningEvaluation(rows, audit_key, cfg.get("embeddings_field"),
                              getattr(res, "n_folds", cfg.get("n_folds")),
                              cfg.get("reference_fields") or {})
