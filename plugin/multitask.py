"""Multi-task classification: several Classification fields per sample (e.g.
the pose, expression and eyes of a face), audited together.

::

    import label_audit as la

    res = la.compute_label_quality(dataset, ["pose", "expression", "eyes"], audit_key="audit")
    print(res.summary())                  # per task: scored, flagged, ambiguous, outliers
    dataset.sort_by("audit_label_issue_score", reverse=True)   # worst samples over all tasks
    la.suspects(dataset, audit_key="audit_pose")               # review one task

Runs and fields, for ``label_fields=["pose", ...]`` and ``audit_key="audit"``:

* **one ordinary label-quality run per task**, key ``audit_pose``
  (:func:`task_key`: ``<audit_key>_<field>``), writing the usual fields
  ``audit_pose_label_issue_score``, ``audit_pose_suggested_label``, ... (see
  :mod:`label_audit.quality`). Every review function and operator works on
  one task by choosing that key (``suspects``, ``tag_decisions``,
  ``apply_decisions``, ``undo_decisions``, ``cleaning_rounds``,
  ``find_confused_classes``, ``export_cleanset``); decisions, originals and
  rounds of one task never touch another task's label field or fields.
* **a group record**, run ``audit`` (method :data:`GROUP_METHOD`), listing the
  tasks and their keys. It is not a label-quality run: the review operators
  do not offer it, and the review functions refuse it with a message naming
  the task keys.
* **combined per-sample fields** (prefix ``audit_``), recomputed from the
  task fields after every apply/undo of a task (:func:`refresh_combined`):

  ===========================  ================================================
  ``audit_label_issue_score``  the sample's combined score in [0, 1]:
                               ``combine="max"`` (default): the largest task
                               score (the sample is as suspicious as its worst
                               task); ``"noisy_or"``: ``1 - prod(1 - s_t)``
                               (several moderately suspicious tasks add up).
                               Higher = more likely at least one label of the
                               sample is wrong; sort descending
  ``audit_is_label_issue``     True when at least one task flagged the sample
  ``audit_num_label_issues``   number of tasks that flagged the sample
  ``audit_num_ambiguous``      number of tasks whose label is ambiguous (top-2
                               classes nearly tied)
  ``audit_worst_task``         the label field of the highest-scoring task
  ===========================  ================================================

  A task's row counts as unscored (left out of the combination) when its
  label or embedding is missing or its row was excluded by an applied
  deletion (``<task key>_excluded``). Samples with no scored task get None.
"""

import numpy as np

GROUP_METHOD = "label_audit.multitask_quality"
COMBINE = ("max", "noisy_or")

#: combined field suffix -> kind (see the module docstring)
COMBINED_FIELDS = (
    ("label_issue_score", "float"),
    ("is_label_issue", "bool"),
    ("num_label_issues", "int"),
    ("num_ambiguous", "int"),
    ("worst_task", "str"),
)


def task_key(audit_key, label_field):
    """The run key of one task of a multi-task audit: ``<audit_key>_<field>``."""
    from .runs import run_key_for

    return run_key_for(audit_key, label_field)


def combined_field_names(audit_key):
    """The combined per-sample field names of a multi-task audit."""
    return {name: "%s_%s" % (audit_key, name) for name, _ in COMBINED_FIELDS}


# --- science (plain numpy) ---------------------------------------------------


def combine_task_scores(scores, combine="max"):
    """Combines per-task label-issue scores into one score per sample.

    Args:
        scores: (N, T) float array of task scores in [0, 1] (higher = that
            task's label more likely wrong); NaN where a task is not scored
        combine ("max"): ``"max"``: the largest task score; ``"noisy_or"``:
            ``1 - prod_t(1 - s_t)`` over the scored tasks (treats the scores as
            independent error probabilities; grows with the number of
            suspicious tasks)

    Returns:
        ``(combined, worst)``: (N,) float64 in [0, 1], NaN where no task is
        scored; (N,) int64 index of the highest-scoring task, -1 where none
    """
    if combine not in COMBINE:
        raise ValueError("combine must be one of %s, not %r" % (", ".join(COMBINE), combine))
    S = np.asarray(scores, dtype=np.float64)
    if S.ndim != 2:
        raise ValueError("scores must be (N, T); got shape %s" % (S.shape,))
    scored = np.isfinite(S)
    any_scored = scored.any(axis=1)
    filled = np.where(scored, S, -np.inf)
    worst = np.where(any_scored, filled.argmax(axis=1), -1).astype(np.int64)
    if combine == "max":
        combined = filled.max(axis=1) if S.shape[1] else np.full(len(S), -np.inf)
    else:
        combined = 1.0 - np.prod(np.where(scored, 1.0 - np.clip(S, 0.0, 1.0), 1.0), axis=1)
    combined = np.where(any_scored, combined, np.nan)
    return combined, worst


def _combined_columns(n_rows, fields, scores, flags, ambiguous, combine, names):
    """``{field: (kind, values)}`` of the combined fields.

    ``scores`` (N, T) float with NaN where unscored; ``flags`` and
    ``ambiguous`` (N, T) bool (ignored where unscored)."""
    combined, worst = combine_task_scores(scores, combine)
    scored = np.isfinite(scores)
    n_issues = (flags & scored).sum(axis=1)
    n_amb = (ambiguous & scored).sum(axis=1)
    has = scored.any(axis=1)
    return {
        names["label_issue_score"]: ("float", [float(c) if h else None
                                               for c, h in zip(combined, has)]),
        names["is_label_issue"]: ("bool", [bool(n > 0) if h else None
                                           for n, h in zip(n_issues, has)]),
        names["num_label_issues"]: ("int", [int(n) if h else None
                                            for n, h in zip(n_issues, has)]),
        names["num_ambiguous"]: ("int", [int(n) if h else None for n, h in zip(n_amb, has)]),
        names["worst_task"]: ("str", [fields[w] if w >= 0 else None for w in worst]),
    }


# --- run records ---------------------------------------------------------------


def group_config(samples, audit_key):
    """The config of the multi-task group run ``audit_key`` (dict), or None."""
    root = samples._root_dataset
    if audit_key not in root.list_runs():
        return None
    info = root.get_run_info(audit_key)
    if getattr(info.config, "method", None) != GROUP_METHOD:
        return None
    return info.config.serialize()


def list_groups(samples):
    """The keys of the multi-task group runs of a dataset."""
    try:
        return sorted(samples._root_dataset.list_runs(method=GROUP_METHOD))
    except Exception:
        return []


def groups_of_task(samples, key):
    """The group keys listing ``key`` as one of their task keys."""
    out = []
    for g in list_groups(samples):
        cfg = group_config(samples, g) or {}
        if key in (cfg.get("task_keys") or {}).values():
            out.append(g)
    return out


def refuse_group_key(samples, audit_key, label_field=None):
    """Raises if ``audit_key`` is a multi-task group (a single-field run under
    it would overwrite the group's combined fields and record)."""
    cfg = group_config(samples, audit_key)
    if cfg is None:
        return
    keys = cfg.get("task_keys") or {}
    hint = (" Its key for %r is %r." % (label_field, keys[label_field])
            if label_field in keys else "")
    raise ValueError(
        "Audit key %r is a multi-task group (tasks %s, keys %s), not a single label-quality "
        "run: use a task key for one task, another audit_key for a new run, or "
        "dataset.delete_run(%r) first.%s"
        % (audit_key, ", ".join(map(repr, cfg.get("label_fields") or [])),
           ", ".join(map(repr, keys.values())), audit_key, hint))


def _check_keys(samples, audit_key, fields, task_keys):
    """Refuses keys that would overwrite another run or collide with each other."""
    from .quality import RUN_METHOD, field_names
    from .review.evaluate import evaluation_key
    from .review.state import review_key

    from .runs import check_key_syntax

    check_key_syntax(audit_key)
    root = samples._root_dataset
    runs = set(root.list_runs())
    if audit_key in runs:
        method = getattr(root.get_run_info(audit_key).config, "method", None)
        if method != GROUP_METHOD:
            raise ValueError(
                "Audit key %r already holds a %s run on dataset %r; a multi-task audit under "
                "it would overwrite that run's fields: choose another audit_key or "
                "dataset.delete_run(%r) first" % (audit_key, method, root.name, audit_key))
    keys = list(task_keys.values())
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError("Label fields %s map to the same task key(s) %s: rename a field"
                         % ([f for f in fields if task_keys[f] in dup], dup))
    reserved = {review_key(k): k for k in keys}
    reserved[evaluation_key(audit_key)] = "the evaluation record"
    for f, key in task_keys.items():
        if key in reserved:
            raise ValueError("Task %r's key %r collides with the record of %s: rename the "
                             "field or choose another audit_key" % (f, key, reserved[key]))
        if key in runs:
            cfg = root.get_run_info(key).config
            method = getattr(cfg, "method", None)
            other = cfg.serialize().get("label_field") if method == RUN_METHOD else None
            if method != RUN_METHOD or other != f:
                raise ValueError(
                    "Task %r's key %r already holds a %s run%s: choose another audit_key "
                    "or dataset.delete_run(%r) first"
                    % (f, key, method, " on %r" % other if other else "", key))
    written = list(combined_field_names(audit_key).values())
    for key in keys:
        written += list(field_names(key).values())
    clash = sorted({w for w in written if written.count(w) > 1} | (set(written) & set(fields)))
    if clash:
        raise ValueError("Fields %s would be written twice or overwrite a label field: "
                         "choose another audit_key" % clash[:5])


def validate_label_fields(samples, label_fields):
    """The list of label fields of a multi-task audit, checked: every one an
    existing Classification field, no duplicates. Raises a ValueError naming
    the offending field (and its type) otherwise."""
    import fiftyone as fo

    if isinstance(label_fields, str):
        label_fields = [label_fields]
    fields = list(label_fields or [])
    if not fields:
        raise ValueError("label_fields is empty: pass the Classification fields to audit")
    if not all(isinstance(f, str) for f in fields):
        raise ValueError("label_fields must be field names (strings); got %r" % (fields,))
    dup = sorted({f for f in fields if fields.count(f) > 1})
    if dup:
        raise ValueError("label_fields lists %s more than once" % dup)
    kinds, bad = {}, []
    for f in fields:
        field = samples.get_field(f)
        doc_type = getattr(field, "document_type", None)
        kinds[f] = ("no such field" if field is None else
                    getattr(doc_type, "__name__", None) or type(field).__name__)
        if doc_type is None or not issubclass(doc_type, fo.Classification):
            bad.append(f)
    if bad:
        raise ValueError(
            "Multi-task label quality needs Classification fields (one label per sample and "
            "task)%s: %s. Audit %r on its own (compute_label_quality(samples, %r)) or drop it "
            "from label_fields"
            % (", but the label fields have different types" if len(set(kinds.values())) > 1
               else "", ", ".join("%r is %s" % (f, kinds[f]) for f in fields), bad[0], bad[0]))
    return fields


# --- results -------------------------------------------------------------------


class MultiTaskQualityResults:
    """What a multi-task :func:`compute_multitask_label_quality` computed and wrote.

    Attributes:
        audit_key: the group's run key (prefix of the combined fields)
        label_fields: the tasks' label fields, in order
        task_keys: ``{field: task audit key}``
        tasks: ``{field: LabelQualityResults}`` of each task's run
        combine: "max" or "noisy_or"
        fields: combined result name -> written field name
        ids: the sample ids of the view, row-aligned with the arrays below
        label_issue_score: (N,) float combined score, NaN where no task scored
        num_label_issues: (N,) int tasks flagged per sample
        worst_task: (N,) list of the worst task's field (None where none)
    """

    def __init__(self, audit_key, label_fields, task_keys, tasks, combine, fields, ids,
                 label_issue_score, num_label_issues, worst_task):
        self.audit_key = audit_key
        self.label_fields = list(label_fields)
        self.task_keys = dict(task_keys)
        self.tasks = tasks
        self.combine = combine
        self.fields = fields
        self.ids = ids
        self.label_issue_score = label_issue_score
        self.num_label_issues = num_label_issues
        self.worst_task = worst_task

    def task(self, label_field):
        """The ``LabelQualityResults`` of one task."""
        return self.tasks[label_field]

    def task_counts(self):
        """Per task: ``{field: dict(key, classes, scored, skipped, flagged, ambiguous,
        outliers)}``."""
        out = {}
        for f in self.label_fields:
            t = self.tasks[f]
            r = t.result
            out[f] = dict(key=self.task_keys[f], classes=len(r.classes), scored=len(t.ids),
                          skipped=len(t.skipped), flagged=int(r.is_label_issue.sum()),
                          ambiguous=int(r.is_ambiguous.sum()),
                          outliers=int(r.is_outlier.sum()))
        return out

    def summary(self):
        return summary_text(self.audit_key, self.combine, self.fields, self.task_counts(),
                            len(self.ids), int((self.num_label_issues > 0).sum()))

    def __repr__(self):
        return self.summary()


def summary_text(audit_key, combine, fields, counts, n_samples, n_with_issue):
    """The per-task table of a multi-task audit (also used from its run record)."""
    width = max([4] + [len(f) for f in counts])
    kwidth = max([9] + [len(c["key"]) for c in counts.values()])
    lines = ["Multi-task label quality %r: %d tasks, %d samples, %d with at least one "
             "flagged task" % (audit_key, len(counts), n_samples, n_with_issue),
             "%-*s  %-*s  %7s  %6s  %7s  %7s  %9s  %8s" % (
                 width, "task", kwidth, "audit key", "classes", "scored", "skipped",
                 "flagged", "ambiguous", "outliers")]
    for f, c in counts.items():
        lines.append("%-*s  %-*s  %7d  %6d  %7d  %7d  %9d  %8d" % (
            width, f, kwidth, c["key"], c["classes"], c["scored"], c["skipped"], c["flagged"],
            c["ambiguous"], c["outliers"]))
    first = next(iter(counts.values()))["key"] if counts else audit_key
    lines.append(
        "Sort by %r (descending, %s over tasks) for the samples most likely to have a wrong "
        "label; review one task with its audit key, e.g. la.suspects(dataset, audit_key=%r)"
        % (fields["label_issue_score"], combine, first))
    return "\n".join(lines)


def group_summary(samples, audit_key="audit"):
    """The summary table of a multi-task audit, from its run record."""
    cfg = group_config(samples, audit_key)
    if cfg is None:
        raise ValueError("No multi-task audit %r on dataset %r"
                         % (audit_key, samples._root_dataset.name))
    res = samples._root_dataset.load_run_results(audit_key, cache=False)
    counts = dict(getattr(res, "tasks", {}) or {})
    return summary_text(audit_key, cfg.get("combine", "max"), cfg["fields"], counts,
                        int(getattr(res, "num_samples", 0) or 0),
                        int(getattr(res, "num_with_issue", 0) or 0))


# --- compute / refresh ------------------------------------------------------------


def compute_multitask_label_quality(samples, label_fields, embeddings_field="embeddings",
                                    audit_key="audit", classes=None, n_folds=5, k=10,
                                    random_state=0, combine="max", progress=None,
                                    progress_callback=None, **score_kwargs):
    """Scores several Classification fields (tasks) of the same samples.

    Each task is scored like ``compute_label_quality(samples, field,
    audit_key=task_key(audit_key, field))`` on the same embeddings; then the
    combined per-sample fields are computed (see the module docstring). All
    tasks are validated and scored before anything is written, and every
    field of every task is written in one bulk, all-or-nothing pass.

    Args:
        samples: a FiftyOne dataset or view
        label_fields: a list of Classification fields (the tasks)
        embeddings_field ("embeddings"): the sample field of the embeddings
        audit_key ("audit"): the group's run key and the prefix of the
            combined fields; task ``f`` gets run key ``<audit_key>_<f>``
        classes (None): ``{field: class list}`` for some tasks (default: the
            dataset's classes for the field plus any label present)
        n_folds (5), k (10), random_state (0), **score_kwargs: see
            :func:`label_audit.scoring.score_label_issues`
        combine ("max"): how task scores combine, "max" or "noisy_or" (see
            :func:`combine_task_scores`)
        progress (None), progress_callback (None): as in compute_label_quality

    Raises:
        ValueError: a field that is not a Classification field ("label fields
            of different types"), a task with fewer than two classes, no
            embeddings, or a key collision; nothing is written then

    Returns:
        a :class:`MultiTaskQualityResults`
    """
    from .progress import ProgressReporter

    with ProgressReporter(progress, progress_callback, desc="Label quality") as report:
        return _compute_multitask(samples, label_fields, embeddings_field, audit_key, classes, n_folds, k,
                                  random_state, combine, report, score_kwargs)


def _compute_multitask(samples, label_fields, embeddings_field, audit_key, classes, n_folds, k,
                       random_state, combine, report, score_kwargs):
    from .quality import (_record_run, _resolve_classes, _result_columns, _stack, _valid_rows,
                          field_names)
    from .runs import refuse_generated_view, save_run
    from .scoring import score_label_issues
    from .writes import write_all_or_nothing

    fields = validate_label_fields(samples, label_fields)
    if combine not in COMBINE:
        raise ValueError("combine must be one of %s, not %r" % (", ".join(COMBINE), combine))
    if classes is not None and not isinstance(classes, dict):
        raise ValueError("With several label fields, classes must be a dict {field: [classes]}")
    unknown = sorted(set(classes or {}) - set(fields))
    if unknown:
        raise ValueError("classes names fields %s that are not in label_fields %s"
                         % (unknown, fields))
    refuse_generated_view(samples, "compute_label_quality")
    if len(samples) == 0:
        raise ValueError("The view is empty: there is nothing to score")
    keys = {f: task_key(audit_key, f) for f in fields}
    _check_keys(samples, audit_key, fields, keys)
    if not samples.has_field(embeddings_field):
        raise ValueError(
            "No embeddings field %r: run label_audit.compute_embeddings(samples, "
            "embeddings_field=%r) first" % (embeddings_field, embeddings_field))

    report(0.0, "Reading labels and embeddings")
    values = samples.values(["id", embeddings_field] + [f + ".label" for f in fields])
    ids, embs, labels = list(values[0]), values[1], values[2:]
    n = len(ids)

    # validate every task before scoring any
    prepared = []
    for f, labs in zip(fields, labels):
        keep, skipped, dim = _valid_rows(ids, labs, embs, embeddings_field, False)
        if not keep:
            raise ValueError("Task %r: no sample in this view has both a label in %r and an "
                             "embedding in %r" % (f, f, embeddings_field))
        try:
            cls = _resolve_classes(samples, f, [labs[r] for r in keep], (classes or {}).get(f))
        except ValueError as e:
            hint = (". Drop %r from label_fields (a task with one class has nothing to confuse)" % f
                    if "at least two classes" in str(e) else "")
            raise ValueError("Task %r cannot be audited: %s%s" % (f, e, hint)) from None
        prepared.append((f, labs, keep, skipped, dim, cls))
    dims = {p[0]: p[4] for p in prepared}
    if len(set(dims.values())) > 1:
        raise ValueError(
            "The embeddings in %r have different dimensions across tasks (%s): one embedding "
            "model for every sample is needed; recompute them with label_audit.compute_embeddings"
            % (embeddings_field, ", ".join("%d for task %r" % (d, f) for f, d in dims.items())))

    # one float32 matrix of the rows with an embedding; tasks index into it
    # only rows some task kept (validated there): an unlabelled sample with an odd
    # embedding must not reach the matrix
    with_emb = sorted(set().union(*(set(p[2]) for p in prepared)))
    pos = {r: i for i, r in enumerate(with_emb)}
    X_all = _stack(embs, with_emb, prepared[0][4])
    del embs

    scored = []
    for t, (f, labs, keep, skipped, dim, cls) in enumerate(prepared):
        lo, hi = 0.05 + 0.8 * t / len(fields), 0.05 + 0.8 * (t + 1) / len(fields)
        report(lo, "Scoring task %r (%d samples)" % (f, len(keep)))
        index = {c: i for i, c in enumerate(cls)}
        y = np.array([index[labs[r]] for r in keep], dtype=np.int64)
        X = X_all[[pos[r] for r in keep]]
        try:
            result = score_label_issues(y, features=X, classes=cls, n_folds=n_folds, k=k,
                                        random_state=random_state,
                                        progress_callback=report.within(lo, hi, "task %r: " % f),
                                        **score_kwargs)
        except ValueError as e:
            raise ValueError("Task %r: %s Nothing was written" % (f, e)) from None
        scored.append((f, labs, keep, skipped, cls, y, result))
    del X_all

    report(0.85, "Writing scores")
    columns = {}
    S = np.full((n, len(fields)), np.nan)
    flags = np.zeros((n, len(fields)), bool)
    amb = np.zeros((n, len(fields)), bool)
    for t, (f, labs, keep, skipped, cls, y, result) in enumerate(scored):
        columns.update(_result_columns(result, cls, keep, n, field_names(keys[f])))
        S[keep, t] = result.label_issue_score
        flags[keep, t] = result.is_label_issue
        amb[keep, t] = result.is_ambiguous
    excluded = _excluded_matrix(samples, fields, keys)
    if excluded is not None:
        S[excluded] = np.nan
    names = combined_field_names(audit_key)
    columns.update(_combined_columns(n, fields, S, flags, amb, combine, names))
    existed = set(samples._root_dataset.list_runs())

    def record_runs():
        report(0.95, "Recording the runs")
        try:
            tasks = {}
            for f, labs, keep, skipped, cls, y, result in scored:
                tasks[f] = _record_run(samples, keys[f], f, embeddings_field, False, cls, n_folds, k,
                                       random_state, field_names(keys[f]), result, y, ids, ids, labs,
                                       keep, skipped)
            combined, worst = combine_task_scores(S, combine)
            n_issues = (flags & np.isfinite(S)).sum(axis=1)
            out = MultiTaskQualityResults(audit_key, fields, keys, tasks, combine, names, ids,
                                          combined, n_issues,
                                          [fields[w] if w >= 0 else None for w in worst])
            config = dict(label_fields=fields, task_keys=keys, embeddings_field=embeddings_field,
                          combine=combine, fields=names, n_folds=n_folds, k=k,
                          random_state=random_state)
            save_run(samples, audit_key, GROUP_METHOD, config,
                     dict(tasks=out.task_counts(), num_samples=n,
                          num_with_issue=int((n_issues > 0).sum())))
            return out
        except BaseException:  # task records this call created go with the fields
            root = samples._root_dataset
            for key in keys.values():
                if key not in existed and key in root.list_runs():
                    root.delete_run(key)
            raise

    # the run records are part of the write: if saving one fails, the fields are restored and
    # the task records this call created are removed (a task record that existed before keeps
    # its new version: each save is safe, but there is no undo of a replaced record)
    out = write_all_or_nothing(samples, [(columns, ids, ids, None)], then=record_runs)
    report(1.0, "Done")
    return out


def _excluded_matrix(samples, fields, keys):
    """(N, T) bool: the task's row was excluded by an applied deletion; None if none."""
    paths = ["%s_excluded" % keys[f] for f in fields]
    present = [p for p in paths if samples._root_dataset.has_field(p)]
    if not present:
        return None
    vals = dict(zip(present, samples.values(present)))
    n = len(samples)
    M = np.zeros((n, len(fields)), bool)
    for t, p in enumerate(paths):
        if p in vals:
            M[:, t] = [bool(v) for v in vals[p]]
    return M


def refresh_combined(samples, audit_key="audit"):
    """Recomputes the combined fields of a multi-task audit from the current
    task fields (after a task's decisions were applied, re-scored or undone).
    Only samples whose combined values changed are written.

    Returns:
        the number of samples updated
    """
    from .writes import write_rows

    root = samples._root_dataset
    cfg = group_config(root, audit_key)
    if cfg is None:
        raise ValueError("No multi-task audit %r on dataset %r" % (audit_key, root.name))
    fields, keys = cfg["label_fields"], cfg["task_keys"]
    names = cfg.get("fields") or combined_field_names(audit_key)
    suffixes = ("label_issue_score", "is_label_issue", "is_ambiguous", "excluded")
    paths = ["%s_%s" % (keys[f], s) for f in fields for s in suffixes]
    current = [names[name] for name, _ in COMBINED_FIELDS]
    wanted = [p for p in paths + current if root.has_field(p)]
    vals = dict(zip(wanted, root.values(wanted))) if wanted else {}
    ids = root.values("id")
    n = len(ids)

    def col(path):
        return vals.get(path) or [None] * n

    S = np.full((n, len(fields)), np.nan)
    flags = np.zeros((n, len(fields)), bool)
    amb = np.zeros((n, len(fields)), bool)
    for t, f in enumerate(fields):
        key = keys[f]
        for i, (s, fl, am, ex) in enumerate(zip(col(key + "_label_issue_score"),
                                                col(key + "_is_label_issue"),
                                                col(key + "_is_ambiguous"),
                                                col(key + "_excluded"))):
            if s is not None and not ex:
                S[i, t] = s
                flags[i, t] = bool(fl)
                amb[i, t] = bool(am)
    columns = _combined_columns(n, fields, S, flags, amb, cfg.get("combine", "max"), names)
    changed = [i for i in range(n) if any(
        _differs(columns[name][1][i], col(name)[i]) for name in columns)]
    if changed:
        sub = {name: (kind, [values[i] for i in changed])
               for name, (kind, values) in columns.items()}
        write_rows(root, sub, [ids[i] for i in changed], [ids[i] for i in changed])
    return len(changed)


def _differs(new, old):
    if new is None or old is None:
        return (new is None) != (old is None)
    if isinstance(new, float):
        return not np.isclose(new, old, rtol=0, atol=1e-12)
    return new != old


def refresh_groups_of(samples, key):
    """Refreshes the combined fields of every group that lists task ``key``
    (a no-op for single-field runs). Returns the group keys refreshed."""
    groups = groups_of_task(samples, key)
    for g in groups:
        refresh_combined(samples, g)
    return groups
