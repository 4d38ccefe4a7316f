"""Operators of the review workflow (thin glue over ``label_audit.review``).

=========================  ===================================================
find_confused_classes      linear probe confusion; opens the worst class
show_suspects              sets the view to the top-N rows by a score (a
                           multi-task audit: by the combined score)
relabel / accept_suggested_labels / mark_for_deletion / mark_as_correct /
clear_decisions            tag decisions on the selected samples or labels
apply_decisions            write them (delegable), re-score, record a round
undo_decisions             exact undo of the last apply
cleaning_rounds            the rounds and whether the AUC plateaued
export_cleanset            CSV + exclude list (+ cleaned clone), delegable; for a
                           multi-task audit: the per-task labels CSV
=========================  ===================================================
"""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .common import (DelegableOperator, Progress, add_field_choice, delegable_config,
                     delegation_input)


def _audit_keys(ctx):
    """The label-quality runs: single-field runs and the tasks of multi-task audits
    (multi-task group records are not runs one can review)."""
    try:
        return sorted(ctx.dataset.list_runs(method="label_audit.label_quality"))
    except Exception:
        return []


def _groups(ctx):
    from label_audit.multitask import list_groups

    return list_groups(ctx.dataset)


def _is_group(ctx):
    """True when the chosen (or the default, first offered) key is a multi-task audit."""
    groups = _groups(ctx)
    key = ctx.params.get("audit_key") or (groups[0] if groups else None)
    return key is not None and key in groups


def _audit_key_input(inputs, ctx, groups=False):
    """Adds the audit-key choice; returns False (and a warning) when there is none.
    ``groups``: also offer multi-task audits (for operators that handle them)."""
    keys = _audit_keys(ctx)
    if groups:
        keys = _groups(ctx) + keys
    if not keys:
        inputs.view("warning", types.Warning(
            label="No label-quality run",
            description="Run 'Compute label quality' first"))
        return False
    add_field_choice(inputs, "audit_key", keys, "Audit run", default=keys[0],
                     description="The compute_label_quality run (audit key) to review")
    return True


def _audit_key(ctx, groups=False):
    """The chosen audit key, else the one the form offers first (so an operator run without
    the form, e.g. from the SDK, picks a task run on a multi-task dataset, not the group
    record), else "audit"."""
    key = ctx.params.get("audit_key")
    if key:
        return key
    keys = (_groups(ctx) if groups else []) + _audit_keys(ctx)
    return keys[0] if keys else "audit"


def _context(ctx):
    from label_audit.review.context import ReviewContext

    return ReviewContext(ctx.dataset, _audit_key(ctx))


def _targets(ctx):
    """The selected labels, else the selected samples (or patches), else the view."""
    if ctx.selected_labels:
        return ctx.view.select_labels(labels=ctx.selected_labels)
    if ctx.selected:
        return ctx.view.select(ctx.selected)
    return ctx.target_view()


def _whole_dataset(ctx):
    """Nothing selected and the current view holds every sample: a decision would tag the
    whole dataset (one mis-click away), so the decision operators ask for a confirmation."""
    if ctx.selected_labels or ctx.selected:
        return False
    try:
        return len(ctx.target_view()) >= len(ctx.dataset)
    except Exception:
        return False


def _done(ctx, text):
    if not ctx.delegated:
        ctx.ops.notify(text)


class FindConfusedClasses(DelegableOperator):
    @property
    def config(self):
        return delegable_config(
            "find_confused_classes",
            "Find confused classes",
            "Fit a linear probe on the embeddings, show the most confused class "
            "pairs and open the class with the most false positives",
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if _audit_key_input(inputs, ctx):
            inputs.float("test_size", default=0.25, min=0.05, max=0.9, label="Held-out fraction")
            inputs.int("top", default=5, min=1, label="Pairs to show")
            inputs.bool("open_class", default=True, label="Open the worst class",
                        description="Show its samples sorted by importance (not when delegated)")
            delegation_input(inputs, ctx, default=len(ctx.view) > 50000)
        return types.Property(inputs, view=types.View(label="Find confused classes"))

    def execute(self, ctx):
        import label_audit

        key = _audit_key(ctx)
        report = label_audit.find_confused_classes(
            ctx.target_view(), audit_key=key, test_size=float(ctx.params.get("test_size") or 0.25),
            top=int(ctx.params.get("top") or 5))
        if not ctx.delegated and ctx.params.get("open_class", True) and report.class_of_interest:
            view = label_audit.suspects(ctx.dataset, audit_key=key, score="importance", n=None,
                                        classes=[report.class_of_interest])
            ctx.ops.set_view(view)
        return {
            "class_of_interest": report.class_of_interest,
            "accuracy": report.accuracy,
            "pairs": ["%s <-> %s: %d" % (p["a"], p["b"], p["count"]) for p in report.pairs],
            "summary": report.summary(),
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("class_of_interest", label="Class with the most false positives")
        outputs.float("accuracy", label="Held-out accuracy")
        outputs.list("pairs", types.String(), label="Most confused pairs")
        outputs.str("summary", label="Summary")
        return types.Property(outputs)


class ShowSuspects(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="show_suspects",
            label="Show suspects",
            description="Show the top (or bottom) samples or objects by a score, not yet reviewed",
            dynamic=True,
        )

    def resolve_input(self, ctx):
        from label_audit.review.suspects import SCORES

        from label_audit.review.suspects import GROUP_SCORES

        inputs = types.Object()
        ok = _audit_key_input(inputs, ctx, groups=True)
        if ok and _is_group(ctx):
            add_field_choice(inputs, "score", GROUP_SCORES, "Combined score",
                             default="label_issue_score",
                             description="Over all tasks of the multi-task audit; decide with "
                                         "a task's audit key")
            inputs.int("n", default=25, min=1, label="How many")
            inputs.bool("bottom", default=False, label="Lowest scores first")
        elif ok:
            add_field_choice(inputs, "score", SCORES, "Score", default="label_issue_score")
            try:
                classes = _context(ctx).classes()
            except Exception:
                classes = []
            dropdown = types.DropdownView(multiple=True)
            for c in classes:
                dropdown.add_choice(c, label=c)
            inputs.list("classes", types.String(), required=False, label="Classes",
                        description="Only these classes (default: all)", view=dropdown)
            inputs.int("n", default=25, min=1, label="How many")
            inputs.bool("bottom", default=False, label="Lowest scores first")
            inputs.bool("include_reviewed", default=False, label="Include reviewed")
        return types.Property(inputs, view=types.View(label="Show suspects"))

    def execute(self, ctx):
        import label_audit

        p = ctx.params
        view = label_audit.suspects(
            ctx.dataset, audit_key=_audit_key(ctx, groups=True),
            score=p.get("score") or "label_issue_score",
            n=int(p.get("n") or 25), classes=p.get("classes") or None,
            bottom=bool(p.get("bottom")), include_reviewed=bool(p.get("include_reviewed")))
        ctx.ops.set_view(view)
        return {"count": len(view)}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("count", label="Shown")
        return types.Property(outputs)


class _Decide(foo.Operator):
    decision = None
    op_name = None
    op_label = None
    op_description = None

    @property
    def config(self):
        return foo.OperatorConfig(name=self.op_name, label=self.op_label,
                                  description=self.op_description, dynamic=True)

    def _form(self, inputs, ctx):
        pass

    def resolve_input(self, ctx):
        inputs = types.Object()
        if _audit_key_input(inputs, ctx):
            if ctx.selected_labels:
                what = "%d selected label(s)" % len(ctx.selected_labels)
            elif ctx.selected:
                what = "%d selected sample(s)" % len(ctx.selected)
            else:
                what = "all %d samples in the current view (nothing selected)" % len(ctx.view)
            inputs.view("targets", types.Notice(label="Applies to %s" % what))
            if _whole_dataset(ctx):
                inputs.bool("whole_dataset", default=False, required=True,
                            label="Yes, decide on every sample of the dataset",
                            description="Nothing is selected and the view is the whole dataset")
            self._form(inputs, ctx)
        return types.Property(inputs, view=types.View(label=self.op_label))

    def _label(self, ctx):
        return None

    def execute(self, ctx):
        import label_audit

        if _whole_dataset(ctx) and not ctx.params.get("whole_dataset"):
            raise ValueError("Nothing is selected and the view is the whole dataset: select samples or "
                             "labels (or filter the view, e.g. Show suspects), or confirm "
                             "whole_dataset=True to decide on all %d samples" % len(ctx.dataset))
        report = label_audit.tag_decisions(_targets(ctx), self.decision, label=self._label(ctx),
                                           audit_key=_audit_key(ctx))
        ctx.ops.reload_dataset()
        _done(ctx, report.summary())
        return {"num_tagged": report.num_tagged, "num_skipped": len(report.skipped),
                "summary": report.summary()}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("num_tagged", label="Tagged")
        outputs.int("num_skipped", label="Skipped")
        outputs.str("summary", label="Summary")
        return types.Property(outputs)


class Relabel(_Decide):
    decision = "relabel"
    op_name = "relabel"
    op_label = "Relabel as class"
    op_description = "Decide to relabel the selected samples or labels as a class (applied later)"

    def _form(self, inputs, ctx):
        try:
            classes = _context(ctx).classes()
        except Exception:
            classes = []
        add_field_choice(inputs, "label", classes, "New class",
                         description="One of the dataset's classes for the audited field")

    def _label(self, ctx):
        return ctx.params.get("label")


class AcceptSuggestedLabels(_Decide):
    decision = "accept"
    op_name = "accept_suggested_labels"
    op_label = "Accept suggested labels"
    op_description = "Decide to relabel the selected samples or labels as their suggested label"


class MarkForDeletion(_Decide):
    decision = "delete"
    op_name = "mark_for_deletion"
    op_label = "Mark for deletion"
    op_description = "Decide to exclude the selected samples or labels (applied later)"


class MarkAsCorrect(_Decide):
    decision = "ok"
    op_name = "mark_as_correct"
    op_label = "Mark as correct"
    op_description = "Record that the selected samples or labels are correctly labelled"


class ClearDecisions(_Decide):
    decision = "clear"
    op_name = "clear_decisions"
    op_label = "Clear decisions"
    op_description = "Remove the decision tags of the selected samples or labels"


class ApplyDecisions(DelegableOperator):
    @property
    def config(self):
        return delegable_config(
            "apply_decisions",
            "Apply decisions",
            "Write the tagged decisions into the label field (originals kept), "
            "re-score and record a cleaning round",
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if _audit_key_input(inputs, ctx):
            add_field_choice(inputs, "rescore", ("incremental", "full", "none"), "Re-score",
                             default="incremental",
                             description="incremental: fast update of the last scores; full: recompute")
            add_field_choice(inputs, "on_stale", ("raise", "skip", "ignore"),
                             "Labels edited since scoring", default="raise",
                             description="raise: refuse; skip: apply the others; ignore")
            inputs.bool("confirm_delete", default=False, label="Really delete",
                        description="Delete the rows marked for deletion instead of excluding "
                                    "them (undo_decisions can still restore them)")
            if ctx.params.get("confirm_delete"):
                inputs.view("delete_warning", types.Warning(
                    label="Rows marked for deletion will be deleted from the dataset"))
            delegation_input(inputs, ctx, default=False)
        return types.Property(inputs, view=types.View(label="Apply decisions"))

    def execute(self, ctx):
        import label_audit

        p = ctx.params
        progress = Progress(ctx, "Applying decisions")
        report = label_audit.apply_decisions(
            ctx.dataset, audit_key=_audit_key(ctx), confirm_delete=bool(p.get("confirm_delete")),
            rescore=p.get("rescore") or "incremental", on_stale=p.get("on_stale") or "raise",
            user=getattr(ctx, "user_id", None), progress_callback=progress)
        if not ctx.delegated:
            ctx.ops.reload_dataset()
        return {"num_applied": report.num_applied, "num_stale": len(report.stale),
                "rescore": report.rescore or "", "summary": report.summary()}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("num_applied", label="Applied")
        outputs.int("num_stale", label="Stale (skipped or ignored)")
        outputs.str("rescore", label="Re-score")
        outputs.str("summary", label="Summary")
        return types.Property(outputs)


class UndoDecisions(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="undo_decisions", label="Undo last apply",
            description="Restore the labels, tags and scores as they were before the last apply",
            dynamic=True)

    def resolve_input(self, ctx):
        inputs = types.Object()
        _audit_key_input(inputs, ctx)
        inputs.bool("force", default=False, label="Undo even if edited since",
                    description="Overwrite labels edited after the apply")
        return types.Property(inputs, view=types.View(label="Undo last apply"))

    def execute(self, ctx):
        import label_audit

        entry = label_audit.undo_decisions(ctx.dataset, audit_key=_audit_key(ctx),
                                           force=bool(ctx.params.get("force", False)))
        ctx.ops.reload_dataset()
        text = "Undid apply #%d by %s (%s)" % (entry["id"], entry["user"], ", ".join(
            "%d %s" % (n, d) for d, n in entry["applied"].items()))
        _done(ctx, text)
        return {"summary": text}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Undone")
        return types.Property(outputs)


class CleaningRounds(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="cleaning_rounds", label="Show cleaning rounds",
            description="Reviewed, fixed, fix rate and cross-validated AUC per round",
            dynamic=True)

    def resolve_input(self, ctx):
        inputs = types.Object()
        _audit_key_input(inputs, ctx)
        return types.Property(inputs, view=types.View(label="Show cleaning rounds"))

    def execute(self, ctx):
        import label_audit

        rounds = label_audit.cleaning_rounds(ctx.dataset, audit_key=_audit_key(ctx))
        return {"plateaued": rounds.plateaued, "summary": rounds.summary(),
                "rounds": rounds.rounds}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.bool("plateaued", label="AUC plateaued (stop reviewing)")
        outputs.str("summary", label="Rounds", view=types.CodeView(language="text"))
        return types.Property(outputs)


class ExportCleanset(DelegableOperator):
    @property
    def config(self):
        return delegable_config(
            "export_cleanset",
            "Export clean set",
            "Write a CSV of labels, decisions and scores, an exclude list, and "
            "optionally a cleaned copy of the dataset",
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        if _audit_key_input(inputs, ctx, groups=True):
            group = _is_group(ctx)
            inputs.str("output_dir", required=True, label="Output folder",
                       description="multitask_labels.csv (per task: original, cleaned and "
                                   "suggested label) is written there" if group else
                                   "cleanset.csv and exclude.txt are written there")
            inputs.bool("overwrite", default=False, label="Overwrite existing files")
            if not group:
                inputs.str("clone_name", required=False, label="Cleaned copy (dataset name)",
                           description="Optional: clone without the excluded samples or labels")
            delegation_input(inputs, ctx, default=False)
        return types.Property(inputs, view=types.View(label="Export clean set"))

    def execute(self, ctx):
        import label_audit

        p = ctx.params
        key = _audit_key(ctx, groups=True)
        if not p.get("output_dir"):
            raise ValueError("Choose an output folder for the cleaned labels (cleanset.csv, exclude.txt)")
        if key in _groups(ctx):
            report = label_audit.export_multitask_labels(
                ctx.target_view(), p["output_dir"], audit_key=key,
                overwrite=bool(p.get("overwrite")))
            return {"csv_path": report.csv_path, "exclude_path": "", "num_rows": report.num_rows,
                    "num_excluded": sum(c["excluded"] for c in report.tasks.values()),
                    "summary": report.summary()}
        report = label_audit.export_cleanset(
            ctx.target_view(), p["output_dir"], audit_key=key,
            clone_name=p.get("clone_name") or None, overwrite=bool(p.get("overwrite")))
        return {"csv_path": report.csv_path, "exclude_path": report.exclude_path,
                "num_rows": report.num_rows, "num_excluded": report.num_excluded,
                "summary": report.summary()}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("csv_path", label="CSV")
        outputs.str("exclude_path", label="Exclude list")
        outputs.int("num_rows", label="Rows")
        outputs.int("num_excluded", label="Excluded")
        outputs.str("summary", label="Summary")
        return types.Property(outputs)


REVIEW_OPERATORS = [FindConfusedClasses, ShowSuspects, Relabel, AcceptSuggestedLabels,
                    MarkForDeletion, MarkAsCorrect, ClearDecisions, ApplyDecisions,
                    UndoDecisions, CleaningRounds, ExportCleanset]
