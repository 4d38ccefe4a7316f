"""``apply_decisions`` / ``undo_decisions``: write the tagged decisions into the
label field (and back), re-score, record a cleaning round.

Apply, for the rows of ``samples`` with a pending decision tag:

* ``relabel``: the label becomes ``<key>_decision_label``; the label before
  the first correction is kept in ``<key>_original_label``
* ``delete``: ``<key>_excluded`` = True (the row stays, flagged and tagged);
  with ``confirm_delete=True`` the sample (or object) is deleted, refused if a
  saved view references it
* ``ok``: nothing changes but the row is recorded as reviewed

Every changed row sets ``<key>_applied``; a row whose state already reflects
its decision is not pending, so applying twice changes nothing.

Before writing, the label each row had when it was scored is compared with
its current label: rows edited since scoring are reported as stale
(``on_stale``: "raise" refuses, "skip" applies the others, "ignore").

The history entry (who, when, what) holds a before-image of every field the
apply touches (label field, tags, decision state, deleted documents and the
score fields rewritten by the re-score), so :func:`undo_decisions` restores
the samples exactly.
"""

import getpass
import json
import logging
import re
import time
from collections import Counter

import numpy as np

from ..progress import within
from .context import ReviewContext
from .state import (cached_results, forget_results, load_state, now_iso, remember_results,
                    rescored, save_state, snapshot)

logger = logging.getLogger(__name__)

RESCORE = ("incremental", "full", "none")
ON_STALE = ("raise", "skip", "ignore")


class StaleScoresError(ValueError):
    """Labels changed since they were scored."""


class ApplyReport:
    """What :func:`apply_decisions` did.

    Attributes: ``applied`` ``{decision: count}``, ``changes`` (list of
    ``{id, sample_id, decision, from, to}``), ``hard_deleted`` (ids),
    ``stale`` ``{row_id: (scored label, current label)}``, ``skipped``
    ``{row_id: reason}``, ``rescore`` (mode used), ``rescore_seconds``,
    ``round`` (the cleaning round recorded, or None), ``history_id``.
    """

    def __init__(self, what, applied=None, changes=(), hard_deleted=(), stale=None,
                 skipped=None, rescore=None, rescore_seconds=None, round=None,
                 history_id=None, message=None):
        self.what = what
        self.applied = dict(applied or {})
        self.changes = list(changes)
        self.hard_deleted = list(hard_deleted)
        self.stale = dict(stale or {})
        self.skipped = dict(skipped or {})
        self.rescore = rescore
        self.rescore_seconds = rescore_seconds
        self.round = round
        self.history_id = history_id
        self.message = message

    @property
    def num_applied(self):
        return sum(self.applied.values())

    def summary(self):
        if self.message:
            lines = [self.message]
        else:
            lines = ["Applied %d decision(s) on %ss: %s" % (
                self.num_applied, self.what,
                ", ".join("%d %s" % (n, d) for d, n in sorted(self.applied.items())))]
            if self.hard_deleted:
                lines.append("Deleted %d %s(s) (undo_decisions restores them)"
                             % (len(self.hard_deleted), self.what))
        if self.stale:
            applied_ids = {c["id"] for c in self.changes}
            action = ("applied anyway" if applied_ids & set(self.stale) else
                      "skipped" if self.num_applied or not self.message else "")
            lines.append("%d stale %s(s) (edited since scoring) %s"
                         % (len(self.stale), self.what, action))
        if self.skipped:
            lines.append("Skipped %d: %s" % (len(self.skipped), ", ".join(
                "%d %s" % (n, r) for r, n in Counter(self.skipped.values()).items())))
        if self.rescore:
            lines.append("Re-scored (%s) in %.2fs" % (self.rescore, self.rescore_seconds or 0))
        if self.round:
            r = self.round
            lines.append("Round %d: fix rate %.2f, AUC macro %.4f%s" % (
                r["round"], r["fix_rate"] or 0, r["auc_macro"],
                "" if r.get("auc_class") is None else
                ", AUC %r %.4f" % (r["class_of_interest"], r["auc_class"])))
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()


# --- before-images -----------------------------------------------------------


def _touched_fields(ctx):
    if ctx.patches:
        return [ctx.label_field]
    return [ctx.label_field, "tags"] + list(ctx.fields.values())


def _schema_paths(ctx):
    return [ctx.root_path(ctx.fields[n]) for n in ("original_label", "excluded", "applied")]


def _before_image(ctx, sample_ids, full_ids=(), rows=None, relabelled=None):
    """What :func:`_restore_image` puts back: the touched fields of the samples
    ``sample_ids`` (whole documents for ``full_ids``, the samples to delete), the
    applied row ids ``rows`` and the ``relabelled`` ones (the only rows whose label
    the apply writes: an undo restores no other label, so later edits survive)."""
    from bson import ObjectId, json_util

    coll = ctx.root._sample_collection
    fields = _touched_fields(ctx)
    oids = [ObjectId(s) for s in dict.fromkeys(sample_ids)]
    docs = list(coll.find({"_id": {"$in": oids}}, {f: 1 for f in fields}))
    full = []
    if full_ids:
        full = list(coll.find({"_id": {"$in": [ObjectId(s) for s in set(full_ids)]}}))
    declared = [p for p in _schema_paths(ctx) if not ctx.root.has_field(p)]
    return dict(fields=fields, docs=json_util.dumps(docs), deleted_docs=json_util.dumps(full),
                declared=declared, rows=None if rows is None else list(rows),
                relabelled=None if relabelled is None else list(relabelled))


def _owned_attributes(ctx):
    """The exact names of the row attributes this audit key writes (decision state and
    scores): another key's ``<key>_v2_...`` attributes are not among them."""
    return set(ctx.fields.values()) | set(ctx.score_fields.values())


def _merge_label(before, current, restore_label, owned, tag_prefix):
    """One label document to restore: this key's attributes and ``<key>:`` tags as they
    were before the apply, the ``label`` too if the apply wrote it, everything else
    (confidence, boxes, other attributes and tags) as it is now."""
    take = (lambda k: k in owned or k == "label") if restore_label else (lambda k: k in owned)
    merged = {k: v for k, v in current.items() if not take(k)}
    merged.update({k: v for k, v in before.items() if take(k)})
    if "tags" in before or "tags" in current:
        merged["tags"] = [t for t in current.get("tags") or [] if not t.startswith(tag_prefix)] + [
            t for t in before.get("tags") or [] if t.startswith(tag_prefix)]
    return merged


def _merge_label_list(ctx, before, current, tag_prefix, rows=None, relabelled=None):
    """The label list document to restore on undo. Objects the apply changed get back
    what the apply owns (this key's attributes and ``<key>:`` tags, and the ``label`` if
    it relabelled them) and keep everything else as it is now (boxes, other attributes
    such as another run's scores, other tags); objects it did not change stay exactly as
    they are now, so an undo never reverts edits or runs made after the apply. Objects
    the apply hard-deleted come back whole; objects added since are kept.
    ``rows``/``relabelled`` (str ids; None for records written before they were kept:
    every object of the touched samples)."""
    owned = _owned_attributes(ctx)
    now = {d.get("_id"): d for d in (current or {}).get(ctx.list_field) or []}
    out, seen = [], set()
    for obj in (before or {}).get(ctx.list_field) or []:
        oid = obj.get("_id")
        cur = now.get(oid)
        seen.add(oid)
        if cur is None:
            out.append(obj)
            continue
        if rows is not None and str(oid) not in rows:
            out.append(cur)
            continue
        restore_label = relabelled is None or str(oid) in relabelled
        out.append(_merge_label(obj, cur, restore_label, owned, tag_prefix))
    out.extend(d for i, d in now.items() if i not in seen)
    restored = dict(current)
    restored[ctx.list_field] = out
    return restored


def _restore_image(ctx, image):
    import datetime

    from bson import json_util
    from pymongo import UpdateOne

    root = ctx.root
    coll = root._sample_collection
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    deleted = json_util.loads(image["deleted_docs"])
    if deleted:
        present = {d["_id"] for d in coll.find({"_id": {"$in": [d["_id"] for d in deleted]}},
                                              {"_id": 1})}
        missing = [d for d in deleted if d["_id"] not in present]
        if missing:
            coll.insert_many(missing)
    docs = json_util.loads(image["docs"])
    # tags: restore this audit key's decision tags only; keep every other tag as it is
    # now (another task's decisions or the user's tags may have changed since)
    prefix = ctx.audit_key + ":"
    current_tags = {}
    if "tags" in image["fields"] and docs:
        current_tags = {d["_id"]: d.get("tags") or [] for d in coll.find(
            {"_id": {"$in": [d["_id"] for d in docs]}}, {"tags": 1})}
    current_labels = {}
    if docs:
        current_labels = {d["_id"]: d.get(ctx.label_field) for d in coll.find(
            {"_id": {"$in": [d["_id"] for d in docs]}}, {ctx.label_field: 1})}
    rows = None if image.get("rows") is None else set(image["rows"])
    relabelled = None if image.get("relabelled") is None else set(image["relabelled"])
    owned = _owned_attributes(ctx)
    ops = []
    for doc in docs:
        sets = {f: doc[f] for f in image["fields"] if f in doc}
        cur = current_labels.get(doc["_id"])
        if ctx.patches and ctx.label_field in sets and cur:
            sets[ctx.label_field] = _merge_label_list(
                ctx, sets[ctx.label_field], cur, prefix, rows, relabelled)
        elif not ctx.patches and relabelled is not None and cur:
            # the Classification as it is now, with the label the apply replaced (if it
            # relabelled this sample): later edits of its confidence, attributes or tags stay
            before = sets.get(ctx.label_field)
            if before:
                sets[ctx.label_field] = _merge_label(
                    before, cur, str(doc["_id"]) in relabelled, owned, prefix)
            else:
                sets.pop(ctx.label_field, None)
        if "tags" in sets and doc["_id"] in current_tags:
            sets["tags"] = [t for t in current_tags[doc["_id"]] if not t.startswith(prefix)] + [
                t for t in sets["tags"] or [] if t.startswith(prefix)]
        sets["last_modified_at"] = now
        update = {"$set": sets}
        unsets = {f: "" for f in image["fields"] if f not in doc
                  and not (f == ctx.label_field and relabelled is not None)}  # never written
        if unsets:
            update["$unset"] = unsets
        ops.append(UpdateOne({"_id": doc["_id"]}, update))
    if ops:
        coll.bulk_write(ops, ordered=False)
    root.reload()
    for path in image.get("declared", []):
        if root.has_field(path):
            root.delete_sample_field(path)


def _score_image(ctx):
    from ..quality import SCORE_FIELDS

    ids, sids = ctx.scored_rows()
    names = [ctx.score_fields[n] for n, _ in SCORE_FIELDS]
    vals = ctx.read(ids, sids, names)
    return dict(ids=ids, sample_ids=sids, columns=vals)


def _restore_scores(ctx, image):
    from ..quality import SCORE_FIELDS

    if not image or not image["ids"]:
        return
    exists = ctx.exists(image["ids"], image["sample_ids"])
    keep = [i for i, e in enumerate(exists) if e]
    cols = {}
    for n, kind in SCORE_FIELDS:
        name = ctx.score_fields[n]
        values = image["columns"][name]
        cols[name] = (kind, [values[i] for i in keep])
    ctx.write(cols, [image["ids"][i] for i in keep], [image["sample_ids"][i] for i in keep])


# --- saved views -------------------------------------------------------------


def _referencing_views(root, ids):
    """``{saved view name: [ids it names]}`` for the given sample/label ids."""
    ids = set(ids)
    refs = {}
    for name in root.list_saved_views():
        try:
            stages = root.load_saved_view(name)._serialize()
        except Exception as e:  # a view we cannot read may reference them: refuse
            logger.warning("Could not load saved view %r: %s", name, e)
            refs[name] = sorted(ids)
            continue
        named = set(re.findall(r"[0-9a-f]{24}", json.dumps(stages, default=str)))
        hit = sorted(ids & named)
        if hit:
            refs[name] = hit
    return refs


# --- re-scoring --------------------------------------------------------------


def _score_columns(result, classes):
    from ..quality import SCORE_FIELDS

    cols = {}
    for name, kind in SCORE_FIELDS:
        values = getattr(result, name)
        if kind == "label":
            col = [classes[int(v)] for v in values]
        elif kind == "bool":
            col = [bool(v) for v in values]
        else:
            col = [float(v) if np.isfinite(v) else None for v in values]
        cols[name] = (kind, col)
    return cols


def _rescore_incremental(ctx, state, entry, refit=True, progress_callback=None):
    """Returns seconds, or None when the change can't be done incrementally."""
    from ..scoring import update_label_issues

    t0 = time.perf_counter()
    res = entry["result"]
    ids, sids = entry["ids"], entry["sample_ids"]
    classes = list(res.classes)
    index = {c: i for i, c in enumerate(classes)}
    excl = ctx.fields["excluded"]
    vals = ctx.read(ids, sids, ["label", excl, ctx.embeddings_field])
    labels = res.labels.copy()
    removed = np.zeros(len(ids), bool)
    for i, (lab, ex) in enumerate(zip(vals["label"], vals[excl])):
        if ex or lab is None:  # excluded, deleted, or label removed
            removed[i] = True
        elif lab not in index:
            return None  # a class the run did not score: needs a full re-score
        else:
            labels[i] = index[lab]
    changed = (labels != res.labels) & ~removed
    keep = np.flatnonzero(~removed)
    embs = vals[ctx.embeddings_field]
    if any(embs[i] is None for i in keep):
        return None
    dim = len(embs[keep[0]])
    X = np.zeros((len(ids), dim), np.float32)
    for i, e in enumerate(embs):
        # removed rows too (when their sample still exists): the refit takes their
        # contribution out of the fold models; hard-deleted rows stay zeros
        if e is not None and len(e) == dim:
            X[i] = e
    new = update_label_issues(res, X, labels, changed=changed, removed=removed, refit=refit,
                              progress_callback=progress_callback)
    kept_ids = [ids[i] for i in keep]
    kept_sids = [sids[i] for i in keep]
    cols = _score_columns(new, classes)
    ctx.write({ctx.score_fields[n]: c for n, c in cols.items()}, kept_ids, kept_sids)
    seconds = time.perf_counter() - t0  # read + update + write, like the full path
    rescored(ctx, state, kept_ids, [classes[int(y)] for y in new.labels])
    remember_results(ctx, state, kept_ids, kept_sids, new)
    return seconds


def _score_params(params):
    """The run's extra ``score_label_issues`` parameters (e.g. knn_weight, flag_margin)."""
    import inspect

    from ..scoring import score_label_issues

    accepted = set(inspect.signature(score_label_issues).parameters) - {
        "labels", "features", "pred_probs", "classes", "n_folds", "k", "random_state"}
    return {k: v for k, v in params.items() if k in accepted}


def _rescore_full(ctx, state, progress_callback=None):
    from fiftyone import ViewField as F

    from ..quality import compute_label_quality

    score = ctx.score_fields["label_issue_score"]
    excl = ctx.fields["excluded"]
    if ctx.patches:
        view = ctx.root.filter_labels(ctx.label_field, F(score).exists() & (F(excl) != True))  # noqa: E712
    else:
        view = ctx.root.exists(score).match(F(excl) != True)  # noqa: E712
    cfg = ctx.config
    t0 = time.perf_counter()
    res = compute_label_quality(
        view, ctx.label_field, embeddings_field=ctx.embeddings_field, audit_key=ctx.audit_key,
        classes=ctx.classes(), n_folds=cfg.get("n_folds", 5), k=cfg.get("k", 10),
        random_state=cfg.get("random_state", 0), progress=False, progress_callback=progress_callback,
        **_score_params(cfg.get("score_params") or {}))
    seconds = time.perf_counter() - t0
    classes = res.result.classes
    rescored(ctx, state, res.ids, [classes[int(y)] for y in res.result.labels])
    remember_results(ctx, state, res.ids, res.sample_ids, res.result)
    return seconds


# --- apply ---------------------------------------------------------------------


def _pending(ctx, ids, sids, vals, confirm_delete):
    F = ctx.fields
    rows, skipped = [], {}
    for i, (rid, sid) in enumerate(zip(ids, sids)):
        d = ctx.decision_of(vals["tags"][i])
        if d is None:
            continue
        lab = vals["label"][i]
        applied = vals[F["applied"]][i]
        if d == "relabel":
            target = vals[F["decision_label"]][i]
            if lab is None:
                skipped[rid] = "no label in %r" % ctx.label_field
                continue
            if target is None:
                skipped[rid] = "tagged relabel without a class (%s)" % F["decision_label"]
                continue
            if lab == target and applied == "relabel":
                continue
        elif d == "delete":
            if vals[F["excluded"]][i] and not confirm_delete:
                continue
        elif d == "ok":
            if lab is None:
                skipped[rid] = "no label in %r" % ctx.label_field
                continue
            if applied == "ok":
                continue
        rows.append(i)
    return rows, skipped


def apply_decisions(samples, audit_key="audit", label_field=None, confirm_delete=False,
                    rescore="incremental", on_stale="raise", user=None, results=None,
                    class_of_interest=None, record_round=True, refit=True,
                    progress_callback=None):
    """Applies the decisions tagged on the rows of ``samples``.

    Args:
        samples: a dataset or view (only its rows are applied)
        audit_key ("audit"), label_field (None): the audit run / field
        confirm_delete (False): really delete the rows tagged for deletion
            (default: flag them ``<key>_excluded``)
        rescore ("incremental"): "incremental"
            (:func:`label_audit.scoring.update_label_issues` from the scores
            kept in memory by the last re-score or passed as ``results``;
            falls back to "full" when there are none), "full"
            (``compute_label_quality`` again), or "none"
        on_stale ("raise"): what to do with rows whose label changed since
            it was scored: "raise", "skip" or "ignore"
        user (None): recorded in the history (default: the OS user)
        results (None): the ``LabelQualityResults`` of the scoring run, for
            an incremental re-score in a fresh process
        class_of_interest (None): for the round's AUC (default: the last
            :func:`find_confused_classes` answer)
        record_round (True): measure the K-fold AUC and record a round
        refit (True): for "incremental": warm-start refit of the fold models
            (Newton for the logistic regression; 3 more epochs for the fold
            MLPs of a run that used the MLP; False: keep the old model
            probabilities, only neighbour votes,
            leverage and fusion are updated: several times faster, less exact)
        progress_callback (None): called with ``(fraction, label)``

    Returns:
        an :class:`ApplyReport`
    """
    from .rounds import measure_round

    if rescore not in RESCORE:
        raise ValueError("rescore must be one of %s" % (RESCORE,))
    if on_stale not in ON_STALE:
        raise ValueError("on_stale must be one of %s" % (ON_STALE,))

    def report(f, label):
        if progress_callback is not None:
            progress_callback(f, label)

    ctx = ReviewContext(samples, audit_key, label_field)
    F = ctx.fields
    state = load_state(ctx)
    snap = snapshot(ctx, state)
    ids, sids = ctx.target_rows()
    vals = ctx.read(ids, sids, ["label", "tags"] + [F[n] for n in F])
    rows, skipped = _pending(ctx, ids, sids, vals, confirm_delete)
    if not rows:
        return ApplyReport(ctx.what, skipped=skipped, message=(
            "Nothing to apply: no pending decisions on these %d %ss (already applied, "
            "or none tagged)" % (len(ids), ctx.what)))

    # stale scores
    stale = {}
    scored = snap.get("labels") or {}
    for i in rows:
        rid = ids[i]
        if rid in scored and (scored[rid] is None or scored[rid] != vals["label"][i]):
            stale[rid] = (scored[rid], vals["label"][i])
    if stale and on_stale == "raise":
        ex = list(stale.items())[:5]
        by_apply = sum(1 for i in rows if ids[i] in stale and vals[F["applied"]][i] == "relabel")
        raise StaleScoresError(
            "%d of the %d %ss to apply were edited after audit run %r scored them%s (e.g. %s): "
            "their scores and suggestions are stale. Re-run compute_label_quality, or pass "
            "on_stale='skip' to apply only the others (or 'ignore')"
            % (len(stale), len(rows), ctx.what, audit_key,
               "" if not by_apply else
               " (%d relabelled by an earlier apply that did not re-score: rescore='none')" % by_apply,
               "; ".join(
                "%s: scored %s, now %r" % (rid, "unknown (modified after scoring)"
                                            if old is None else repr(old), new)
                for rid, (old, new) in ex)))
    if stale and on_stale == "skip":
        rows = [i for i in rows if ids[i] not in stale]
        if not rows:
            return ApplyReport(ctx.what, stale=stale, skipped=skipped, message=(
                "Nothing applied: all %d pending %ss are stale" % (len(stale), ctx.what)))

    decisions = {i: ctx.decision_of(vals["tags"][i]) for i in rows}
    hard = [i for i in rows if decisions[i] == "delete" and confirm_delete]
    if hard and not ctx.patches and ctx.root.media_type != "image":
        raise ValueError(
            "Not deleting: confirm_delete removes whole samples, and on a %s dataset an undo "
            "could not restore their frames/slices. Nothing was changed. Apply without "
            "confirm_delete to exclude them (flag %r) instead" % (ctx.root.media_type, F["excluded"]))
    if hard:
        hard_ids = [ids[i] for i in hard]
        refs = _referencing_views(ctx.root, hard_ids)
        if refs:
            raise ValueError(
                "Not deleting: %d of the %d %ss to delete are referenced by saved view(s) %s. "
                "Nothing was changed. Remove them from those views (or delete the views), or "
                "apply without confirm_delete to exclude them (flag %r) instead"
                % (len({i for r in refs.values() for i in r}), len(hard_ids), ctx.what,
                   ", ".join("%r (%d)" % (n, len(r)) for n, r in refs.items()),
                   F["excluded"]))

    if class_of_interest is None:
        class_of_interest = (state.get("confusion") or {}).get("class_of_interest")
    if record_round and not state["rounds"]:
        report(0.05, "Measuring the baseline AUC")
        state["rounds"].append(measure_round(ctx, class_of_interest, round_index=0))

    report(0.2, "Applying")
    touched_sids = [sids[i] for i in rows]
    image = _before_image(ctx, touched_sids,
                          full_ids=[sids[i] for i in hard] if not ctx.patches else (),
                          rows=[ids[i] for i in rows],
                          relabelled=[ids[i] for i in rows if decisions[i] == "relabel"])
    score_image = _score_image(ctx) if rescore != "none" else None
    snapshot_before = dict(snap)

    changes, applied = [], Counter()
    lab_rows, lab_sids, lab_vals = [], [], []
    st_rows, st_sids = [], []
    st_cols = {F["original_label"]: [], F["excluded"]: [], F["applied"]: []}
    for i in rows:
        d, lab = decisions[i], vals["label"][i]
        change = dict(id=ids[i], sample_id=sids[i], decision=d, **{"from": lab})
        if i in hard:
            change["to"] = None
            changes.append(change)
            applied["delete"] += 1
            continue
        orig = vals[F["original_label"]][i]
        excluded = vals[F["excluded"]][i]
        if d == "relabel":
            target = vals[F["decision_label"]][i]
            lab_rows.append(ids[i])
            lab_sids.append(sids[i])
            lab_vals.append(target)
            orig = lab if orig is None else orig
            change["to"] = target
        elif d == "delete":
            excluded = True
            change["to"] = None
        else:
            change["to"] = lab
        if d != "delete" and excluded:
            excluded = False  # a new decision replaces an applied (soft) deletion
        st_rows.append(ids[i])
        st_sids.append(sids[i])
        st_cols[F["original_label"]].append(orig)
        st_cols[F["excluded"]].append(excluded)
        st_cols[F["applied"]].append(d)
        changes.append(change)
        applied[d] += 1
    kinds = {F["original_label"]: "label", F["excluded"]: "bool", F["applied"]: "str"}
    try:
        ctx.write({"label": ("label", lab_vals)}, lab_rows, lab_sids)
        ctx.write({n: (kinds[n], v) for n, v in st_cols.items()}, st_rows, st_sids)
        if hard:
            if ctx.patches:
                ctx.root.delete_labels(ids=[ids[i] for i in hard], fields=ctx.label_field)
            else:
                ctx.root.delete_samples([ids[i] for i in hard])
        # the undo record exists before anything else (re-score, AUC) can fail
        history_id = 1 + max([h["id"] for h in state["history"]] or [0])
        hist = dict(
            id=history_id, timestamp=now_iso(), user=user or getpass.getuser(),
            audit_key=audit_key, label_field=ctx.label_field,
            confirm_delete=bool(confirm_delete), applied=dict(applied), changes=changes,
            stale_ignored=sorted(stale) if on_stale == "ignore" else [], rescore=None,
            rescore_seconds=None, before=image, scores_before=score_image,
            snapshot_before=snapshot_before, undone=False)
        state["history"].append(hist)
        save_state(ctx, state)
    except BaseException:
        _restore_image(ctx, image)
        raise

    rescore_used, seconds = None, None
    if rescore != "none":
        report(0.5, "Re-scoring")
        entry = None
        rescore_progress = within(report, 0.5, 0.8, "Re-scoring: ")
        if rescore == "incremental":
            if results is not None and results.audit_key == audit_key and \
                    results.label_field == ctx.label_field:
                entry = dict(ids=results.ids, sample_ids=results.sample_ids,
                             result=results.result)
            else:
                entry = cached_results(ctx, state)
        if entry is not None:
            seconds = _rescore_incremental(ctx, state, entry, refit=refit, progress_callback=rescore_progress)
            rescore_used = "incremental"
        if seconds is None:
            seconds = _rescore_full(ctx, state, rescore_progress)
            rescore_used = "full"

    round_ = None
    hist.update(rescore=rescore_used, rescore_seconds=seconds)
    if record_round:
        report(0.8, "Measuring the AUC")
        round_ = measure_round(ctx, class_of_interest, round_index=len(state["rounds"]))
        round_.update(history_id=history_id, reviewed=len(rows),
                      relabeled=applied["relabel"], deleted=applied["delete"], ok=applied["ok"],
                      fixed=applied["relabel"] + applied["delete"],
                      fix_rate=(applied["relabel"] + applied["delete"]) / len(rows),
                      rescore=rescore_used, rescore_seconds=seconds)
        state["rounds"].append(round_)
    save_state(ctx, state)
    _refresh_groups(ctx)
    report(1.0, "Done")
    return ApplyReport(ctx.what, applied, changes, [ids[i] for i in hard],
                       stale if on_stale != "raise" else None, skipped, rescore_used, seconds,
                       round_, history_id)


def _check_not_edited_since(ctx, entry):
    """Raises if a label written by the apply ``entry`` was changed since (the labels of
    relabelled rows: an undo restores no other label; records written before the undo
    kept that apart: the ``ok`` rows' labels too)."""
    restored = ("relabel",) if (entry.get("before") or {}).get("relabelled") is not None else ("relabel", "ok")
    rows = [c for c in entry["changes"] if c["decision"] in restored]
    if not rows:
        return
    current = ctx.read([c["id"] for c in rows], [c["sample_id"] for c in rows],
                       ["label"])["label"]
    # a label back at its value before the apply is not an edit to protect (e.g. an undo that
    # restored the labels and then failed to save its record is simply run again)
    edited = [c["id"] for c, lab in zip(rows, current) if lab != c["to"] and lab != c["from"]]
    if edited:
        raise ValueError(
            "%d row(s) were edited after apply #%d (e.g. %s): undoing it would overwrite "
            "those edits. Nothing was changed; pass force=True to undo anyway"
            % (len(edited), entry["id"], ", ".join(edited[:3])))


def undo_decisions(samples, audit_key="audit", label_field=None, force=False):
    """Undoes the last :func:`apply_decisions` of this audit run: labels,
    tags, decision state, deleted samples/objects and the re-scored fields are
    restored exactly as they were before it (the decision tags stay, so the
    decisions can be edited and applied again). Call again to undo earlier ones.

    If a label the apply wrote was edited since, undo refuses (it would
    overwrite that edit) unless ``force=True``.

    Returns:
        the history entry undone (dict: id, user, timestamp, applied, changes)
    """
    ctx = ReviewContext(samples, audit_key, label_field)
    state = load_state(ctx)
    live = [h for h in state["history"] if not h.get("undone")]
    if not live:
        raise ValueError("Nothing to undo: no applied decisions recorded for audit key %r on "
                         "dataset %r" % (audit_key, ctx.root.name))
    entry = live[-1]
    if not force:
        _check_not_edited_since(ctx, entry)
    _restore_image(ctx, entry["before"])
    _restore_scores(ctx, entry.get("scores_before"))
    ctx.root.reload()
    entry["undone"] = True
    entry["undone_at"] = now_iso()
    snap = dict(entry["snapshot_before"])
    if ctx.audit_key in ctx.root.list_runs():
        from .state import _run_timestamp

        ctx.run_info = ctx.root.get_run_info(ctx.audit_key)
        snap["run_timestamp"] = _run_timestamp(ctx)
    snap["version"] = (state.get("snapshot") or {}).get("version", 0) + 1
    state["snapshot"] = snap
    state["rounds"] = [r for r in state["rounds"] if r.get("history_id") != entry["id"]]
    if len(state["rounds"]) == 1 and not live[:-1]:
        state["rounds"] = []  # only the baseline is left
    forget_results(ctx)
    save_state(ctx, state)
    _refresh_groups(ctx)
    return {k: entry[k] for k in ("id", "user", "timestamp", "applied", "changes")}


def _refresh_groups(ctx):
    """Recomputes the combined fields of the multi-task audits this key is a task of."""
    from ..multitask import groups_of_task, refresh_combined

    for group in groups_of_task(ctx.root, ctx.audit_key):
        try:
            refresh_combined(ctx.root, group)
        except Exception as e:  # the apply/undo itself succeeded: say how to finish
            logger.warning("Could not refresh the combined fields of multi-task audit %r (%s): "
                           "run label_audit.refresh_combined(dataset, %r)", group, e, group)
