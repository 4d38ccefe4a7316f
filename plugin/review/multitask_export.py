"""``export_multitask_labels``: one CSV with every task's original, cleaned and
suggested label per sample (multi-task audits; see :mod:`label_audit.multitask`).

Columns of ``multitask_labels.csv`` (one row per sample of the collection):

``id``, ``filepath``, then the combined ``label_issue_score``,
``num_label_issues`` and ``worst_task``, then for each task ``t``:

=================  ============================================================
``t_original``     the label before any applied correction
``t_cleaned``      the current label after the applied decisions; empty when
                   the row was excluded by an applied deletion
``t_suggested``    the task's suggested label (latest scoring)
``t_score``        the task's ``label_issue_score``
``t_flagged``      the task's ``is_label_issue``
``t_ambiguous``    the task's ``is_ambiguous``
``t_decision``     the decision tagged and not necessarily applied yet
``t_applied``      the decision last applied
=================  ============================================================
"""

import csv
import os

CSV_NAME = "multitask_labels.csv"
TASK_COLUMNS = ("original", "cleaned", "suggested", "score", "flagged", "ambiguous",
                "decision", "applied")


class MultiTaskExportReport:
    """Attributes: ``csv_path``, ``num_rows``, ``tasks`` ``{task: dict(relabeled,
    excluded, suggestion_differs)}`` (counts over the exported rows)."""

    def __init__(self, csv_path, num_rows, tasks):
        self.csv_path = csv_path
        self.num_rows = num_rows
        self.tasks = tasks

    def summary(self):
        parts = ["%s: %d relabeled, %d excluded, %d with another suggested label"
                 % (t, c["relabeled"], c["excluded"], c["suggestion_differs"])
                 for t, c in self.tasks.items()]
        return "Exported %d samples to %s (%s)" % (self.num_rows, self.csv_path,
                                                   "; ".join(parts))

    def __repr__(self):
        return self.summary()


def export_multitask_labels(samples, output_dir, audit_key="audit", overwrite=False):
    """Writes ``multitask_labels.csv`` (see the module docstring) to ``output_dir``.

    Args:
        samples: a dataset or view
        output_dir: a folder (created)
        audit_key ("audit"): the multi-task audit (group key)
        overwrite (False): replace an existing file

    Returns:
        a :class:`MultiTaskExportReport`
    """
    from ..multitask import combined_field_names, group_config

    root = samples._root_dataset
    cfg = group_config(root, audit_key)
    if cfg is None:
        raise ValueError(
            "No multi-task audit %r on dataset %r: run label_audit.compute_label_quality("
            "dataset, [field, ...], audit_key=%r) first (for one field use export_cleanset)"
            % (audit_key, root.name, audit_key))
    os.makedirs(output_dir, exist_ok=True)
    csv_path = os.path.join(output_dir, CSV_NAME)
    if os.path.exists(csv_path) and not overwrite:
        raise ValueError("%s exists: pass overwrite=True to replace it" % csv_path)
    fields, keys = cfg["label_fields"], cfg["task_keys"]
    combined = cfg.get("fields") or combined_field_names(audit_key)
    paths = {"id": "id", "filepath": "filepath", "tags": "tags",
             "label_issue_score": combined["label_issue_score"],
             "num_label_issues": combined["num_label_issues"],
             "worst_task": combined["worst_task"]}
    for f in fields:
        k = keys[f]
        paths.update({
            (f, "current"): f + ".label", (f, "original_label"): k + "_original_label",
            (f, "excluded"): k + "_excluded", (f, "suggested"): k + "_suggested_label",
            (f, "score"): k + "_label_issue_score", (f, "flagged"): k + "_is_label_issue",
            (f, "ambiguous"): k + "_is_ambiguous", (f, "applied"): k + "_applied"})
    present = [n for n, p in paths.items() if p in ("id", "filepath", "tags")
               or root.has_field(p)]
    vals = dict(zip(present, samples.values([paths[n] for n in present])))
    n = len(vals["id"])

    def col(name):
        return vals.get(name) or [None] * n

    header = ["id", "filepath", "label_issue_score", "num_label_issues", "worst_task"] + [
        "%s_%s" % (f, c) for f in fields for c in TASK_COLUMNS]
    counts = {f: dict(relabeled=0, excluded=0, suggestion_differs=0) for f in fields}
    tmp = csv_path + ".tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i in range(n):
            row = [vals["id"][i], vals["filepath"][i]] + [
                "" if col(c)[i] is None else col(c)[i]
                for c in ("label_issue_score", "num_label_issues", "worst_task")]
            tags = vals["tags"][i] or []
            for f in fields:
                cur = col((f, "current"))[i]
                orig = col((f, "original_label"))[i]
                orig = cur if orig is None else orig
                excluded = bool(col((f, "excluded"))[i])
                sugg = col((f, "suggested"))[i]
                prefix = keys[f] + ":"
                decision = next((t[len(prefix):] for t in tags if t.startswith(prefix)), "")
                c = counts[f]
                c["excluded"] += excluded
                c["relabeled"] += (not excluded) and orig is not None and orig != cur
                c["suggestion_differs"] += sugg is not None and cur is not None and sugg != cur
                for v in (orig, None if excluded else cur, sugg, col((f, "score"))[i],
                          col((f, "flagged"))[i], col((f, "ambiguous"))[i], decision,
                          col((f, "applied"))[i]):
                    row.append("" if v is None else v)
            w.writerow(row)
    os.replace(tmp, csv_path)
    return MultiTaskExportReport(csv_path, n, counts)
