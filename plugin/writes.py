"""Bulk, all-or-nothing writes of per-sample or per-label columns to FiftyOne.

One pass of unordered ``UpdateOne`` operations sets every column of a row at
once (one document update per sample, or per label through the positional
operator), which is far faster than one ``set_values`` per field or one
``sample.save()`` per sample. Before writing, the previous values of the
target fields are read; if the write is interrupted (any exception, including
``KeyboardInterrupt``) they are restored, so the dataset is left as it was.
A hard kill of the process during the write cannot be undone this way
(MongoDB multi-document transactions need a replica set).
"""

import datetime

from bson import ObjectId

_FIELD_TYPES = {"float": "FloatField", "bool": "BooleanField", "label": "StringField",
                "str": "StringField", "int": "IntField"}


def _declare(dataset, path, kind):
    """Adds the field to the schema if missing; returns True if it was added."""
    import fiftyone as fo

    if dataset.has_field(path):
        return False
    dataset.add_sample_field(path, getattr(fo, _FIELD_TYPES[kind]))
    return True


def _get_path(doc, path):
    """``doc["a"]["b"]`` for ``path="a.b"``, or ``_MISSING``."""
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _backup(coll, names, ids, sample_ids, label_path):
    """Previous values: {(sid, lid_or_None): {name: value or _MISSING}}."""
    oids = list({ObjectId(s) for s in sample_ids})
    backup = {}
    if label_path is None:
        proj = {n: 1 for n in names}
        for start in range(0, len(oids), 50000):
            for doc in coll.find({"_id": {"$in": oids[start:start + 50000]}}, proj):
                backup[(str(doc["_id"]), None)] = {n: _get_path(doc, n) for n in names}
        return backup
    proj = {"%s._id" % label_path: 1}
    proj.update({"%s.%s" % (label_path, n): 1 for n in names})
    head, _, tail = label_path.partition(".")
    for start in range(0, len(oids), 50000):
        for doc in coll.find({"_id": {"$in": oids[start:start + 50000]}}, proj):
            labels = (doc.get(head) or {}).get(tail) or []
            for lab in labels:
                backup[(str(doc["_id"]), str(lab["_id"]))] = {
                    n: _get_path(lab, n) for n in names}
    return backup


class _Missing:
    def __repr__(self):
        return "<missing>"


_MISSING = _Missing()


def _ops(rows, label_path, now):
    from pymongo import UpdateOne

    for (sid, lid), values in rows:
        sets = {k: v for k, v in values.items() if v is not _MISSING}
        unsets = {k: "" for k, v in values.items() if v is _MISSING}
        if label_path is None:
            update = {"$set": dict(sets, last_modified_at=now)}
            if unsets:
                update["$unset"] = unsets
            yield UpdateOne({"_id": ObjectId(sid)}, update)
        else:
            pos = label_path + ".$."
            update = {"$set": dict({pos + k: v for k, v in sets.items()},
                                   last_modified_at=now)}
            if unsets:
                update["$unset"] = {pos + k: "" for k in unsets}
            yield UpdateOne({"_id": ObjectId(sid), label_path + "._id": ObjectId(lid)}, update)


def _bulk(coll, ops, batch_size, on_batch=None):
    batch = []
    for op in ops:
        batch.append(op)
        if len(batch) >= batch_size:
            coll.bulk_write(batch, ordered=False)
            if on_batch:
                on_batch(len(batch))
            batch = []
    if batch:
        coll.bulk_write(batch, ordered=False)
        if on_batch:
            on_batch(len(batch))


def write_rows(samples, columns, ids, sample_ids, label_path=None, batch_size=10000):
    """Writes columns of values to samples (or labels) in one bulk pass.

    Args:
        samples: the FiftyOne collection
        columns: ``{field_name: (kind, values)}``; ``kind`` in ``float``,
            ``bool``, ``label``/``str``, ``int``; ``values`` aligned with ``ids``
            (None allowed)
        ids: sample ids, or label ids when ``label_path`` is given
        sample_ids: the sample id of each row
        label_path (None): e.g. ``"ground_truth.detections"`` to write label
            attributes instead of sample fields
        batch_size (10000): operations per ``bulk_write``
    """
    dataset = samples._dataset
    names = list(columns)
    declared = [path for path, kind in (
        (name if label_path is None else "%s.%s" % (label_path, name), kind)
        for name, (kind, _) in columns.items()) if _declare(dataset, path, kind)]
    coll = dataset._sample_collection
    keys = [(sid, None) if label_path is None else (sid, lid)
            for lid, sid in zip(ids, sample_ids)]
    backup = _backup(coll, names, ids, sample_ids, label_path)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    new_rows = (
        (key, {name: columns[name][1][r] for name in names}) for r, key in enumerate(keys)
    )
    try:
        _bulk(coll, _ops(new_rows, label_path, now), batch_size)
    except BaseException:
        old_rows = ((key, backup[key]) for key in keys if key in backup)
        _bulk(coll, _ops(old_rows, label_path, now), batch_size)
        dataset.reload()
        for path in declared:  # fields this write added leave the schema again
            dataset.delete_sample_field(path)
        raise
    dataset.reload()


def _restore(samples, done):
    """Undoes completed writes: ``done`` = [(columns, ids, sample_ids, label_path,
    backup, declared)] in write order."""
    dataset = samples._dataset
    for columns, ids, sample_ids, label_path, backup, declared in reversed(done):
        keys = [(sid, None) if label_path is None else (sid, lid)
                for lid, sid in zip(ids, sample_ids)]
        old = {name: (kind, [backup.get(key, {}).get(name, _MISSING) for key in keys])
               for name, (kind, _) in columns.items()}
        write_rows(samples, old, ids, sample_ids, label_path=label_path)
        for path in declared:
            if dataset.has_field(path):
                dataset.delete_sample_field(path)


def write_all_or_nothing(samples, parts, then=None):
    """Several :func:`label_audit.write_rows` calls as one write.

    Each call is already all-or-nothing; if a later call fails, the earlier
    ones are undone (their previous values restored, the fields they added
    removed) before the error is raised.

    Args:
        samples: the collection
        parts: list of ``(columns, ids, sample_ids, label_path)``
        then (None): a callable run after the writes, as part of them (e.g.
            saving the run record): if it fails, the writes are undone too

    Returns:
        what ``then`` returned (None without it)
    """
    dataset = samples._dataset
    coll = dataset._sample_collection
    done = []
    try:
        for columns, ids, sample_ids, label_path in parts:
            paths = [name if label_path is None else "%s.%s" % (label_path, name)
                     for name in columns]
            declared = [p for p in paths if not dataset.has_field(p)]
            backup = _backup(coll, list(columns), ids, sample_ids, label_path)
            write_rows(samples, columns, ids, sample_ids, label_path=label_path)
            done.append((columns, ids, sample_ids, label_path, backup, declared))
        return then() if then is not None else None
    except BaseException:
        _restore(samples, done)
        dataset.reload()
        raise
