"""The review record of an audit run: snapshot of scored labels, apply history,
cleaning rounds (one FiftyOne run per audit key, ``<key>_review``).

The record is a generic FiftyOne run (method ``label_audit.review``) whose
results hold JSON:

* ``snapshot``: ``{"run_timestamp", "version", "labels": {row_id: label}}``:
  the label each row had when its scores were computed (None: the sample was
  modified after scoring, before the review started, so it cannot be
  verified). Taken from the scored rows on first use of a scoring run (rows
  not modified since the run are exact), and rewritten on every re-score.
* ``history``: one entry per :func:`apply_decisions`, with who/when/what and
  the before-image that :func:`undo_decisions` restores.
* ``rounds``: cleaning rounds (see :mod:`label_audit.review.rounds`).
* ``confusion``: the last :func:`find_confused_classes` summary.

In-process, the last :class:`label_audit.scoring.LabelIssueResult` of each
audit run is kept (``remember_results``) so that the next apply can re-score
incrementally.
"""

import datetime

from ..runs import run_key_for, save_run

METHOD = "label_audit.review"

# (dataset id, audit_key) -> dict(version, ids, sample_ids, result)
_RESULTS = {}


def review_key(audit_key):
    return run_key_for(audit_key, "review")


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat()


def load_state(ctx):
    """The review record of ``ctx``'s audit run (an empty one if none)."""
    root = ctx.root
    key = review_key(ctx.audit_key)
    state = dict(snapshot=None, history=[], rounds=[], confusion=None)
    if key in root.list_runs():
        results = root.load_run_results(key, cache=False)
        if results is not None:
            for name in state:
                value = getattr(results, name, None)
                if value is not None:
                    state[name] = value
    return state


def save_state(ctx, state):
    save_run(ctx.root, review_key(ctx.audit_key), METHOD,
             dict(audit_key=ctx.audit_key, label_field=ctx.label_field), state)


def _run_time(ctx):
    """The scoring run's time at MongoDB's millisecond precision (the in-memory
    value of a just-saved run has microseconds, a reloaded one has not)."""
    info = ctx.run_info
    if info is None or not info.timestamp:
        return None
    t = info.timestamp
    return t.replace(microsecond=t.microsecond // 1000 * 1000, tzinfo=None)


def _run_timestamp(ctx):
    t = _run_time(ctx)
    return t.isoformat() if t is not None else None


def _scored_labels(ctx):
    """``{row_id: label}`` recorded at scoring time in the run results, or None."""
    try:
        results = ctx.root.load_run_results(ctx.audit_key, cache=False)
    except Exception:
        return None
    return getattr(results, "scored_labels", None)


def snapshot(ctx, state):
    """Makes sure ``state['snapshot']`` describes the current scoring run
    (taking it now if needed; saved by the caller). Returns it."""
    ts = _run_timestamp(ctx)
    snap = state.get("snapshot")
    if snap and snap.get("run_timestamp") == ts:
        return snap
    ids, sids = ctx.scored_rows()
    scored = _scored_labels(ctx)
    if scored is not None:  # recorded by compute_label_quality: exact
        version = (snap or {}).get("version", 0) + 1
        state["snapshot"] = dict(run_timestamp=ts, version=version,
                                 labels={rid: scored.get(rid) for rid in ids},
                                 taken_at=now_iso())
        return state["snapshot"]
    # older runs without a record: trust rows not modified since the run
    labels = ctx.read(ids, sids, ["label"])["label"]
    modified = {}
    if ids:
        view = ctx.root.select(list(dict.fromkeys(sids)))
        modified = dict(zip(*view.values(["id", "last_modified_at"])))
    run_time = _run_time(ctx)
    snap_labels = {}
    for rid, sid, lab in zip(ids, sids, labels):
        t = modified.get(sid)
        certain = run_time is not None and t is not None and t <= run_time
        snap_labels[rid] = lab if certain else None
    version = (snap or {}).get("version", 0) + 1
    state["snapshot"] = dict(run_timestamp=ts, version=version, labels=snap_labels,
                             taken_at=now_iso())
    return state["snapshot"]


def rescored(ctx, state, ids, labels):
    """Records that rows ``ids`` were just scored with ``labels``."""
    ctx.run_info = ctx.root.get_run_info(ctx.audit_key)
    snap = state.get("snapshot") or dict(labels={}, version=0)
    new_labels = dict(snap.get("labels") or {})
    new_labels.update(zip(ids, labels))
    state["snapshot"] = dict(run_timestamp=_run_timestamp(ctx),
                             version=snap.get("version", 0) + 1,
                             labels=new_labels, taken_at=now_iso())
    return state["snapshot"]


def remember_results(ctx, state, ids, sample_ids, result):
    """Keeps a LabelIssueResult in memory for incremental re-scoring."""
    _RESULTS[(str(ctx.root._doc.id), ctx.audit_key)] = dict(
        version=state["snapshot"]["version"], ids=list(ids), sample_ids=list(sample_ids),
        result=result)


def _ms(t):
    return t.replace(microsecond=t.microsecond // 1000 * 1000, tzinfo=None)


def cached_results(ctx, state):
    """The in-memory scores to update incrementally, or None (then: full re-score).

    Either the result of this workflow's last re-score (same snapshot version),
    or the result ``compute_label_quality`` just computed in this process for
    the current run (so an apply right after scoring in the App is incremental).
    Both are safe to update: the update diffs their labels with the current ones.
    """
    key = (str(ctx.root._doc.id), ctx.audit_key)
    entry = _RESULTS.get(key)
    snap = state.get("snapshot")
    if entry is not None and snap is not None and entry["version"] == snap.get("version"):
        return entry
    from ..quality import LAST_RESULTS

    fresh = LAST_RESULTS.get(key)
    run_time = _run_time(ctx)
    if fresh is not None and run_time is not None and _ms(fresh["run_time"]) == run_time:
        return fresh
    return None


def forget_results(ctx):
    from ..quality import LAST_RESULTS

    _RESULTS.pop((str(ctx.root._doc.id), ctx.audit_key), None)
    LAST_RESULTS.pop((str(ctx.root._doc.id), ctx.audit_key), None)
