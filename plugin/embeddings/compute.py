"""``compute_embeddings``: embeddings for images, object patches and masked
instances, written back to a FiftyOne dataset in bulk.

The array-level core (:func:`embed_images`) takes filepaths and optional
patch specs and returns a float32 array; :func:`compute_embeddings` adds the
FiftyOne plumbing: reading the view, validating fields, writing the vectors in
one bulk update after everything was computed (an interrupted run leaves the
dataset as it was), tagging failures, and recording a run.
"""

import logging

import numpy as np

from .loader import ImageItems, PatchSpec, check_same_size, make_loader
from .models import OFFLINE_MODELS, load_model

logger = logging.getLogger(__name__)

FAILED_TAG = "audit:embedding_failed"
RUN_METHOD = "label_audit.embeddings"


class EmbeddingFailure:
    """One item that could not be embedded."""

    __slots__ = ("sample_id", "label_id", "filepath", "reason")

    def __init__(self, sample_id, label_id, filepath, reason):
        self.sample_id = sample_id
        self.label_id = label_id
        self.filepath = filepath
        self.reason = reason

    def __repr__(self):
        what = "label %s of sample %s" % (self.label_id, self.sample_id) if self.label_id \
            else "sample %s" % self.sample_id
        return "%s (%s): %s" % (what, self.filepath, self.reason)


class EmbeddingsReport:
    """What a :func:`compute_embeddings` run did.

    Attributes:
        num_embedded: images or objects embedded
        failures: a list of :class:`EmbeddingFailure`
        dim: the stored embedding dimension
        model: the model name
        run_key: the run recorded on the dataset (None if not written)
        embeddings: the vectors when ``embeddings_field=None`` (rows aligned
            with ``ids``; NaN rows for failures), else None
        ids: sample ids (image mode) or label ids (patch mode) of the rows
        reduction: the fitted :class:`~.reduce.PCAReduction`, if any
    """

    def __init__(self, num_embedded, failures, dim, model, run_key=None,
                 embeddings=None, ids=None, reduction=None):
        self.num_embedded = num_embedded
        self.failures = failures
        self.dim = dim
        self.model = model
        self.run_key = run_key
        self.embeddings = embeddings
        self.ids = ids
        self.reduction = reduction

    @property
    def num_failed(self):
        return len(self.failures)

    def summary(self):
        lines = ["Embedded %d item(s) with %s (%d-d); %d failed"
                 % (self.num_embedded, self.model, self.dim, self.num_failed)]
        for f in self.failures[:10]:
            lines.append("  - %r" % (f,))
        if self.num_failed > 10:
            lines.append("  ... and %d more (tagged %r)" % (self.num_failed - 10, FAILED_TAG))
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()


def embed_images(filepaths, model="resnet50", patches=None, batch_size=32,
                 num_workers=None, device=None, padding=0.0, min_size=2,
                 weights="DEFAULT", transform=None, progress=False,
                 progress_callback=None):
    """Embeds images (or object crops of them) from disk.

    Args:
        filepaths: ``n`` image paths
        model ("resnet50"): see :func:`~.models.load_model`
        patches (None): per image, a list of :class:`~.loader.PatchSpec`;
            if given, each crop is embedded instead of the whole image
        batch_size (32): images (or crops) per forward pass
        num_workers (None): decoding processes; default ``cpu_count - 1``
        device (None): torch device; default cuda, then mps, then cpu
        padding (0.0), min_size (2): crop context and minimum size
        weights ("DEFAULT"), transform (None): see :func:`~.models.load_model`
        progress (False): show a tqdm bar
        progress_callback (None): called with a fraction in ``[0, 1]``

    Returns:
        ``(embeddings, errors, model)``: a float32 array ``(m, D)`` where
        ``m = n`` (image mode) or the total number of patches (rows in image,
        then patch order), NaN rows for failures; ``errors`` a list of ``m``
        entries, None or the reason; and the loaded
        :class:`~.models.EmbeddingModel`
    """
    em = load_model(model, weights=weights, transform=transform, device=device)
    dim = em.dim
    if patches is None:
        counts = None
        offsets = np.arange(len(filepaths) + 1)
    else:
        if len(patches) != len(filepaths):
            raise ValueError("patches must have one list per filepath")
        counts = np.array([len(p) for p in patches], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
    m = int(offsets[-1])
    out = np.full((m, dim), np.nan, dtype=np.float32)
    errors = [None] * m
    if m == 0:
        return out, errors, em

    items = ImageItems(filepaths, em.transform, patches=patches, padding=padding,
                       min_size=min_size)
    loader = make_loader(items, batch_size, num_workers=num_workers, counts=counts,
                         pin_memory=em.device.type == "cuda")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=m, unit="patch" if patches is not None else "img",
                   desc="Embedding")
    import torch

    done = 0
    for batch in loader:
        tensors, rows = [], []
        for i, tensor, errs in batch:
            start = int(offsets[i])
            ok_rows = [start + j for j, e in enumerate(errs) if e is None]
            for j, e in enumerate(errs):
                errors[start + j] = e
            if tensor is not None:
                tensors.append(tensor)
                rows.extend(ok_rows)
            done += len(errs)
        if tensors:
            check_same_size(tensors)
            x = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
            for s in range(0, x.shape[0], max(batch_size, 1)):
                chunk = x[s : s + batch_size]
                out[rows[s : s + chunk.shape[0]]] = em.embed(chunk)
        if bar is not None:
            bar.update(sum(len(errs) for _, _, errs in batch))
        if progress_callback is not None:
            progress_callback(done / m)
    if bar is not None:
        bar.close()
    return out, errors, em


def _zoo_model(model):
    """A FiftyOne zoo model name that is not served by torchvision/offline, or None."""
    if not isinstance(model, str) or model.lower() in OFFLINE_MODELS:
        return None
    try:
        import torchvision

        if model in set(torchvision.models.list_models()):
            return None
    except Exception:
        pass
    import fiftyone.zoo as foz

    if model in foz.list_zoo_models():
        return model
    return None


def _check_collection(samples):
    if samples.media_type != "image":
        raise ValueError(
            "compute_embeddings needs an image collection; %r has media type %r. "
            "For videos, embed frames: dataset.to_frames(sample_frames=True)"
            % (samples._dataset.name, samples.media_type)
        )
    if len(samples) == 0:
        raise ValueError("The view is empty: there is nothing to embed")


def _patch_field_info(samples, patches_field):
    import fiftyone as fo

    field = samples.get_field(patches_field)
    doc_type = getattr(field, "document_type", None)
    if doc_type is None or not issubclass(doc_type, (fo.Detections, fo.Polylines)):
        raise ValueError(
            "patches_field %r must be a Detections or Polylines field; found %s. "
            "Use patches_field=None to embed whole images"
            % (patches_field, "no such field" if field is None
               else getattr(doc_type, "__name__", type(field).__name__))
        )
    list_field = "detections" if issubclass(doc_type, fo.Detections) else "polylines"
    return doc_type, list_field


def _collect_patches(samples, patches_field, list_field, use_masks, skip_crowd):
    """Reads labels in bulk; returns per-sample label ids and PatchSpecs."""
    prefix = "%s.%s." % (patches_field, list_field)
    label_ids = samples.values(prefix + "id")
    if list_field == "detections":
        boxes = samples.values(prefix + "bounding_box")
        crowd = samples.values(prefix + "iscrowd") if skip_crowd else None
        masks = samples.values(prefix + "mask") if use_masks else None
        # masks stored on disk (Detection.mask_path): read by the loader's workers
        mask_paths = samples.values(prefix + "mask_path") if use_masks else None
        polys = None
    else:
        polys = samples.values(prefix + "points")
        boxes = crowd = masks = mask_paths = None
    specs, ids, skipped = [], [], 0
    from .images import PatchError, polygons_bbox

    for s in range(len(label_ids)):
        lids = label_ids[s] or []
        row_specs, row_ids = [], []
        for j, lid in enumerate(lids):
            if crowd is not None and crowd[s] is not None and crowd[s][j]:
                skipped += 1
                continue
            if polys is not None:
                pts = polys[s][j] or []
                try:
                    bbox = polygons_bbox(pts)
                except PatchError:
                    bbox = [float("nan")] * 4
                spec = PatchSpec(bbox, polygons=pts if use_masks else None)
            else:
                mask = masks[s][j] if masks is not None and masks[s] is not None else None
                if mask is None and mask_paths is not None and mask_paths[s] is not None:
                    mask = mask_paths[s][j]  # a path: the loader reads it
                spec = PatchSpec(boxes[s][j], mask=mask)
            row_specs.append(spec)
            row_ids.append(lid)
        specs.append(row_specs)
        ids.append(row_ids)
    return ids, specs, skipped


def compute_embeddings(samples, model="resnet50", embeddings_field="embeddings",
                       patches_field=None, use_masks=False, batch_size=32,
                       num_workers=None, device=None, skip_failures=True,
                       reduce_dims=None, progress=None, padding=0.0, min_size=2,
                       skip_crowd=True, weights="DEFAULT", transform=None,
                       random_state=0, progress_callback=None, backend="local",
                       ray_address=None, ray_workers=None, ray_max_retries=3):
    """Computes embeddings of a FiftyOne collection's images or objects.

    Args:
        samples: a FiftyOne dataset or view of images
        model ("resnet50"): a torchvision classification model name (pretrained
            weights, penultimate layer: ResNet-50 gives 2048-d),
            ``"efficientnet-lite0"`` (offline extra), a FiftyOne zoo model
            name that exposes embeddings or a ``fiftyone.core.models.Model``
            (both run through FiftyOne's own ``compute_embeddings``), or a
            ``torch.nn.Module`` (with ``transform``)
        embeddings_field ("embeddings"): the sample field (image mode) or
            label attribute (patch mode) to store vectors in; None to return
            them in the report instead
        patches_field (None): a Detections or Polylines field: embed each
            object crop and store the vector on its label
        use_masks (False): zero the background of each crop using the
            instance mask (``Detection.mask``) or polygon (``Polyline``);
            labels without a mask are embedded unmasked
        batch_size (32): images or crops per forward pass
        num_workers (None): decoding worker processes (default cpu_count - 1)
        device (None): default cuda, then mps, then cpu
        skip_failures (True): skip images/objects that fail (report them and
            tag their samples ``audit:embedding_failed``); if False, raise
            before anything is written
        reduce_dims (None): if set, PCA to this dimension (fitted on up to
            20,000 vectors; the projection is stored with the run). On a view of
            part of the dataset, the projection an earlier run of the same field
            stored (same model and ``reduce_dims``) is reused, so new samples get
            vectors in the same basis as the others
        progress (None): show a progress bar; None uses
            ``fiftyone.config.show_progress_bars`` (FiftyOne's convention)
        padding (0.0): crop context as a fraction of the box size on each side
        min_size (2): skip crops smaller than this many pixels
        skip_crowd (True): skip ``iscrowd`` boxes (COCO practice)
        weights ("DEFAULT"), transform (None): see :func:`~.models.load_model`
        random_state (0): seed for the PCA sample
        progress_callback (None): called with a fraction in ``[0, 1]``
        backend ("local"): ``"ray"`` embeds with a Ray Data actor pool
            (:func:`label_audit.distributed.ray_embeddings.ray_embed_images`:
            the model is loaded once per actor, one GPU per actor when the
            cluster has GPUs); the vectors are written the same way, after
            every shard is done. Not for zoo/FiftyOne models
        ray_address (None): the Ray cluster: None (a running session of this
            process, else a local Ray instance), ``"auto"`` or
            ``"ray://host:10001"``
        ray_workers (None): Ray actors (default: one per GPU, else per CPU)
        ray_max_retries (3): restarts of a Ray actor whose process died (its
            batch is retried); when exhausted a ``RayRunError`` is raised and
            nothing is written

    Returns:
        an :class:`EmbeddingsReport`

    Raises:
        ValueError: for a video/empty collection, a wrong patches field, or
            (``skip_failures=False``) the first failure
    """
    from ..runs import check_run_key, refuse_generated_view, run_key_for, save_run

    from ..progress import show_progress

    progress = show_progress(progress)
    if embeddings_field is not None:  # (embeddings returned in memory need no dataset)
        refuse_generated_view(samples, "compute_embeddings")
    _check_collection(samples)
    key = run_key_for(embeddings_field if patches_field is None
                      else "%s_%s" % (patches_field, embeddings_field))
    check_run_key(samples, key, RUN_METHOD, what="run key")
    if backend not in ("local", "ray"):
        raise ValueError("backend must be 'local' or 'ray'; got %r" % (backend,))
    zoo = _zoo_model(model)
    if zoo is not None or _is_fiftyone_model(model):
        if backend == "ray":
            raise ValueError("backend='ray' runs torchvision models, efficientnet-lite0 or your own "
                             "torch.nn.Module; %r is a FiftyOne zoo/Model object: use "
                             "backend='local'" % (zoo or type(model).__name__,))
        unsupported = [name for name, given in (("use_masks", bool(use_masks)),
                                                 ("reduce_dims", reduce_dims is not None),
                                                 ("transform", transform is not None),
                                                 ("padding", bool(padding)))
                       if given]
        if unsupported:
            raise ValueError("%s: FiftyOne zoo/Model objects run through FiftyOne's own "
                             "compute_embeddings, which does not apply %s. Use a torchvision "
                             "model name, 'efficientnet-lite0' or your own torch.nn.Module, or "
                             "leave %s out. Nothing was written"
                             % (zoo or type(model).__name__, ", ".join(unsupported),
                                " and ".join(unsupported)))
        return _compute_with_fiftyone_model(samples, zoo or model, embeddings_field,
                                            patches_field, batch_size, num_workers,
                                            skip_failures, progress)

    sample_ids, filepaths = samples.values(["id", "filepath"])
    patches, row_ids, skipped = None, list(sample_ids), 0
    if patches_field is not None:
        _, list_field = _patch_field_info(samples, patches_field)
        label_ids, patches, skipped = _collect_patches(
            samples, patches_field, list_field, use_masks, skip_crowd)
        row_ids = [lid for lids in label_ids for lid in lids]
        row_samples = [sid for sid, lids in zip(sample_ids, label_ids) for _ in lids]
        row_paths = [fp for fp, lids in zip(filepaths, label_ids) for _ in lids]
    else:
        row_samples, row_paths = list(sample_ids), list(filepaths)

    if backend == "ray":
        from ..distributed.ray_embeddings import ray_embed_images

        X, errors, em = ray_embed_images(
            filepaths, model=model, patches=patches, batch_size=batch_size, device=device,
            padding=padding, min_size=min_size, weights=weights, transform=transform,
            progress=progress, progress_callback=progress_callback, address=ray_address,
            num_workers=ray_workers, max_retries=ray_max_retries)
    else:
        X, errors, em = embed_images(
            filepaths, model=model, patches=patches, batch_size=batch_size,
            num_workers=num_workers, device=device, padding=padding, min_size=min_size,
            weights=weights, transform=transform, progress=progress,
            progress_callback=progress_callback)

    failures = [
        EmbeddingFailure(row_samples[r], row_ids[r] if patches is not None else None,
                         row_paths[r], e)
        for r, e in enumerate(errors) if e is not None
    ]
    if failures and not skip_failures:
        raise ValueError("Could not embed %d item(s); nothing was written. First: %r"
                         % (len(failures), failures[0]))
    ok = np.array([e is None for e in errors], dtype=bool)
    if not ok.any():
        if failures:
            raise ValueError("No item could be embedded; nothing was written. "
                             "First failure: %r" % (failures[0],))
        raise ValueError("No objects to embed in field %r of this view" % patches_field)

    reduction = None
    if reduce_dims:
        from .reduce import fit_pca

        reduction = _stored_projection(samples, key, embeddings_field, em.name, X.shape[1], reduce_dims)
        if reduction is None:
            reduction = fit_pca(X[ok], reduce_dims, random_state=random_state)
        Xr = np.full((X.shape[0], reduction.n_components), np.nan, dtype=np.float32)
        Xr[ok] = reduction.transform(X[ok])
        X = Xr

    report = EmbeddingsReport(int(ok.sum()), failures, X.shape[1], em.name,
                              ids=row_ids, reduction=reduction)
    if embeddings_field is None:
        report.embeddings = X
        return report

    _write_embeddings(samples, embeddings_field, patches_field, patches, sample_ids,
                      row_ids, row_samples, X, ok)
    failed_samples = sorted({f.sample_id for f in failures})
    if failed_samples:
        samples.select(failed_samples).tag_samples(FAILED_TAG)
    good = sorted(set(sample_ids) - set(failed_samples))
    if good:
        samples.select(good).untag_samples(FAILED_TAG)

    config = dict(model=em.name, embeddings_field=embeddings_field,
                  patches_field=patches_field, use_masks=bool(use_masks),
                  dim=int(X.shape[1]), reduce_dims=reduce_dims, padding=padding,
                  min_size=min_size, skip_crowd=skip_crowd, backend=backend)
    results = dict(num_embedded=report.num_embedded, num_failed=len(failures),
                   num_crowd_skipped=skipped,
                   reduction=reduction.to_dict() if reduction is not None else None)
    save_run(samples, key, RUN_METHOD, config, results)
    report.run_key = key
    return report


def _write_embeddings(samples, embeddings_field, patches_field, patches, sample_ids,
                      row_ids, row_samples, X, ok):
    """One bulk write: vectors for successes, None for failures.

    All-or-nothing: the previous vectors are read first and written back if
    the write is interrupted (any exception, Ctrl-C); a field that did not
    exist before is removed again.
    """
    import fiftyone as fo

    dataset = samples._dataset
    if patches is None:
        path = embeddings_field
        existed = dataset.has_sample_field(path)
        if existed:
            old = dict(zip(*samples.values(["id", path])))
        else:
            dataset.add_sample_field(path, fo.VectorField)
        values = {sid: (X[r] if ok[r] else None) for r, sid in enumerate(row_ids)}
        write = lambda: samples.set_values(path, values, key_field="id")  # noqa: E731
        restore = lambda: samples.set_values(path, old, key_field="id")  # noqa: E731
    else:
        _, list_field = _patch_field_info(samples, patches_field)
        path = "%s.%s.%s" % (patches_field, list_field, embeddings_field)
        existed = dataset.has_field(path)
        if existed:
            ids_, vals_ = samples.values(
                ["%s.%s.id" % (patches_field, list_field), path], unwind=True)
            old = dict(zip(ids_, vals_))
        else:
            dataset.add_sample_field(path, fo.VectorField)
        values = [
            {"sample_id": row_samples[r], "label_id": lid,
             "value": (X[r] if ok[r] else None)}
            for r, lid in enumerate(row_ids)
        ]
        write = lambda: samples.set_label_values(path, values)  # noqa: E731
        restore = lambda: samples.set_label_values(path, old)  # noqa: E731
    try:
        write()
    except BaseException:
        if existed:
            restore()
        else:
            dataset.delete_sample_field(path)
        raise


def _is_fiftyone_model(model):
    try:
        import fiftyone.core.models as fom
    except ImportError:
        return False
    return isinstance(model, fom.Model)


def _stored_projection(samples, key, embeddings_field, model_name, dim, reduce_dims):
    """The PCA projection stored by an earlier run of this field, to reuse when ``samples``
    is only part of the dataset: refitting it on those samples would leave the others'
    vectors in another basis (mixed silently by a later scoring). None otherwise (the whole
    dataset is embedded again, or no matching projection: same model, input size and k)."""
    from .reduce import PCAReduction

    root = samples._root_dataset
    if embeddings_field is None or key not in root.list_runs() or len(samples) >= len(root):
        return None
    # (compute_embeddings' check_run_key made sure the key holds an embeddings run)
    if getattr(root.get_run_info(key).config, "model", None) != model_name:
        return None
    stored = getattr(root.load_run_results(key, cache=False), "reduction", None)
    if not stored:
        return None
    reduction = PCAReduction.from_dict(stored)
    if reduction.mean.shape[0] != dim or reduction.n_components != int(reduce_dims):
        return None
    return reduction


def _compute_with_fiftyone_model(samples, model, embeddings_field, patches_field,
                                 batch_size, num_workers, skip_failures, progress):
    """Delegates to FiftyOne's own embedding code for zoo names and FiftyOne models.

    ``model`` is a FiftyOne zoo model name (loaded with ``foz.load_zoo_model``,
    which downloads its weights on first use) or a ``fiftyone.core.models.Model``
    that exposes embeddings.
    """
    import fiftyone.zoo as foz

    name = model if isinstance(model, str) else type(model).__name__
    fo_model = foz.load_zoo_model(model) if isinstance(model, str) else model
    if not getattr(fo_model, "has_embeddings", False):
        raise ValueError("Model %r does not expose embeddings: pick a zoo model with "
                         "embeddings (foz.list_zoo_models(tags='embeddings'))" % name)
    kwargs = dict(batch_size=batch_size, num_workers=num_workers,
                  skip_failures=skip_failures, progress=progress)
    if patches_field is None:
        out = samples.compute_embeddings(fo_model, embeddings_field=embeddings_field, **kwargs)
        n = len(samples)
    else:
        _, list_field = _patch_field_info(samples, patches_field)
        out = samples.compute_patch_embeddings(fo_model, patches_field,
                                               embeddings_field=embeddings_field, **kwargs)
        n = samples.count("%s.%s" % (patches_field, list_field))
    report = EmbeddingsReport(n, [], -1, name)
    if embeddings_field is None:
        report.embeddings = out
    return report
