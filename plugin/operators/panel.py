"""Panel: Label audit — cleaning rounds (AUC and fixes per round), the score
histogram, and whether the AUC has plateaued. SDK twin: ``label_audit.cleaning_rounds``."""

import numpy as np

import fiftyone.operators as foo
import fiftyone.operators.types as types


def panel_data(dataset, audit_key="audit"):
    """Plot traces and summary text for a dataset (plain dicts; testable)."""
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
    hist = []
    if dataset.has_sample_field(field):
        scores = np.array([s for s in dataset.values(field) if s is not None], dtype=float)
        if scores.size:
            counts, edges = np.histogram(scores, bins=20, range=(0.0, 1.0))
            hist = [dict(x=((edges[:-1] + edges[1:]) / 2).tolist(), y=counts.tolist(),
                         type="bar", name=field)]
    return dict(auc=auc, fixed=fixed, histogram=hist, summary=message or rounds.summary(),
                plateaued=bool(rounds.plateaued), n_rounds=len(rounds))


class LabelAuditPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="label_audit_panel",
            label="Label audit",
            surfaces="grid",
        )

    def _refresh(self, ctx):
        data = panel_data(ctx.dataset, audit_key=ctx.panel.state.audit_key or "audit")
        ctx.panel.set_data("auc_plot", data["auc"])
        ctx.panel.set_data("fixed_plot", data["fixed"])
        ctx.panel.set_data("score_hist", data["histogram"])
        ctx.panel.set_state("summary", data["summary"])

    def on_load(self, ctx):
        ctx.panel.set_state("audit_key", "audit")
        self._refresh(ctx)

    def on_refresh(self, ctx):
        self._refresh(ctx)

    def render(self, ctx):
        panel = types.Object()
        # plotly titles are not drawn in FiftyOne 1.22's panels: caption with markdown
        panel.md("**Cleaning rounds**\n\n```\n%s\n```" % (ctx.panel.state.summary or ""),
                 name="summary_md")
        panel.btn("refresh", label="Refresh", on_click=self.on_refresh)
        panel.md("**Cross-validated AUC per round**", name="auc_caption")
        panel.plot("auc_plot", layout=dict(xaxis=dict(title="round"), height=260))
        panel.md("**Reviewed and fixed per round**", name="fixed_caption")
        panel.plot("fixed_plot", layout=dict(barmode="group", xaxis=dict(title="round"),
                                             height=260))
        panel.md("**label_issue_score histogram**", name="hist_caption")
        panel.plot("score_hist", layout=dict(xaxis=dict(title="score"), height=260))
        return types.Property(panel, view=types.GridView(orientation="vertical"))
