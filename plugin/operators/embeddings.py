"""Operator: Compute embeddings (SDK twin: ``label_audit.compute_embeddings``)."""

import fiftyone as fo
import fiftyone.operators.types as types

from .common import (DelegableOperator, Progress, add_field_choice, backend_input, backend_params,
                     delegable_config, delegation_input, label_fields)

MODEL_CHOICES = ("resnet50", "efficientnet-lite0", "resnet18", "efficientnet_b0",
                 "convnext_tiny", "vit_b_16")


class ComputeEmbeddings(DelegableOperator):
    @property
    def config(self):
        return delegable_config(
            "compute_embeddings",
            "Compute embeddings",
            "Embed images, object patches or masked instances with a torch model"
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = ctx.target_view()
        add_field_choice(
            inputs, "model", MODEL_CHOICES, "Model", default="resnet50",
            description=(
                "A torchvision model name (pretrained weights are downloaded on first "
                "use) or efficientnet-lite0 (offline, from the 'offline' extra)"
            ),
        )
        inputs.str("embeddings_field", default="embeddings", required=False,
                   label="Embeddings field",
                   description="Sample field (or label attribute for patches) to store vectors in")
        patch_fields = label_fields(view, fo.Detections, fo.Polylines)
        if patch_fields:
            add_field_choice(
                inputs, "patches_field", patch_fields, "Patches field", required=False,
                description="Embed each object of this Detections/Polylines field instead of whole images",
            )
            if ctx.params.get("patches_field"):
                inputs.bool("use_masks", default=False, label="Apply instance masks",
                            description="Black out each object's background using its mask or polygon")
        inputs.int("batch_size", default=32, label="Batch size", min=1)
        inputs.int("reduce_dims", required=False, label="Reduce dimensions (PCA)",
                   description="Optional: project to this many dimensions, e.g. 256")
        backend_input(inputs, ctx)
        delegation_input(inputs, ctx, default=len(view) > 1000)
        return types.Property(inputs, view=types.View(label="Compute embeddings"))

    def execute(self, ctx):
        import label_audit

        params = ctx.params
        report = label_audit.compute_embeddings(
            ctx.target_view(),
            model=params.get("model", "resnet50"),
            embeddings_field=params.get("embeddings_field") or "embeddings",
            patches_field=params.get("patches_field") or None,
            use_masks=bool(params.get("use_masks", False)),
            batch_size=int(params.get("batch_size") or 32),
            reduce_dims=params.get("reduce_dims") or None,
            progress=False,
            progress_callback=Progress(ctx, "Embedding"),
            **backend_params(params),
        )
        if not ctx.delegated:
            ctx.ops.reload_dataset()
        return {
            "num_embedded": report.num_embedded,
            "num_failed": report.num_failed,
            "dim": report.dim,
            "run_key": report.run_key,
            "failures": [repr(f) for f in report.failures[:20]],
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("num_embedded", label="Embedded")
        outputs.int("num_failed", label="Failed (tagged audit:embedding_failed)")
        outputs.int("dim", label="Dimension")
        outputs.str("run_key", label="Run key")
        outputs.list("failures", types.String(), label="First failures")
        return types.Property(outputs)
