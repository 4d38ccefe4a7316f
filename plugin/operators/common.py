"""Form helpers shared by label-audit's operators (thin FiftyOne glue)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types


def delegation_input(inputs, ctx, default=False):
    """Adds the 'Delegate execution' choice (heavy operators)."""
    inputs.bool(
        "delegate",
        default=default,
        label="Delegate execution?",
        description=(
            "Run this in the background (needs `fiftyone delegated launch` or "
            "an orchestrator); progress is shown in the Runs page"
        ),
        view=types.CheckboxView(),
    )


def wants_delegation(ctx):
    return bool(ctx.params.get("delegate", False))


def label_fields(samples, *doc_types):
    """Names of the sample fields holding the given label types."""
    schema = samples.get_field_schema(embedded_doc_type=doc_types) if doc_types else {}
    return sorted(schema)


def add_field_choice(inputs, name, choices, label, description=None, required=True,
                     default=None):
    dropdown = types.DropdownView()
    for choice in choices:
        dropdown.add_choice(choice, label=choice)
    inputs.enum(name, dropdown.values(), required=required and default is None, label=label,
                description=description, default=default, view=dropdown)


class Progress:
    """Reports progress from SDK callbacks: ``ctx.set_progress`` when delegated."""

    def __init__(self, ctx, label):
        self.ctx = ctx
        self.label = label

    def __call__(self, fraction, stage=None):
        """``fraction`` in [0, 1]; ``stage`` (optional): what runs now, shown after the label."""
        if self.ctx.delegated:
            label = self.label if not stage else "%s: %s" % (self.label, stage)
            self.ctx.set_progress(progress=float(fraction), label=label)


def delegable_config(name, label, description):
    """The config of a heavy operator: dynamic form, immediate or delegated runs."""
    return foo.OperatorConfig(
        name=name,
        label=label,
        description=description,
        dynamic=True,
        allow_immediate_execution=True,
        allow_delegated_execution=True,
    )


class DelegableOperator(foo.Operator):
    """Base of the heavy operators: the form's 'Delegate execution?' choice
    (see :func:`delegation_input`) decides whether a run is delegated."""

    def resolve_delegation(self, ctx):
        return wants_delegation(ctx)


def backend_input(inputs, ctx):
    """Adds the 'Backend' choice (local / ray) and, for ray, the cluster address and workers."""
    add_field_choice(
        inputs, "backend", ("local", "ray"), "Backend", default="local", required=False,
        description=("local: this process. ray: a Ray cluster (needs the 'ray' extra on the "
                     "FiftyOne server or delegated executor and on every node)"),
    )
    if ctx.params.get("backend") == "ray":
        inputs.str("ray_address", required=False, label="Ray address",
                   description=("Empty: a local Ray instance (or RAY_ADDRESS); 'auto': the cluster "
                                "started with `ray start --head` on this machine; "
                                "ray://host:10001: a remote cluster"))
        inputs.int("ray_workers", required=False, min=1, label="Ray workers",
                   description="Parallel Ray tasks/actors (default: all CPUs, or one per GPU)")


def backend_params(params):
    """The SDK keyword arguments chosen with :func:`backend_input` (empty for local)."""
    if (params.get("backend") or "local") != "ray":
        return {}
    out = {"backend": "ray", "ray_address": params.get("ray_address") or None}
    if params.get("ray_workers"):
        out["ray_workers"] = int(params["ray_workers"])
    return out
