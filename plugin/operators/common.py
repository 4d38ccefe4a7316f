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

    def __call__(self, fraction):
        if self.ctx.delegated:
            self.ctx.set_progress(progress=float(fraction), label=self.label)


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
