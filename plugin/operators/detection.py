"""Operator: Compute detection issues (SDK twin: ``label_audit.compute_detection_issues``)."""

import fiftyone as fo
import fiftyone.operators.types as types

from .common import (DelegableOperator, Progress, add_field_choice, delegable_config,
                     delegation_input, label_fields)


class ComputeDetectionIssues(DelegableOperator):
    @property
    def config(self):
        return delegable_config(
            "compute_detection_issues",
            "Compute detection issues",
            (
                "Compare ground-truth boxes with a model's predictions: missing objects, "
                "spurious boxes, swapped classes, badly located boxes and images "
                "without annotations, as sortable fields"
            ),
        )

    def resolve_input(self, ctx):
        from ..detection.issues import DEFAULTS

        inputs = types.Object()
        view = ctx.target_view()
        fields = label_fields(view, fo.Detections)
        if len(fields) < 2:
            inputs.view("warning", types.Warning(
                label="Two Detections fields needed",
                description="This dataset needs a ground-truth Detections field and a "
                            "Detections field of model predictions (with confidences)"))
            return types.Property(inputs)
        add_field_choice(inputs, "label_field", fields, "Ground-truth field",
                         default="ground_truth" if "ground_truth" in fields else None)
        pred_choices = [f for f in fields if f != ctx.params.get("label_field")]
        add_field_choice(inputs, "pred_field", pred_choices, "Predictions field",
                         description="Detections from any model; their confidences are used",
                         default="predictions" if "predictions" in pred_choices else None)
        inputs.str("audit_key", default="det_audit", required=False, label="Audit key",
                   description="Run key and prefix of the written fields, e.g. "
                               "det_audit_issue_score")
        inputs.float("iou_thresh", default=DEFAULTS["iou_thresh"], min=DEFAULTS["min_iou"], max=1.0,
                     label="IoU threshold",
                     description="IoU from which a prediction fully supports a box")
        inputs.float("missing_threshold", default=DEFAULTS["missing_threshold"], min=0.0,
                     max=1.0, label="Missing-object threshold")
        inputs.float("spurious_threshold", default=DEFAULTS["spurious_threshold"], min=0.0,
                     max=1.0, label="Spurious-box threshold")
        inputs.float("swap_threshold", default=DEFAULTS["swap_threshold"], min=0.0, max=1.0,
                     label="Swapped-class threshold")
        inputs.float("localization_threshold", default=DEFAULTS["localization_threshold"],
                     min=0.0, max=1.0, label="Localization threshold")
        inputs.float("no_annotations_threshold", default=DEFAULTS["no_annotations_threshold"],
                     min=0.0, max=1.0, label="No-annotations threshold",
                     description="Top confidence on an image without ground truth from which "
                                 "it is flagged")
        inputs.float("default_confidence", required=False, min=0.0, max=1.0,
                     label="Confidence of predictions without one",
                     description="Leave empty to refuse predictions without a confidence; "
                                 "e.g. 1.0 for boxes imported from an annotation format")
        add_field_choice(inputs, "on_invalid", ("raise", "skip"), "Invalid boxes",
                         description="raise: stop and name the sample; skip: leave boxes with "
                                     "NaN/missing coordinates unscored",
                         default="raise", required=False)
        delegation_input(inputs, ctx, default=len(view) > 20000)
        return types.Property(inputs, view=types.View(label="Compute detection issues"))

    def execute(self, ctx):
        import label_audit
        from ..detection.issues import DEFAULTS

        params = ctx.params
        progress = Progress(ctx, "Scoring boxes")

        def num(name):
            value = params.get(name)
            return DEFAULTS[name] if value is None else float(value)

        if not (params.get("label_field") and params.get("pred_field")):
            raise ValueError("Choose a ground-truth and a predictions field: this needs two Detections "
                             "fields (the annotations and a detector's predictions)")
        results = label_audit.compute_detection_issues(
            ctx.target_view(),
            params["label_field"],
            params["pred_field"],
            audit_key=params.get("audit_key") or "det_audit",
            iou_thresh=num("iou_thresh"),
            missing_threshold=num("missing_threshold"),
            spurious_threshold=num("spurious_threshold"),
            swap_threshold=num("swap_threshold"),
            localization_threshold=num("localization_threshold"),
            no_annotations_threshold=num("no_annotations_threshold"),
            default_confidence=(None if params.get("default_confidence") is None
                                else float(params["default_confidence"])),
            on_invalid=params.get("on_invalid") or "raise",
            progress=False,
            progress_callback=progress,
        )
        if not ctx.delegated:
            ctx.ops.reload_dataset()
        counts = results.result.counts()
        return dict(
            num_images=len(results.sample_ids),
            num_missing=counts["missing"],
            num_spurious=counts["spurious"],
            num_swapped=counts["swapped"],
            num_mislocated=counts["mislocated"],
            num_no_annotations=counts["no_annotations"],
            sort_field=results.fields["sample"]["issue_score"],
            summary=results.summary(),
        )

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("num_images", label="Images scored")
        outputs.int("num_missing", label="Possibly missing objects")
        outputs.int("num_spurious", label="Spurious boxes")
        outputs.int("num_swapped", label="Swapped classes")
        outputs.int("num_mislocated", label="Badly located boxes")
        outputs.int("num_no_annotations", label="Images without annotations")
        outputs.str("sort_field", label="Sort images by this field (descending)")
        outputs.str("summary", label="Summary")
        return types.Property(outputs)
