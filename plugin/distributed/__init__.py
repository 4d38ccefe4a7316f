"""label_audit.distributed: label-audit on a Ray cluster (optional ``ray`` extra).

- :mod:`.ray_embeddings`: ``compute_embeddings(..., backend="ray")`` -- Ray Data
  ``map_batches`` over the filepaths, the model loaded once per actor (GPU actors
  when the cluster has GPUs), vectors written back in one bulk update.
- :mod:`.ray_scoring`: ``score_label_issues(..., backend="ray")`` -- the engine's
  sums over samples (loss and gradient, column moments, Gram matrices, kNN top-k)
  computed by Ray tasks over row shards and reduced on the driver.
- :mod:`.cluster`: connecting (``ray_address``), retries, per-task reports.

Nothing here imports Ray until it is used.
"""
