"""``compute_label_quality``: score a FiftyOne label field and write the
scores back as sortable fields, with a run record.

FiftyOne glue only: reading labels and embeddings from the collection,
mapping class names to ints, calling :func:`label_audit.scoring.score_label_issues`,
and writing the per-sample (or per-object) results in one bulk pass.

Fields written, for ``audit_key="audit"`` (on samples for a Classification
field, on each label for a Detections/Polylines "patches" field):

=============================  ===============================================
``audit_label_issue_score``    fused ranking score in [0, 1]; higher = more
                               likely mislabeled (sort by it, descending)
``audit_importance``           coreset importance (logistic-regression
                               sensitivity); higher = mislabeled, OOD or hard
``audit_self_confidence``      out-of-fold P(given label) (cleanlab)
``audit_normalized_margin``    cleanlab's normalized margin
``audit_knn_agreement``        fraction of the k neighbours with the same label
``audit_outlier_score``        mean cosine distance to the k neighbours
``audit_is_label_issue``       flag: cleanlab's prune_by_noise_rate on the
                               fused probabilities, or another class ahead
                               of the given label by >= 0.3
``audit_is_outlier``           flag
``audit_is_ambiguous``         flag (top-2 classes nearly tied)
``audit_suggested_label``      most likely class name
``audit_suggested_confidence`` its fused probability
=============================  ===============================================

``label_field`` may also be a list of Classification fields (multi-task
classification): each task is then scored as its own run with key
``<audit_key>_<field>`` and a combined per-sample ranking is written, see
:mod:`label_audit.multitask`.
"""

import numpy as np

RUN_METHOD = "label_audit.label_quality"

#: the last scoring result per (dataset id, audit key) in this process, so that the
#: review workflow's next apply can re-score incrementally (see review/state.py)
LAST_RESULTS = {}

#: result attribute -> (field suffix, kind)
SCORE_FIELDS = (
    ("label_issue_score", "float"),
    ("importance", "float"),
    ("self_confidence", "float"),
    ("normalized_margin", "float"),
    ("knn_agreement", "float"),
    ("outlier_score", "float"),
    ("is_label_issue", "bool"),
    ("is_outlier", "bool"),
    ("is_ambiguous", "bool"),
    ("suggested_label", "label"),
    ("suggested_confidence", "float"),
)


def field_names(audit_key):
    """The output field (or label attribute) names for ``audit_key``."""
    return {name: "%s_%s" % (audit_key, name) for name, _ in SCORE_FIELDS}


class LabelQualityResults:
    """What :func:`compute_label_quality` computed and wrote.

    Attributes:
        audit_key: the run key
        label_field: the scored field
        patches: True if objects (labels) were scored rather than samples
        ids: the scored sample ids (or label ids for patches), row-aligned
            with ``result``
        sample_ids: the sample id of each row
        result: the :class:`label_audit.scoring.LabelIssueResult`
        skipped: ``{id: reason}`` for rows left unscored (missing label or
            embedding); their fields are set to None
        fields: result name -> written field name
    """

    def __init__(self, audit_key, label_field, patches, ids, sample_ids, result, skipped, fields):
        self.audit_key = audit_key
        self.label_field = label_field
        self.patches = patches
        self.ids = ids
        self.sample_ids = sample_ids
        self.result = result
        self.skipped = skipped
        self.fields = fields

    def issue_counts(self):
        """Flagged label issues per given class: ``{class: count}``."""
        r = self.result
        counts = np.bincount(r.labels[r.is_label_issue], minlength=len(r.classes))
        return {c: int(n) for c, n in zip(r.classes, counts)}

    def summary(self):
        r = self.result
        what = "objects" if self.patches else "samples"
        lines = [
            "Label quality %r on %r: %d %s scored, %d skipped; %d flagged as label "
            "issues, %d outliers, %d ambiguous"
            % (self.audit_key, self.label_field, len(self.ids), what, len(self.skipped),
               int(r.is_label_issue.sum()), int(r.is_outlier.sum()),
               int(r.is_ambiguous.sum())),
            ("Sort by %r (descending) to review the most likely errors first."
             % self.fields["label_issue_score"]) if not self.patches else
            ("The scores are attributes of each object: label_audit.suspects(dataset, "
             "audit_key=%r) is the patches view sorted by %r (descending)."
             % (self.audit_key, self.fields["label_issue_score"])),
        ]
        losses = r.params.get("held_out_log_loss")
        if losses:
            lines.append("Model: %s (held-out log-loss on the given labels: logistic %.3f, mlp %.3f)"
                         % (r.params.get("model_used"), losses["logistic"], losses["mlp"]))
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()


def _label_list_field(samples, label_field):
    """Returns (kind, list_field): kind 'classification' or 'patches'."""
    import fiftyone as fo

    field = samples.get_field(label_field)
    doc_type = getattr(field, "document_type", None)
    if doc_type is not None and issubclass(doc_type, fo.Classification):
        return "classification", None
    if doc_type is not None and issubclass(doc_type, fo.Detections):
        return "patches", "detections"
    if doc_type is not None and issubclass(doc_type, fo.Polylines):
        return "patches", "polylines"
    raise ValueError(
        "label_field %r must be a Classification field (scored per sample) or a "
        "Detections/Polylines field (scored per object); found %s"
        % (label_field, "no such field" if field is None
           else getattr(doc_type, "__name__", type(field).__name__)))


def _read_rows(samples, label_field, embeddings_field, kind, list_field):
    """Reads ids, labels and embeddings in bulk, row-aligned."""
    if kind == "classification":
        sample_ids, labels, embs = samples.values(
            ["id", label_field + ".label", embeddings_field])
        return list(sample_ids), list(sample_ids), labels, embs
    prefix = "%s.%s." % (label_field, list_field)
    sample_ids, label_ids, labels, embs = samples.values(
        ["id", prefix + "id", prefix + "label", prefix + embeddings_field])
    rows_sid, rows_id, rows_label, rows_emb = [], [], [], []
    for sid, lids, labs, es in zip(sample_ids, label_ids, labels, embs):
        lids = lids or []
        for j, lid in enumerate(lids):
            rows_sid.append(sid)
            rows_id.append(lid)
            rows_label.append(labs[j] if labs else None)
            rows_emb.append(es[j] if es else None)
    return rows_id, rows_sid, rows_label, rows_emb


def declared_classes(samples, label_field, labels):
    """The class list the dataset declares for ``label_field``: ``samples.classes[field]``,
    else ``default_classes`` unless it names none of ``labels`` (then it belongs to another
    field, e.g. another task of a multi-task dataset; FiftyOne's ``get_classes`` would return
    it anyway); [] if none."""
    declared = samples.classes.get(label_field)
    default = samples.default_classes
    if not declared and default and set(default) & set(labels):
        declared = default
    return list(declared or [])


def _resolve_classes(samples, label_field, labels, classes):
    present = sorted({l for l in labels if l is not None})
    if classes is None:
        # keep the dataset's declared order, and add any label it misses
        classes = declared_classes(samples, label_field, present) or list(present)
        classes += [c for c in present if c not in set(classes)]
    else:
        classes = list(classes)
        dup = sorted({c for c in classes if classes.count(c) > 1})
        if dup:
            raise ValueError("The given classes name %s more than once: pass each class once"
                             % dup[:10])
        unknown = sorted(set(present) - set(classes))
        if unknown:
            raise ValueError(
                "Labels %s in field %r are not in the given classes %s: add them to "
                "`classes` (or omit `classes` to use all labels present)"
                % (unknown[:10], label_field, classes[:20]))
    if len(set(classes)) < 2 or len(present) < 2:
        raise ValueError(
            "Field %r has %d distinct label(s) %s: label quality needs at least two "
            "classes" % (label_field, len(present), present[:5]))
    return classes


def _valid_rows(ids, labels, embs, path, patches):
    """Rows with both a label and a finite, non-zero embedding of one dimension.

    Returns ``(keep, skipped, dim)``; raises on a bad embedding."""
    skipped = {}
    keep = []
    dim = None
    for r, (rid, lab, e) in enumerate(zip(ids, labels, embs)):
        if lab is None:
            skipped[rid] = "missing label"
        elif e is None:
            skipped[rid] = "missing embedding"
        else:
            if not np.all(np.isfinite(e)) or not np.any(e):
                raise ValueError(
                    "The embedding of %s %s in %r is %s: recompute it "
                    "(label_audit.compute_embeddings) or exclude that %s from the view"
                    % ("label" if patches else "sample", rid, path,
                       "all zeros" if np.all(np.isfinite(e)) else "not finite (NaN/inf)",
                       "label" if patches else "sample"))
            d = np.shape(e)[-1] if np.ndim(e) else 0
            if dim is None:
                dim = d
            if d != dim:
                raise ValueError(
                    "Embeddings in %r have different dimensions (%d and %d, e.g. %s %s): "
                    "recompute them with one model" % (path, dim, d,
                                                       "label" if patches else "sample", rid))
            keep.append(r)
    return keep, skipped, dim


def _stack(embs, keep, dim):
    """The (len(keep), dim) float32 matrix of the kept rows' embeddings."""
    X = np.empty((len(keep), dim), dtype=np.float32)
    for i, r in enumerate(keep):
        X[i] = embs[r]
    return X


def _result_columns(result, classes, keep, n_rows, names):
    """``{field: (kind, values)}`` over all ``n_rows`` rows (None where unscored)."""
    columns = {}
    for name, kind_ in SCORE_FIELDS:
        values = getattr(result, name)
        col = [None] * n_rows
        if kind_ == "label":
            for i, r in enumerate(keep):
                col[r] = classes[int(values[i])]
        elif kind_ == "bool":
            for i, r in enumerate(keep):
                col[r] = bool(values[i])
        else:
            for i, r in enumerate(keep):
                v = float(values[i])
                col[r] = v if np.isfinite(v) else None
        columns[names[name]] = (kind_, col)
    return columns


def check_audit_key(samples, audit_key, label_field):
    """Raises before anything is written if ``audit_key`` is not a valid run key, holds
    another kind of run or a label-quality run of another label field (FiftyOne's own runs
    refuse that too), or is, or would need, the review/evaluation record of another run."""
    from .review.evaluate import evaluation_key
    from .review.state import review_key
    from .runs import check_run_key, run_method

    check_run_key(samples, audit_key, RUN_METHOD)
    root = samples._root_dataset
    if run_method(samples, audit_key) == RUN_METHOD:
        other = root.get_run_info(audit_key).config.serialize().get("label_field")
        if other is not None and other != label_field:
            raise ValueError(
                "Audit key %r holds the label-quality run of field %r; scoring %r under it would "
                "replace that run and leave its review record pointing at the wrong field. "
                "Choose another audit_key, or dataset.delete_run(%r) first. Nothing was written"
                % (audit_key, other, label_field, audit_key))
    for suffix, own in (("_review", review_key(audit_key)), ("_evaluation", evaluation_key(audit_key))):
        if audit_key.endswith(suffix) and run_method(samples, audit_key[: -len(suffix)]) is not None:
            raise ValueError(
                "Audit key %r is reserved for the %s record of audit run %r: choose another "
                "audit_key. Nothing was written" % (audit_key, suffix[1:], audit_key[: -len(suffix)]))
        method = run_method(samples, own)
        if method is not None and method != "label_audit." + suffix[1:]:
            raise ValueError(
                "Audit key %r needs the key %r for its %s record, but that key holds a %s run: "
                "choose another audit_key, or dataset.delete_run(%r) first. Nothing was written"
                % (audit_key, own, suffix[1:], method, own))


def _record_run(samples, audit_key, label_field, embeddings_field, patches, classes, n_folds,
                k, random_state, names, result, y, ids, sample_ids, labels, keep, skipped):
    """Saves the run record of one scored field; returns its LabelQualityResults."""
    from .runs import save_run

    kept_ids = [ids[r] for r in keep]
    counts = np.bincount(y[result.is_label_issue], minlength=len(classes))
    config = dict(label_field=label_field, embeddings_field=embeddings_field,
                  patches=patches, classes=classes, n_folds=n_folds, k=k,
                  random_state=random_state, fields=names,
                  score_params={k_: v for k_, v in result.params.items()
                                if isinstance(v, (int, float, str, bool, type(None)))})
    results = dict(
        num_scored=len(keep), num_skipped=len(skipped),
        num_label_issues=int(result.is_label_issue.sum()),
        issue_counts={c: int(n) for c, n in zip(classes, counts)},
        noise_matrix=result.noise_matrix, confident_joint=result.confident_joint,
        skipped=dict(list(skipped.items())[:1000]),
        # the label each row had when scored: lets the review detect stale scores
        scored_labels={ids[r]: labels[r] for r in keep},
    )
    save_run(samples, audit_key, RUN_METHOD, config, results)
    dataset = samples._dataset
    LAST_RESULTS[(str(dataset._doc.id), audit_key)] = dict(
        run_time=dataset.get_run_info(audit_key).timestamp, ids=kept_ids,
        sample_ids=[sample_ids[r] for r in keep], result=result)
    return LabelQualityResults(audit_key, label_field, patches, kept_ids,
                               [sample_ids[r] for r in keep], result, skipped, names)


def compute_label_quality(samples, label_field, embeddings_field="embeddings",
                          audit_key="audit", classes=None, n_folds=5, k=10,
                          random_state=0, progress=None, progress_callback=None,
                          **score_kwargs):
    """Scores how likely each label is wrong and writes the scores to the dataset.

    Args:
        samples: a FiftyOne dataset or view
        label_field: a Classification field (one score per sample) or a
            Detections/Polylines field (one score per object; embeddings on
            each label, see ``compute_embeddings(patches_field=...)``); or a
            list of Classification fields, one per task of a multi-task
            dataset (see :func:`label_audit.multitask.compute_multitask_label_quality`,
            which then takes ``combine="max"`` too and returns a
            :class:`label_audit.multitask.MultiTaskQualityResults`)
        embeddings_field ("embeddings"): the sample field (or label
            attribute, for patches) holding the embeddings
        audit_key ("audit"): the run key and the prefix of the written fields
            (see :func:`field_names`)
        classes (None): the class list; default: the dataset's classes for
            the field, plus any label present (for a list of fields: a dict
            ``{field: classes}``)
        n_folds (5), k (10), random_state (0): see
            :func:`label_audit.scoring.score_label_issues`
        progress (None): show a progress bar (tqdm; the current stage, e.g. "Fitting
            fold models (repeat 2 of 5)", as its description); None uses
            ``fiftyone.config.show_progress_bars``
        progress_callback (None): called with ``(fraction, label)``, fraction in
            [0, 1], through every stage of the scoring too
        **score_kwargs: more arguments for ``score_label_issues``

    Rows with a missing label or embedding are not scored (their fields are
    set to None and they are listed in ``results.skipped``).

    The scores are computed before anything is written; the write is one bulk
    pass, and if it is interrupted (exception or Ctrl-C) the previous values
    of the written fields are restored, so the dataset is left as it was.

    Returns:
        a :class:`LabelQualityResults` (a ``MultiTaskQualityResults`` for a
        list of fields)
    """
    from .multitask import compute_multitask_label_quality

    if not isinstance(label_field, str):
        return compute_multitask_label_quality(
            samples, label_field, embeddings_field=embeddings_field, audit_key=audit_key,
            classes=classes, n_folds=n_folds, k=k, random_state=random_state,
            progress=progress, progress_callback=progress_callback, **score_kwargs)

    from .progress import ProgressReporter

    with ProgressReporter(progress, progress_callback, desc="Label quality") as report:
        return _compute_label_quality(samples, label_field, embeddings_field, audit_key, classes, n_folds,
                                      k, random_state, report, score_kwargs)


def _compute_label_quality(samples, label_field, embeddings_field, audit_key, classes, n_folds, k,
                           random_state, report, score_kwargs):
    from .multitask import refuse_group_key
    from .runs import refuse_generated_view
    from .scoring import score_label_issues
    from .writes import write_all_or_nothing

    refuse_generated_view(samples, "compute_label_quality")
    if len(samples) == 0:
        raise ValueError("The view is empty: there is nothing to score")
    refuse_group_key(samples, audit_key, label_field)
    check_audit_key(samples, audit_key, label_field)
    kind, list_field = _label_list_field(samples, label_field)
    patches = kind == "patches"
    if patches:
        path = "%s.%s.%s" % (label_field, list_field, embeddings_field)
    else:
        path = embeddings_field
    if not samples.has_field(path):
        raise ValueError(
            "No embeddings field %r: run label_audit.compute_embeddings(samples%s, "
            "embeddings_field=%r) first" % (path, ", patches_field=%r" % label_field
                                            if patches else "", embeddings_field))

    report(0.0, "Reading labels and embeddings")
    ids, sample_ids, labels, embs = _read_rows(samples, label_field, embeddings_field,
                                               kind, list_field)
    keep, skipped, dim = _valid_rows(ids, labels, embs, path, patches)
    if len(keep) == 0:
        raise ValueError("No %s in this view has both a label in %r and an embedding in %r"
                         % ("object" if patches else "sample", label_field, path))
    classes = _resolve_classes(samples, label_field, [labels[r] for r in keep], classes)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[labels[r]] for r in keep], dtype=np.int64)
    X = _stack(embs, keep, dim)
    del embs

    report(0.1, "Scoring %d %s" % (len(keep), "objects" if patches else "samples"))
    result = score_label_issues(y, features=X, classes=classes, n_folds=n_folds, k=k,
                                random_state=random_state, progress_callback=report.within(0.1, 0.8),
                                **score_kwargs)

    report(0.8, "Writing scores")
    names = field_names(audit_key)
    columns = _result_columns(result, classes, keep, len(ids), names)
    # the run record is part of the write: if saving it fails, the fields are restored too
    out = write_all_or_nothing(
        samples, [(columns, ids, sample_ids,
                   ("%s.%s" % (label_field, list_field)) if patches else None)],
        then=lambda: _record_run(samples, audit_key, label_field, embeddings_field, patches,
                                 classes, n_folds, k, random_state, names, result, y, ids,
                                 sample_ids, labels, keep, skipped))
    from .multitask import refresh_groups_of

    refresh_groups_of(samples, audit_key)  # a task of a multi-task audit: its combined fields
    report(1.0, "Done")
    return out
