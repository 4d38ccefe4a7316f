"""Panel: Label audit — cleaning rounds (AUC and fixes per round), the score
histogram, whether the AUC has plateaued, and the last cleaning evaluation
table. SDK twins: ``label_audit.cleaning_rounds``, ``label_audit.load_evaluation``.

A dropdown picks the audit key when the dataset has more than one (multi-task
audits first, then single-field runs; "audit" by default when it exists). For a
multi-task audit key the panel shows one AUC / fixed trace per task, the
histogram of the combined score and the per-task summary."""

import numpy as np

import fiftyone.operators as foo
import fiftyone.operators.types as types


def panel_data(dataset, audit_key="audit"):
    """Plot traces and summary text for a dataset (plain dicts; testable).

    Keys: ``auc``, ``fixed``, ``histogram`` (plotly traces), ``summary``,
    ``plateaued``, ``n_rounds``, ``evaluation`` (Markdown table of the last
    :func:`label_audit.evaluate_cleaning` for the key, or None) and
    ``evaluation_rows``."""
    from label_audit.multitask import group_config
    from label_audit.review.evaluate import load_evaluation

    group = group_config(dataset, audit_key)
    if group is not None:
        data = _group_data(dataset, audit_key, group)
    else:
        data = _rounds_data(dataset, audit_key)
    evaluation = load_evaluation(dataset, audit_key)
    data["evaluation"] = evaluation.markdown() if evaluation is not None else None
    data["evaluation_rows"] = evaluation.rows if evaluation is not None else []
    return data


def _histogram(dataset, field, path=None):
    """20-bin histogram of a score; ``path`` the label attribute path for object-level runs."""
    if path is not None or dataset.has_sample_field(field):
        values = dataset.values(path, unwind=True) if path is not None else dataset.values(field)
        scores = np.array([s for s in values if s is not None], dtype=float)
        if scores.size:
            counts, edges = np.histogram(scores, bins=20, range=(0.0, 1.0))
            return [dict(x=((edges[:-1] + edges[1:]) / 2).tolist(), y=counts.tolist(),
                         type="bar", name=field)]
    return []


def _group_data(dataset, audit_key, group):
    """One AUC and fixed trace per task of a multi-task audit."""
    from label_audit.multitask import group_summary
    from label_audit.review.rounds import cleaning_rounds

    auc, fixed, lines, plateaued, n_rounds = [], [], [], [], 0
    for field in group["label_fields"]:
        key = group["task_keys"][field]
        try:
            rounds = cleaning_rounds(dataset, audit_key=key)
        except ValueError:  # the task's run was deleted since
            lines.append("%s (%s): run missing (re-run the multi-task scoring)" % (field, key))
            continue
        xs = [r["round"] for r in rounds.rounds]
        n_rounds = max(n_rounds, len(rounds))
        if rounds.rounds:
            auc.append(dict(x=xs, y=[r["auc_macro"] for r in rounds.rounds], type="scatter",
                            mode="lines+markers", name="%s macro AUC" % field))
            fixed.append(dict(x=xs, y=[r.get("fixed", 0) for r in rounds.rounds], type="bar",
                              name="%s fixed" % field))
            plateaued.append(rounds.plateaued)
            last = rounds.rounds[-1]
            lines.append("%s (%s): %d round(s), macro AUC %.4f, %s" % (
                field, key, len(rounds) - 1, last["auc_macro"],
                "plateaued" if rounds.plateaued else "still improving"))
        else:
            lines.append("%s (%s): no cleaning round yet" % (field, key))
    field = (group.get("fields") or {}).get("label_issue_score",
                                            "%s_label_issue_score" % audit_key)
    summary = group_summary(dataset, audit_key) + "\n\n" + "\n".join(lines)
    return dict(auc=auc, fixed=fixed, histogram=_histogram(dataset, field), summary=summary,
                plateaued=bool(plateaued) and all(plateaued), n_rounds=n_rounds)


def _rounds_data(dataset, audit_key):
    from label_audit.review.rounds import CleaningRounds, cleaning_rounds

    message = None
    try:
        rounds = cleaning_rounds(dataset, audit_key=audit_key)
    except ValueError as e:  # nothing scored yet
        rounds, message = CleaningRounds([]), str(e)
    xs = [r["round"] for r in rounds.rounds]
    auc = [dict(x=xs, y=[r["auc_macro"] for r in rounds.rounds], type="scatter",
                mode="lines+markers", name="macro AUC")]
    if any(r.get("auc_class") is not None for r in rounds.rounds):
        auc.append(dict(x=xs, y=[r.get("auc_class") for r in rounds.rounds], type="scatter",
                        mode="lines+markers", name="class-of-interest AUC"))
    fixed = [dict(x=xs, y=[r.get("fixed", 0) for r in rounds.rounds], type="bar",
                  name="fixed"),
             dict(x=xs, y=[r.get("reviewed", 0) for r in rounds.rounds], type="bar",
                  name="reviewed")]
    field = "%s_label_issue_score" % audit_key
    path = None
    info = dataset.get_run_info(audit_key).config.serialize() if audit_key in dataset.list_runs() else {}
    if info.get("patches"):  # object-level run: the score is an attribute of each label
        from label_audit.review.context import ReviewContext

        path = ReviewContext(dataset, audit_key).root_path(field)
    hist = _histogram(dataset, field, path)
    return dict(auc=auc, fixed=fixed, histogram=hist, summary=message or rounds.summary(),
                plateaued=bool(rounds.plateaued), n_rounds=len(rounds))


def panel_keys(dataset):
    """The audit keys the panel can show: multi-task audits first, then single-field
    label-quality runs (each task of a multi-task audit is also one)."""
    from label_audit.multitask import list_groups

    try:
        runs = sorted(dataset.list_runs(method="label_audit.label_quality"))
    except Exception:
        runs = []
    groups = list_groups(dataset)
    return groups + [k for k in runs if k not in groups]


def default_panel_key(dataset):
    """"audit" when it exists (the SDK's default key), else the first of :func:`panel_keys`,
    else "audit" (the panel then says that nothing is scored yet)."""
    keys = panel_keys(dataset)
    if "audit" in keys or not keys:
        return "audit"
    return keys[0]


def _plot_name(plot, audit_key):
    """The panel-data key of ``plot`` for ``audit_key``."""
    return "%s_%s" % (plot, audit_key or "audit")


class LabelAuditPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="label_audit_panel",
            label="Label audit",
            surfaces="grid",
        )

    def _refresh(self, ctx):
        key = ctx.panel.state.audit_key
        if not key or key not in panel_keys(ctx.dataset):
            key = default_panel_key(ctx.dataset)
            ctx.panel.set_state("audit_key", key)
        data = panel_data(ctx.dataset, audit_key=key)
        # one set of plots per audit key: the App's plot keeps drawing its old points when its
        # data is replaced by empty traces, so a run without rounds showed the previous run's
        ctx.panel.set_data(_plot_name("auc_plot", key), data["auc"])
        ctx.panel.set_data(_plot_name("fixed_plot", key), data["fixed"])
        ctx.panel.set_data(_plot_name("score_hist", key), data["histogram"])
        ctx.panel.set_state("summary", data["summary"])
        ctx.panel.set_state("evaluation", data["evaluation"])

    def on_load(self, ctx):
        ctx.panel.set_state("audit_key", default_panel_key(ctx.dataset))
        self._refresh(ctx)

    def on_refresh(self, ctx):
        self._refresh(ctx)

    def on_change_key(self, ctx):
        """The audit-key dropdown: show that run (or multi-task audit)."""
        key = ctx.params.get("value")
        if key:
            ctx.panel.set_state("audit_key", key)
        self._refresh(ctx)

    def render(self, ctx):
        panel = types.Object()
        keys = panel_keys(ctx.dataset)
        if len(keys) > 1:
            panel.enum("audit_key", keys, label="Audit run", default=ctx.panel.state.audit_key,
                       view=types.DropdownView(), on_change=self.on_change_key)
        # plotly titles are not drawn in FiftyOne 1.22's panels: caption with markdown
        panel.md("**Cleaning rounds**\n\n```\n%s\n```" % (ctx.panel.state.summary or ""),
                 name="summary_md")
        panel.btn("refresh", label="Refresh", on_click=self.on_refresh)
        panel.md("**Cross-validated AUC per round**", name="auc_caption")
        key = ctx.panel.state.audit_key
        panel.plot(_plot_name("auc_plot", key), layout=dict(xaxis=dict(title="round"), height=260))
        panel.md("**Reviewed and fixed per round**", name="fixed_caption")
        panel.plot(_plot_name("fixed_plot", key),
                   layout=dict(barmode="group", xaxis=dict(title="round"), height=260))
        panel.md("**label_issue_score histogram**", name="hist_caption")
        panel.plot(_plot_name("score_hist", key), layout=dict(xaxis=dict(title="score"), height=260))
        if ctx.panel.state.evaluation:
            panel.md("**Cleaning evaluation** (original vs. cleaned vs. suggested labels)\n\n"
                     + ctx.panel.state.evaluation, name="evaluation_md")
        else:
            panel.md("Run 'Evaluate cleaning' to compare a probe trained on the original, "
                     "cleaned and suggested labels", name="evaluation_md")
        return types.Property(panel, view=types.GridView(orientation="vertical"))
