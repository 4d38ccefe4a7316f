"""``suspects``: the view of the samples (or object patches) to review next."""

from .context import ReviewContext
from .state import load_state, save_state, snapshot

#: short names accepted for ``score`` (field suffixes of compute_label_quality)
SCORES = ("label_issue_score", "importance", "self_confidence", "normalized_margin",
          "knn_agreement", "outlier_score", "suggested_confidence")

#: scores of a multi-task audit's combined fields (see label_audit.multitask)
GROUP_SCORES = ("label_issue_score", "num_label_issues", "num_ambiguous")


def ensure_snapshot(ctx):
    """Records the scored labels of the audit run on first use (for the
    stale-score check of :func:`apply_decisions`)."""
    state = load_state(ctx)
    before = (state.get("snapshot") or {}).get("version")
    snap = snapshot(ctx, state)
    if snap.get("version") != before:
        save_state(ctx, state)
    return state


def suspects(samples, audit_key="audit", score="label_issue_score", n=25, classes=None,
             bottom=False, include_reviewed=False, label_field=None):
    """The top-``n`` (or bottom-``n``) rows by a score, for review.

    Args:
        samples: a dataset or view (for an object field: its patches view is
            built; a patches view of the field is used as is)
        audit_key ("audit"): the compute_label_quality run; for a multi-task
            audit's group key: the samples by the combined score over tasks
            (``score`` one of :data:`GROUP_SCORES`; decisions are taken per
            task, with the task's key)
        score ("label_issue_score"): a score name (see :data:`SCORES`) or a
            field name
        n (25): how many (None: all)
        classes (None): only rows whose current label is one of these
        bottom (False): lowest scores first instead of highest
        include_reviewed (False): keep rows that already carry a decision tag (for a
            multi-task group key: a decision tag of any task)
        label_field (None): default: the audit run's field

    Returns:
        a sorted view: samples, or patches of the label field for objects
    """
    from fiftyone import ViewField as F

    from ..multitask import group_config

    group = group_config(samples, audit_key)
    if group is not None and label_field is None:
        return _group_suspects(samples, audit_key, group, score, n, classes, bottom, include_reviewed)
    ctx = ReviewContext(samples, audit_key, label_field)
    field = ctx.score_fields.get(score, score)
    if field not in ctx.score_fields.values():
        raise ValueError("Unknown score %r: use one of %s" % (score, ", ".join(SCORES)))
    if n is not None and int(n) <= 0:
        raise ValueError("n must be a positive number of %ss (or None for all)" % ctx.what)
    if classes:
        classes = [classes] if isinstance(classes, str) else list(classes)
        known = set(ctx.classes())
        unknown = [c for c in classes if c not in known]
        if unknown:
            raise ValueError("Classes %s are not classes of %r (known: %s)"
                             % (unknown, ctx.label_field, sorted(known)[:30]))
    ensure_snapshot(ctx)
    tags = list(ctx.tags.values())
    if not ctx.patches:
        if samples._is_patches:
            raise ValueError("%r is a per-sample field: pass the dataset, not a patches view"
                             % ctx.label_field)
        view = samples.exists(field)
        if classes:
            view = view.match(F(ctx.label_field + ".label").is_in(classes))
        if not include_reviewed:
            view = view.match_tags(tags, bool=False)
        view = view.sort_by(field, reverse=not bottom)
    else:
        view = samples if samples._is_patches else samples.to_patches(ctx.label_field)
        base = ctx.label_field + "."
        view = view.exists(base + field)
        if classes:
            view = view.match(F(base + "label").is_in(classes))
        if not include_reviewed:
            view = view.match(~F(base + "tags").contains(tags))
        view = view.sort_by(base + field, reverse=not bottom)
    if n is not None:
        view = view.limit(int(n))
    return view


def _group_suspects(samples, audit_key, group, score, n, classes, bottom, include_reviewed=False):
    """Top-``n`` samples of a multi-task audit by a combined field; without
    ``include_reviewed``, samples with a decision tag of any task are left out (each
    task's own suspects view still lists its undecided rows)."""
    from .context import DECISION_TAGS

    names = group.get("fields") or {}
    if score not in GROUP_SCORES:
        raise ValueError("Audit key %r is a multi-task audit: sort by one of %s, or review one "
                         "task with its key (%s)" % (audit_key, ", ".join(GROUP_SCORES),
                                                     ", ".join(group["task_keys"].values())))
    if classes:
        raise ValueError("classes belong to one task: pass that task's audit key (%s)"
                         % ", ".join(group["task_keys"].values()))
    if n is not None and int(n) <= 0:
        raise ValueError("n must be a positive number of samples (or None for all)")
    field = names.get(score, "%s_%s" % (audit_key, score))
    view = samples.exists(field)
    if not include_reviewed:
        view = view.match_tags(["%s:%s" % (tk, d) for tk in group["task_keys"].values()
                                for d in DECISION_TAGS], bool=False)
    view = view.sort_by(field, reverse=not bottom)
    return view.limit(int(n)) if n is not None else view
