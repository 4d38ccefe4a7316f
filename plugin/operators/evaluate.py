"""Operator: Evaluate cleaning (SDK twin: ``label_audit.evaluate_cleaning``).

Per task, K-fold cross-validated accuracy and macro AUC of a linear probe on
the embeddings trained on the original, cleaned and suggested labels; the
table is recorded and shown by the "Label audit" panel.
"""

import fiftyone as fo
import fiftyone.operators.types as types

from .common import (DelegableOperator, Progress, add_field_choice, delegable_config,
                     delegation_input, label_fields)


def evaluation_keys(ctx):
    """Multi-task groups first, then the label-quality runs of Classification fields."""
    from label_audit.multitask import list_groups

    try:
        runs = sorted(k for k in ctx.dataset.list_runs(method="label_audit.label_quality")
                      if not ctx.dataset.get_run_info(k).config.serialize().get("patches"))
    except Exception:
        runs = []
    return list_groups(ctx.dataset) + runs


def _reference_param(i):
    return "reference_%d" % i


class EvaluateCleaning(DelegableOperator):
    @property
    def config(self):
        return delegable_config(
            "evaluate_cleaning",
            "Evaluate cleaning",
            "Per task, cross-validated accuracy and AUC of a linear probe trained on the "
            "original, cleaned and suggested labels",
        )

    def resolve_input(self, ctx):
        from label_audit.review.evaluate import VARIANTS, resolve_tasks

        inputs = types.Object()
        keys = evaluation_keys(ctx)
        if not keys:
            inputs.view("warning", types.Warning(
                label="No label-quality run", description="Run 'Compute label quality' first"))
            return types.Property(inputs, view=types.View(label="Evaluate cleaning"))
        add_field_choice(inputs, "audit_key", keys, "Audit run", default=keys[0],
                         description="A multi-task audit (all its tasks) or one task's run")
        key = ctx.params.get("audit_key") or keys[0]
        try:
            tasks = resolve_tasks(ctx.dataset, None, key)
        except ValueError as e:
            inputs.view("bad_key", types.Warning(label="Cannot evaluate", description=str(e)))
            return types.Property(inputs, view=types.View(label="Evaluate cleaning"))
        candidates = label_fields(ctx.dataset, fo.Classification)
        for i, (field, _) in enumerate(tasks):
            choices = [c for c in candidates if c != field]
            default = field + "_true" if field + "_true" in choices else None
            add_field_choice(
                inputs, _reference_param(i), choices, "Reference labels for %r" % field,
                required=False, default=default,
                description="Trusted labels to score every variant against (same held-out "
                            "rows); empty: each variant against its own held-out labels")
        dropdown = types.DropdownView(multiple=True)
        for v in VARIANTS:
            dropdown.add_choice(v, label=v)
        inputs.list("variants", types.String(), default=list(VARIANTS), required=False,
                    label="Label variants", view=dropdown)
        inputs.int("n_folds", default=5, min=2, label="Folds")
        delegation_input(inputs, ctx, default=len(ctx.dataset) * len(tasks) > 30000)
        return types.Property(inputs, view=types.View(label="Evaluate cleaning"))

    def execute(self, ctx):
        import label_audit
        from label_audit.review.evaluate import VARIANTS, resolve_tasks

        p = ctx.params
        key = p.get("audit_key") or (evaluation_keys(ctx) or ["audit"])[0]  # what the form offers first
        tasks = resolve_tasks(ctx.dataset, None, key)
        refs = {field: p.get(_reference_param(i)) or None for i, (field, _) in enumerate(tasks)}
        progress = Progress(ctx, "Evaluating")
        table = label_audit.evaluate_cleaning(
            ctx.target_view(), [f for f, _ in tasks], audit_key=key, reference_fields=refs,
            variants=p.get("variants") or list(VARIANTS), n_folds=int(p.get("n_folds") or 5),
            progress_callback=progress)
        rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
                for r in table.rows]  # no NaN in JSON
        return {"table": table.summary(), "rows": rows}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("table", label="Accuracy and AUC per task and label variant",
                    view=types.CodeView(language="text"))
        return types.Property(outputs)
