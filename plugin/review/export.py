"""``export_cleanset``: the cleaned labels as files (and optionally a dataset copy)."""

import csv
import os

from .context import ReviewContext

COLUMNS = ("id", "sample_id", "filepath", "given_label", "suggested_label",
           "label_issue_score", "importance", "self_confidence", "normalized_margin",
           "knn_agreement", "outlier_score", "suggested_confidence", "is_label_issue",
           "is_outlier", "is_ambiguous", "decision", "applied", "excluded", "final_label")


class ExportReport:
    """Attributes: ``csv_path``, ``exclude_path``, ``num_rows``,
    ``num_excluded``, ``num_relabeled``, ``dataset`` (the cleaned clone or None)."""

    def __init__(self, csv_path, exclude_path, num_rows, num_excluded, num_relabeled, dataset):
        self.csv_path = csv_path
        self.exclude_path = exclude_path
        self.num_rows = num_rows
        self.num_excluded = num_excluded
        self.num_relabeled = num_relabeled
        self.dataset = dataset

    def summary(self):
        s = ("Exported %d rows to %s (%d relabeled, %d excluded, listed in %s)"
             % (self.num_rows, self.csv_path, self.num_relabeled, self.num_excluded,
                self.exclude_path))
        if self.dataset is not None:
            s += "; cleaned copy: dataset %r" % self.dataset.name
        return s

    def __repr__(self):
        return self.summary()


def export_cleanset(samples, output_dir, audit_key="audit", label_field=None,
                    clone_name=None, overwrite=False):
    """Writes ``cleanset.csv`` and ``exclude.txt`` to ``output_dir``.

    ``cleanset.csv`` has one row per sample (Classification field) or label
    (object field): ids, filepath, the given (original) label, the suggested
    label, the scores and flags, the decision tagged, the decision applied,
    whether it is excluded, and the final label (empty when excluded).
    ``exclude.txt`` lists the excluded rows, one a line: the filepath for
    samples, ``filepath<TAB>label id`` for objects.

    Args:
        samples: a dataset or view
        output_dir: a folder (created)
        audit_key ("audit"), label_field (None): the audit run / field
        clone_name (None): also clone ``samples`` to a new dataset of that
            name without the excluded samples (or objects)
        overwrite (False): replace existing files

    Returns:
        an :class:`ExportReport`
    """
    import fiftyone as fo

    ctx = ReviewContext(samples, audit_key, label_field)
    os.makedirs(output_dir, exist_ok=True)
    csv_path = os.path.join(output_dir, "cleanset.csv")
    exclude_path = os.path.join(output_dir, "exclude.txt")
    for path in (csv_path, exclude_path):
        if os.path.exists(path) and not overwrite:
            raise ValueError("%s exists: pass overwrite=True to replace it" % path)
    if clone_name is not None and fo.dataset_exists(clone_name):
        raise ValueError("A dataset named %r exists: choose another clone_name" % clone_name)
    ids, sids = ctx.target_rows()
    F, S = ctx.fields, ctx.score_fields
    score_names = [c for c in COLUMNS if c in S]
    attrs = ["label", "tags"] + [S[c] for c in score_names] + list(F.values())
    vals = ctx.read(ids, sids, attrs)
    paths = dict(zip(*ctx.root.select(list(dict.fromkeys(sids))).values(["id", "filepath"])))
    # both files are written to temporary names and then renamed: an error or Ctrl-C half-way
    # leaves the previous export whole (never a truncated cleanset.csv beside an old exclude.txt)
    csv_tmp, exclude_tmp = csv_path + ".tmp", exclude_path + ".tmp"
    try:
        n_excl, n_relab = _write_files(ctx, ids, sids, vals, paths, score_names, csv_tmp, exclude_tmp)
        os.replace(exclude_tmp, exclude_path)
        os.replace(csv_tmp, csv_path)
    finally:
        for tmp in (csv_tmp, exclude_tmp):
            if os.path.exists(tmp):
                os.remove(tmp)
    clone = None
    if clone_name is not None:
        from fiftyone import ViewField as VF

        clone = samples.clone(clone_name) if not samples._is_patches else \
            ctx.root.select(list(dict.fromkeys(sids))).clone(clone_name)
        if ctx.patches:
            clone.delete_labels(view=clone.filter_labels(ctx.label_field,
                                                         VF(F["excluded"]) == True),  # noqa: E712
                                fields=ctx.label_field)
        elif clone.has_field(F["excluded"]):
            clone.delete_samples(clone.match(VF(F["excluded"]) == True))  # noqa: E712
    return ExportReport(csv_path, exclude_path, len(ids), n_excl, n_relab, clone)


def _write_files(ctx, ids, sids, vals, paths, score_names, csv_path, exclude_path):
    """Writes the cleanset CSV and the exclude list; returns the numbers of excluded and
    relabelled rows."""
    F, S = ctx.fields, ctx.score_fields
    n_excl = n_relab = 0
    excluded_lines = []
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for r, (rid, sid) in enumerate(zip(ids, sids)):
            lab = vals["label"][r]
            orig = vals[F["original_label"]][r]
            excluded = bool(vals[F["excluded"]][r])
            relabeled = orig is not None and orig != lab
            n_excl += excluded
            n_relab += relabeled and not excluded
            if excluded:
                excluded_lines.append(paths[sid] if not ctx.patches
                                      else "%s\t%s" % (paths[sid], rid))
            row = dict(id=rid, sample_id=sid, filepath=paths[sid],
                       given_label=orig if orig is not None else lab,
                       decision=ctx.decision_of(vals["tags"][r]) or "",
                       applied=vals[F["applied"]][r] or "", excluded=excluded,
                       final_label="" if excluded else lab)
            for c in score_names:
                v = vals[S[c]][r]
                row[c] = "" if v is None else v
            w.writerow([row[c] for c in COLUMNS])
    with open(exclude_path, "w") as f:
        f.writelines(line + "\n" for line in excluded_lines)
    return n_excl, n_relab
