"""Which label field, classes and rows a review step works on (FiftyOne glue).

A *row* is what was scored: a sample for a Classification field, a label
(object) for a Detections/Polylines field. Rows are named by ``(row_id,
sample_id)``: the sample id twice for samples, the label id and its sample id
for objects. The rows of a collection (a dataset, a view, a
``select_labels`` view, or a patches view) are resolved from that collection,
but their values are always read from and written to the root dataset, so a
patches view that is out of date never causes a stale read.

Decision state lives next to the scores (prefix = the audit key):

==============================  ==============================================
tag ``<key>:relabel``           relabel as ``<key>_decision_label``
tag ``<key>:delete``            exclude (or delete, with ``confirm_delete``)
tag ``<key>:ok``                reviewed, label is correct
``<key>_decision_label``        the chosen class (relabel decisions)
``<key>_original_label``        the label before the first applied correction
``<key>_excluded``              True once a deletion was applied (soft)
``<key>_applied``               the decision last applied to the row
==============================  ==============================================

Tags are sample tags for samples and label tags for objects; the other
values are sample fields or label attributes, like the scores.
"""

import numpy as np

DECISION_TAGS = ("relabel", "delete", "ok")
STATE_FIELDS = ("decision_label", "original_label", "excluded", "applied")


class ReviewContext:
    """The resolved audit key, label field and row layout of a collection."""

    def __init__(self, samples, audit_key="audit", label_field=None):
        from ..quality import RUN_METHOD, _label_list_field, field_names

        root = samples._root_dataset
        if getattr(samples, "_is_frames", False) or getattr(samples, "_is_clips", False):
            raise ValueError("The review works on samples or object patches; this is a frames/clips view "
                             "of dataset %r: pass the dataset or a view of its samples" % root.name)
        self.samples = samples
        self.root = root
        self.audit_key = audit_key
        self.run_info = None
        config = {}
        if audit_key in root.list_runs():
            info = root.get_run_info(audit_key)
            if getattr(info.config, "method", None) == RUN_METHOD:
                self.run_info = info
                config = info.config.serialize()
            else:
                from ..multitask import refuse_group_key

                refuse_group_key(root, audit_key, label_field)  # review one task at a time
        if label_field is None:
            label_field = config.get("label_field")
        if label_field is None:
            raise ValueError(
                "No label-quality run %r on dataset %r: run "
                "label_audit.compute_label_quality(dataset, label_field, audit_key=%r) "
                "first, or pass label_field" % (audit_key, root.name, audit_key))
        if config.get("label_field") not in (None, label_field):
            raise ValueError(
                "Audit run %r scored field %r, not %r: use another audit_key"
                % (audit_key, config["label_field"], label_field))
        kind, list_field = _label_list_field(root, label_field)
        self.label_field = label_field
        self.patches = kind == "patches"
        self.list_field = list_field
        self.label_path = "%s.%s" % (label_field, list_field) if self.patches else None
        self.config = config
        self.embeddings_field = config.get("embeddings_field", "embeddings")
        self.score_fields = field_names(audit_key)
        self.fields = {name: "%s_%s" % (audit_key, name) for name in STATE_FIELDS}
        self.tags = {d: "%s:%s" % (audit_key, d) for d in DECISION_TAGS}
        self._classes = config.get("classes")

    # --- naming --------------------------------------------------------------

    @property
    def what(self):
        return "label" if self.patches else "sample"

    def root_path(self, attr):
        """Path of a row attribute on the root dataset (``label``, ``tags``,
        ``id``, or a field/attribute name)."""
        if not self.patches:
            if attr == "label":
                return self.label_field + ".label"
            return attr
        return "%s.%s" % (self.label_path, attr)

    def view_path(self, attr):
        """Path of a row attribute in ``suspects`` views (patches views for objects)."""
        if not self.patches:
            return self.root_path(attr)
        return "%s.%s" % (self.label_field, attr)

    def classes(self):
        """The dataset's classes for the label field (run classes first)."""
        from ..quality import declared_classes

        root = self.root
        known = list(self._classes or [])
        present = root.distinct(self.root_path("label"))
        declared = declared_classes(root, self.label_field, set(known) | set(present))
        seen = set(known)
        for c in list(declared) + list(present):
            if c is not None and c not in seen:
                known.append(c)
                seen.add(c)
        return known

    # --- rows --------------------------------------------------------------

    def target_rows(self, samples=None):
        """``(row_ids, sample_ids)`` of the rows in ``samples`` (default: the
        collection this context was built from)."""
        samples = self.samples if samples is None else samples
        if not self.patches:
            if samples._is_patches:
                ids = samples.values("sample_id")
                ids = list(dict.fromkeys(ids))
                return ids, list(ids)
            ids = samples.values("id")
            return ids, list(ids)
        if samples._is_patches:
            field = getattr(samples, "patches_field", None)
            if field != self.label_field:
                raise ValueError("This patches view shows %r, not the audited field %r"
                                 % (field, self.label_field))
            sids, lids = samples.values(["sample_id", self.label_field + ".id"])
            return list(lids), list(sids)
        sids, lids = samples.values(["id", self.label_path + ".id"])
        rows, rows_sid = [], []
        for sid, ls in zip(sids, lids):
            for lid in ls or []:
                rows.append(lid)
                rows_sid.append(sid)
        return rows, rows_sid

    def read(self, row_ids, sample_ids, attrs):
        """Current values on the root dataset: ``{attr: [value per row]}``
        (None where missing; ``tags`` as lists)."""
        root = self.root
        out = {a: [None] * len(row_ids) for a in attrs}
        if not row_ids:
            return out
        paths = [a for a in attrs if a in ("label", "tags") or root.has_field(self.root_path(a))]
        view = root.select(list(dict.fromkeys(sample_ids)))
        if not self.patches:
            vals = view.values(["id"] + [self.root_path(a) for a in paths])
            pos = {sid: i for i, sid in enumerate(vals[0])}
            for r, rid in enumerate(row_ids):
                i = pos.get(rid)
                if i is None:
                    continue
                for a, col in zip(paths, vals[1:]):
                    out[a][r] = col[i]
        else:
            vals = view.values([self.root_path("id")] + [self.root_path(a) for a in paths])
            pos = {}
            for s, lids in enumerate(vals[0]):
                for j, lid in enumerate(lids or []):
                    pos[lid] = (s, j)
            for r, rid in enumerate(row_ids):
                p = pos.get(rid)
                if p is None:
                    continue
                s, j = p
                for a, col in zip(paths, vals[1:]):
                    col_s = col[s]
                    out[a][r] = col_s[j] if col_s is not None else None
        if "tags" in out:
            out["tags"] = [list(t) if t else [] for t in out["tags"]]
        return out

    def exists(self, row_ids, sample_ids):
        """Bool per row: the row is still in the root dataset."""
        ids = self.read(row_ids, sample_ids, ["id"])["id"] if self.patches else None
        if self.patches:
            return [i is not None for i in ids]
        present = set(self.root.select(list(row_ids)).values("id"))
        return [rid in present for rid in row_ids]

    def write(self, columns, row_ids, sample_ids):
        """Writes ``{attr: (kind, values)}`` to the rows on the root dataset,
        all or nothing (see :func:`label_audit.writes.write_rows`)."""
        from ..writes import write_rows

        if not row_ids:
            return
        cols = {}
        for attr, (kind, values) in columns.items():
            name = self.label_field + ".label" if (attr == "label" and not self.patches) else attr
            cols[name] = (kind, values)
        write_rows(self.root, cols, list(row_ids), list(sample_ids),
                   label_path=self.label_path)

    def scored_rows(self):
        """``(row_ids, sample_ids)`` of every row with a score in the root dataset."""
        score = self.score_fields["label_issue_score"]
        if not self.patches:
            view = self.root.exists(score)
            return self.target_rows(view)
        from fiftyone import ViewField as F

        view = self.root.filter_labels(self.label_field, F(score).exists())
        return self.target_rows(view)

    def reviewed_mask(self, tags):
        wanted = set(self.tags.values())
        return np.array([bool(wanted.intersection(t or ())) for t in tags], dtype=bool)

    def decision_of(self, tags):
        """The decision tagged on a row (None if none)."""
        for d, tag in self.tags.items():
            if tag in (tags or ()):
                return d
        return None
