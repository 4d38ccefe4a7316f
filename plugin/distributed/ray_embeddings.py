"""Embeddings with Ray Data: ``map_batches`` over shards of the filepaths.

:func:`ray_embed_images` is the Ray twin of
:func:`label_audit.embeddings.compute.embed_images` (same arguments, same
return value): the filepaths (and, in patch mode, each image's boxes/masks)
become a Ray Dataset; an actor pool runs :class:`EmbedBatches`, which loads the
model once per actor (one GPU per actor when the cluster has GPUs) and decodes,
crops and transforms with the single-process code
(:class:`~label_audit.embeddings.loader.ImageItems`); the driver streams the
vectors back into one array.  ``compute_embeddings(..., backend="ray")`` then
writes them with the same all-or-nothing bulk writer as the local path, after
every shard is done: a run that fails leaves the dataset as it was.
"""

import logging
import pickle
import warnings

import numpy as np

from .cluster import RayRunError, cluster_resources, connect, is_lost_worker, limit_threads

logger = logging.getLogger(__name__)

__all__ = ["ray_embed_images", "EmbedBatches"]


class EmbeddingInfo:
    """What the caller of :func:`ray_embed_images` needs to know about the model
    (``name``, ``dim``) without loading it on the driver."""

    def __init__(self, name, dim):
        self.name = name
        self.dim = dim

    def __repr__(self):
        return "EmbeddingInfo(%r, dim=%d)" % (self.name, self.dim)


def model_name(model):
    """The name :func:`~label_audit.embeddings.models.load_model` gives ``model``."""
    if isinstance(model, str):
        return model
    return getattr(model, "name", None) if hasattr(model, "embed") else type(model).__name__


class EmbedBatches:
    """A Ray Data actor: loads the model once, embeds batches of images or crops.

    Args:
        model, weights, transform, device: see :func:`~label_audit.embeddings.models.load_model`
        patch_mode: rows carry pickled :class:`~label_audit.embeddings.loader.PatchSpec` lists
        padding, min_size: crop options
        batch_size: images or crops per forward pass
        threads: decoding threads in the actor (decoding overlaps inference on GPU actors)
    """

    def __init__(self, model, weights, transform, device, patch_mode, padding, min_size, batch_size,
                 threads=1):
        from ..embeddings.models import load_model

        limit_threads(max(1, int(threads or 1)))  # the CPUs this actor reserved
        self.em = load_model(model, weights=weights, transform=transform, device=device)
        self.dim = self.em.dim
        self.patch_mode = patch_mode
        self.padding = padding
        self.min_size = min_size
        self.batch_size = max(1, int(batch_size))
        self.pool = None
        if threads and threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(int(threads))

    def __call__(self, batch):
        import torch

        from ..embeddings.loader import ImageItems

        paths = [str(p) for p in batch["filepath"]]
        offsets = np.asarray(batch["offset"], dtype=np.int64)
        patches = [pickle.loads(bytes(p)) for p in batch["patches"]] if self.patch_mode else None
        items = ImageItems(paths, self.em.transform, patches=patches, padding=self.padding,
                           min_size=self.min_size)
        decoded = (self.pool.map(items.__getitem__, range(len(items))) if self.pool is not None
                   else map(items.__getitem__, range(len(items))))
        rows, errors, tensors, ok_rows = [], [], [], []
        for i, tensor, errs in decoded:
            start = int(offsets[i])
            for j, e in enumerate(errs):
                rows.append(start + j)
                errors.append("" if e is None else str(e))
                if e is None:
                    ok_rows.append(len(rows) - 1)
            if tensor is not None:
                tensors.append(tensor)
        out = np.full((len(rows), self.dim), np.nan, dtype=np.float32)
        if tensors:
            x = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
            for s in range(0, x.shape[0], self.batch_size):
                chunk = x[s : s + self.batch_size]
                out[ok_rows[s : s + chunk.shape[0]]] = self.em.embed(chunk)
        return {"row": np.asarray(rows, dtype=np.int64), "embedding": out,
                "error": np.asarray(errors, dtype=object)}


def ray_embed_images(filepaths, model="resnet50", patches=None, batch_size=32, device=None, padding=0.0,
                     min_size=2, weights="DEFAULT", transform=None, progress=False, progress_callback=None,
                     address=None, num_workers=None, max_retries=3, threads=None):
    """Embeds images (or object crops) with a Ray Data actor pool.

    Same arguments and return value as :func:`~label_audit.embeddings.compute.embed_images`,
    plus:

    Args:
        address (None): the Ray cluster (None: a running session of this process or a new
            local one; ``"auto"``; ``"ray://host:10001"``)
        num_workers (None): actors; default one per GPU of the cluster, else one per CPU
        max_retries (3): restarts of an actor whose process died, and retries of its batch;
            0 makes a lost worker fail the run (:class:`~.cluster.RayRunError`)
        threads (None): decoding threads per actor (CPUs reserved per actor); default 1
            without GPUs, 4 with

    Returns:
        ``(embeddings (m, D) float32 with NaN rows for failures, errors (m,) None or the
        reason, EmbeddingInfo(name, dim))``
    """
    import pyarrow as pa

    ray = connect(address)
    import ray.data

    cpus, gpus = cluster_resources(ray)
    if num_workers is None:
        num_workers = gpus if gpus else cpus
    num_workers = max(1, int(num_workers))
    if threads is None:
        threads = 4 if gpus else 1
    threads = max(1, min(int(threads), max(1, cpus // num_workers)))
    n = len(filepaths)
    if patches is None:
        counts = np.ones(n, dtype=np.int64)
    else:
        if len(patches) != n:
            raise ValueError("patches must have one list per filepath")
        counts = np.array([len(p) for p in patches], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    m = int(offsets[-1])
    keep = np.flatnonzero(counts > 0)
    per_image = max(1.0, m / max(len(keep), 1))
    image_batch = max(1, int(round(batch_size / per_image)))
    blobs = ([pickle.dumps(patches[i], protocol=pickle.HIGHEST_PROTOCOL) for i in keep]
             if patches is not None else [b""] * len(keep))
    table = pa.table({
        "filepath": pa.array([str(filepaths[i]) for i in keep], pa.string()),
        "offset": pa.array(offsets[keep], pa.int64()),
        "patches": pa.array(blobs, pa.binary()),
    })
    # blocks of about one batch each, at most 4 per actor in flight at once (Ray Data streams them)
    n_blocks = int(np.clip(-(-len(keep) // image_batch), 1, max(4 * num_workers, len(keep) // (4 * image_batch))))
    bounds = np.linspace(0, len(keep), n_blocks + 1).astype(np.int64)
    tables = [table.slice(int(a), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    dim = None
    out = None
    errors = [None] * m
    if m == 0:
        return np.full((0, 0), np.nan, np.float32), errors, EmbeddingInfo(model_name(model), 0)
    with warnings.catch_warnings():  # max_restarts/max_task_retries: no named parameter in Ray 2.60
        warnings.simplefilter("ignore")
        ds = _pipeline(ray, tables, model, weights, transform, device, patches is not None, padding,
                       min_size, batch_size, threads, image_batch, num_workers, gpus, max_retries)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=m, unit="patch" if patches is not None else "img", desc="Embedding (ray)")
    done = 0
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows = np.asarray(batch["row"], dtype=np.int64)
            emb = np.asarray(batch["embedding"], dtype=np.float32)
            if out is None:
                dim = emb.shape[1]
                out = np.full((m, dim), np.nan, dtype=np.float32)
            out[rows] = emb
            for r, e in zip(rows, batch["error"]):
                errors[r] = e or None
            done += rows.size
            if bar is not None:
                bar.update(rows.size)
            if progress_callback is not None:
                progress_callback(done / m)
    except Exception as e:
        if not is_lost_worker(ray, e):
            raise
        raise RayRunError(
            "The Ray embedding job failed (%s: %s). Nothing was written to the dataset; rerun "
            "the call or allow more retries (ray_max_retries)."
            % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")) from e
    finally:
        if bar is not None:
            bar.close()
    if done != m:
        raise RayRunError("The Ray embedding job returned %d of %d rows; nothing was written" % (done, m))
    return out, errors, EmbeddingInfo(model_name(model), dim)


def _pipeline(ray, tables, model, weights, transform, device, patch_mode, padding, min_size, batch_size,
              threads, image_batch, num_workers, gpus, max_retries):
    """The Ray Data plan: row blocks -> an actor pool running :class:`EmbedBatches`."""
    return ray.data.from_arrow(tables).map_batches(
        EmbedBatches,
        fn_constructor_kwargs=dict(model=model, weights=weights, transform=transform, device=device,
                                   patch_mode=patch_mode, padding=padding, min_size=min_size,
                                   batch_size=batch_size, threads=threads),
        batch_size=image_batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=threads,
        num_gpus=1 if gpus else 0,
        max_restarts=int(max_retries),
        max_task_retries=int(max_retries),
    )
