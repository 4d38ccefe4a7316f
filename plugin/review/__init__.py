"""The review workflow: find confused classes, review suspects, decide, apply
(and undo), measure cleaning rounds, export the clean set.

Science over arrays lives in :mod:`.probe` (no FiftyOne); the other modules
are FiftyOne glue. Public functions are exported lazily from ``label_audit``::

    import label_audit as la

    report = la.find_confused_classes(dataset)          # after compute_label_quality
    view = la.suspects(dataset, classes=[report.class_of_interest], score="importance")
    la.tag_decisions(view.select(ids), "relabel", label="7")
    la.apply_decisions(dataset)                          # relabel/exclude + re-score + round
    la.cleaning_rounds(dataset)                          # AUC per round, plateau?
    la.undo_decisions(dataset)                           # exact undo of the last apply
    la.export_cleanset(dataset, "/tmp/clean")
    la.evaluate_cleaning(dataset, reference_fields="true_label")   # original vs cleaned vs suggested

Multi-task audits (several label fields, see :mod:`label_audit.multitask`)
are reviewed one task at a time with the task's key (``audit_<field>``);
:mod:`.multitask_export` writes every task's labels to one CSV.
"""
