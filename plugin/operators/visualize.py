"""Operator: Visualize embeddings (SDK twin: ``label_audit.visualize``)."""

import fiftyone as fo
import fiftyone.operators.types as types

from .common import (DelegableOperator, add_field_choice, delegable_config, delegation_input,
                     label_fields)


class VisualizeEmbeddings(DelegableOperator):
    @property
    def config(self):
        return delegable_config(
            "visualize",
            "Visualize embeddings",
            (
                "Map the embeddings to 2-D with FiftyOne Brain (UMAP or PCA) and open "
                "the Embeddings panel: colour by label or score, lasso clusters, tag them"
            )
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        view = ctx.target_view()
        inputs.str("embeddings_field", default="embeddings", required=False,
                   label="Embeddings field")
        patch_fields = label_fields(view, fo.Detections, fo.Polylines)
        if patch_fields:
            add_field_choice(inputs, "patches_field", patch_fields, "Patches field",
                             required=False,
                             description="Map the objects of this field instead of samples")
        add_field_choice(inputs, "method", ["umap", "pca"], "Method", default="umap",
                         description="UMAP (FiftyOne Brain's default) or PCA (fast)")
        inputs.str("brain_key", required=False, label="Brain key",
                   description="Default: audit_<method>")
        delegation_input(inputs, ctx, default=len(view) > 20000)
        return types.Property(inputs, view=types.View(label="Visualize embeddings"))

    def execute(self, ctx):
        import label_audit

        params = ctx.params
        results = label_audit.visualize(
            ctx.target_view(),
            embeddings_field=params.get("embeddings_field") or "embeddings",
            patches_field=params.get("patches_field") or None,
            method=params.get("method") or "umap",
            brain_key=params.get("brain_key") or None,
        )
        if not ctx.delegated:
            ctx.ops.reload_dataset()
            ctx.ops.open_panel("Embeddings", layout="horizontal")
        return {"brain_key": results.key}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("brain_key", label="Brain key (pick it in the Embeddings panel)")
        return types.Property(outputs)
