"""``tag_decisions``: record review decisions as FiftyOne tags (not applied yet).

Decisions, on the rows (samples or objects) of the given collection:

* ``"relabel"`` (with ``label``): tag ``<key>:relabel`` and store the class in
  ``<key>_decision_label``
* ``"accept"``: relabel as the row's ``<key>_suggested_label`` (rows whose
  suggestion is their label are marked ``ok``)
* ``"delete"``: tag ``<key>:delete`` (excluded on apply; hard delete only
  with ``apply_decisions(confirm_delete=True)``)
* ``"ok"``: tag ``<key>:ok``: reviewed, label correct
* ``"clear"``: remove the decision

A new decision replaces the previous one of the row. Nothing touches the
labels until :func:`label_audit.review.apply.apply_decisions`.
"""

from collections import Counter

from .context import ReviewContext
from .suspects import ensure_snapshot

DECISIONS = ("relabel", "accept", "delete", "ok", "clear")


class DecisionReport:
    """What :func:`tag_decisions` recorded: ``counts`` per decision,
    ``skipped`` ``{row_id: reason}``, ``ids`` of the tagged rows."""

    def __init__(self, counts, skipped, ids, what):
        self.counts = dict(counts)
        self.skipped = skipped
        self.ids = ids
        self.what = what

    @property
    def num_tagged(self):
        return len(self.ids)

    def summary(self):
        parts = ["%d %s" % (n, d) for d, n in sorted(self.counts.items())]
        s = "Tagged %d %s(s): %s" % (self.num_tagged, self.what, ", ".join(parts) or "none")
        if self.skipped:
            reasons = Counter(self.skipped.values())
            s += "; skipped %d (%s)" % (len(self.skipped), ", ".join(
                "%d: %s" % (n, r) for r, n in reasons.items()))
        return s

    def __repr__(self):
        return self.summary()


def tag_decisions(samples, decision, label=None, audit_key="audit", label_field=None):
    """Tags a decision on every row (sample or object) of ``samples``.

    Args:
        samples: the rows to decide on: a view of the selected samples, a
            ``select_labels`` view of the selected objects, or a patches view
        decision: one of ``relabel``, ``accept``, ``delete``, ``ok``, ``clear``
        label (None): the new class, for ``relabel`` (must be one of the
            dataset's classes for the field)
        audit_key ("audit"), label_field (None): the audit run / field

    Rows without a label (or, for ``accept``, without a suggestion) are
    skipped and reported; if every row is skipped a ValueError says why.

    Returns:
        a :class:`DecisionReport`
    """
    if decision not in DECISIONS:
        raise ValueError("Unknown decision %r: use one of %s" % (decision, ", ".join(DECISIONS)))
    ctx = ReviewContext(samples, audit_key, label_field)
    if decision == "relabel":
        classes = ctx.classes()
        if label is None or label not in classes:
            raise ValueError(
                "Cannot relabel as %r: it is not one of the classes of %r in dataset %r "
                "(%s). Add it to the dataset's classes first if it is a new class"
                % (label, ctx.label_field, ctx.root.name, ", ".join(map(str, classes[:50]))))
    elif label is not None:
        raise ValueError("label is only used with decision='relabel'")
    ids, sids = ctx.target_rows()
    if not ids:
        raise ValueError("No %ss to decide on: select some first" % ctx.what)
    ensure_snapshot(ctx)
    suggested_field = ctx.score_fields["suggested_label"]
    vals = ctx.read(ids, sids, ["label", "tags", suggested_field])
    tag_values = set(ctx.tags.values())
    rows, rows_sid, new_tags, new_dl = [], [], [], []
    counts, skipped = Counter(), {}
    for rid, sid, lab, tags, sugg in zip(ids, sids, vals["label"], vals["tags"],
                                         vals[suggested_field]):
        if lab is None and decision not in ("delete", "clear"):
            skipped[rid] = "no label in %r" % ctx.label_field
            continue
        d, target = decision, None
        if d == "accept":
            if sugg is None:
                skipped[rid] = "no suggested label (not scored)"
                continue
            d, target = ("ok", None) if sugg == lab else ("relabel", sugg)
        elif d == "relabel":
            target = label
            if target == lab:
                d, target = "ok", None
        kept = [t for t in tags if t not in tag_values]
        if d != "clear":
            kept.append(ctx.tags[d])
        rows.append(rid)
        rows_sid.append(sid)
        new_tags.append(kept)
        new_dl.append(target)
        counts[d] += 1
    if not rows:
        reasons = sorted(set(skipped.values()))
        raise ValueError("None of the %d selected %ss can take decision %r: %s"
                         % (len(ids), ctx.what, decision, "; ".join(reasons)))
    ctx.write({"tags": ("str", new_tags), ctx.fields["decision_label"]: ("label", new_dl)},
              rows, rows_sid)
    return DecisionReport(counts, skipped, rows, ctx.what)
