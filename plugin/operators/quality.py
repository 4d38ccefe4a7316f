"""Operator: Compute label quality (SDK twin: ``label_audit.compute_label_quality``)."""

import numpy as np

import fiftyone as fo
import fiftyone.operators.types as types

from .common import (DelegableOperator, Progress, add_field_choice, backend_input, backend_params,
                     delegable_config, delegation_input, label_fields)


class ComputeLabelQuality(DelegableOperator):
    @property
    def config(self):
        return delegable_config(
            "compute_label_quality",
            "Compute label quality",
            (
                "Score how likely each label is wrong (coreset importance, confident "
                "learning, neighbours) and write sortable fields"
            )
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = ctx.target_view()
        fields = label_fields(view, fo.Classification, fo.Detections, fo.Polylines)
        if not fields:
            inputs.view("warning", types.Warning(
                label="No label field",
                description="This dataset has no Classification, Detections or Polylines field to audit"))
            return types.Property(inputs)
        classification = label_fields(view, fo.Classification)
        if len(classification) >= 2:
            inputs.bool("multitask", default=False, label="Several tasks (multi-task)",
                        description="Score several Classification fields of the same samples "
                                    "(one run per task, key <audit key>_<field>, plus a "
                                    "combined ranking)")
        if ctx.params.get("multitask") and len(classification) >= 2:
            dropdown = types.DropdownView(multiple=True)
            for f in classification:
                dropdown.add_choice(f, label=f)
            inputs.list("label_fields", types.String(), required=True, label="Label fields",
                        description="The Classification fields to audit, one per task",
                        view=dropdown)
            add_field_choice(inputs, "combine", ("max", "noisy_or"), "Combined score",
                             default="max",
                             description="max: a sample is as suspicious as its worst task; "
                                         "noisy_or: 1 - prod(1 - score) over tasks")
        else:
            add_field_choice(inputs, "label_field", fields, "Label field",
                             description="Classification: one score per sample; "
                                         "Detections/Polylines: one per object")
        inputs.str("embeddings_field", default="embeddings", required=False,
                   label="Embeddings field",
                   description="Sample field (or label attribute for objects) from 'Compute embeddings'")
        inputs.str("audit_key", default="audit", required=False, label="Audit key",
                   description="Run key and prefix of the written fields, e.g. audit_label_issue_score")
        inputs.int("n_folds", default=5, min=2, label="Folds",
                   description="Cross-validation folds for the out-of-fold probabilities")
        inputs.int("n_repeats", required=False, min=1, label="Repeats",
                   description="Fold assignments the out-of-fold probabilities are averaged over; "
                               "empty = auto (5 on small data, 1 from 100k x 256 x 80)")
        inputs.int("k", default=10, min=1, label="Neighbours (k)")
        model = types.DropdownView()
        model.add_choice("auto", label="Auto (logistic regression, or the MLP where it clearly "
                                       "predicts the labels better out of fold)")
        model.add_choice("logistic", label="Logistic regression")
        model.add_choice("mlp", label="MLP, one hidden layer (local backend only)")
        inputs.enum("model", model.values(), default="auto", required=False, label="Model",
                    description="Out-of-fold model behind the probabilities; auto tries the MLP "
                                "up to 10k x 256", view=model)
        backend_input(inputs, ctx)
        delegation_input(inputs, ctx, default=len(view) > 5000)
        return types.Property(inputs, view=types.View(label="Compute label quality"))

    def execute(self, ctx):
        import label_audit

        params = ctx.params
        progress = Progress(ctx, "Scoring")
        multitask = bool(params.get("multitask"))
        if not (params.get("label_fields") if multitask else params.get("label_field")):
            raise ValueError("No label field chosen: this dataset needs a Classification, Detections "
                             "or Polylines field to audit (and embeddings, see Compute embeddings)")
        extra = dict(combine=params.get("combine") or "max") if multitask else {}
        results = label_audit.compute_label_quality(
            ctx.target_view(),
            list(params.get("label_fields") or []) if multitask else params["label_field"],
            embeddings_field=params.get("embeddings_field") or "embeddings",
            audit_key=params.get("audit_key") or "audit",
            n_folds=int(params.get("n_folds") or 5),
            n_repeats=int(params["n_repeats"]) if params.get("n_repeats") else "auto",
            k=int(params.get("k") or 10),
            model=params.get("model") or "auto",
            progress=False,
            progress_callback=progress,
            **extra,
            **backend_params(params),
        )
        if not ctx.delegated:
            ctx.ops.reload_dataset()
        if multitask:
            return {
                # samples labelled in at least one task (results.ids is every sample of the view)
                "num_scored": int(np.isfinite(np.asarray(results.label_issue_score, float)).sum()),
                "num_skipped": sum(len(t.skipped) for t in results.tasks.values()),
                "num_label_issues": int((results.num_label_issues > 0).sum()),
                "sort_field": results.fields["label_issue_score"],
                "task_keys": list(results.task_keys.values()),
                "summary": results.summary(),
            }
        r = results.result
        return {
            "num_scored": len(results.ids),
            "num_skipped": len(results.skipped),
            "num_label_issues": int(r.is_label_issue.sum()),
            "sort_field": results.fields["label_issue_score"],
            "summary": results.summary(),
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("num_scored", label="Scored")
        outputs.int("num_skipped", label="Skipped (missing label or embedding)")
        outputs.int("num_label_issues", label="Flagged as label issues")
        outputs.str("sort_field", label="Sort by this field (descending)")
        if ctx.params.get("multitask"):
            outputs.list("task_keys", types.String(),
                         label="Task audit keys (review each task with its key)")
            outputs.str("summary", label="Summary", view=types.CodeView(language="text"))
        else:
            outputs.str("summary", label="Summary")
        return types.Property(outputs)
