"""``visualize``: a 2-D map of the embeddings with FiftyOne Brain, for the
App's Embeddings panel (colour points by label or by a label-audit score,
lasso clusters of bad samples and tag them)."""


def visualize(samples, embeddings_field="embeddings", patches_field=None, method="umap",
              brain_key=None, random_state=0, **kwargs):
    """Computes a 2-D visualization of stored embeddings with FiftyOne Brain.

    Args:
        samples: a FiftyOne dataset or view
        embeddings_field ("embeddings"): the sample field, or the label
            attribute of ``patches_field``, holding the vectors
        patches_field (None): a Detections/Polylines field to map objects
        method ("umap"): ``"umap"`` (FiftyOne Brain's default for maps; the
            first call in a process spends about a minute in numba JIT),
            ``"pca"`` or ``"tsne"``
        brain_key (None): default ``"audit_<method>"`` (``"audit_<patches>_<method>"``)
        random_state (0): seed passed to the reducer
        **kwargs: more arguments for ``fiftyone.brain.compute_visualization``

    Returns:
        the ``VisualizationResults``; open the App's Embeddings panel and pick
        ``brain_key`` to see the map
    """
    import fiftyone.brain as fob

    from .runs import run_key_for

    if method not in ("umap", "pca", "tsne"):
        raise ValueError("method must be 'umap', 'pca' or 'tsne'; got %r" % (method,))
    if len(samples) == 0:
        raise ValueError("The view is empty: there is nothing to map")
    path = embeddings_field if patches_field is None else "%s.%s.%s" % (
        patches_field, "detections", embeddings_field)
    if not samples.has_field(path) and patches_field is not None:
        path = "%s.polylines.%s" % (patches_field, embeddings_field)
    if not samples.has_field(path):
        raise ValueError(
            "No embeddings field %r: run label_audit.compute_embeddings(...) first" % path)
    brain_key = brain_key or run_key_for("audit", patches_field, method)
    if brain_key in samples._dataset.list_brain_runs():
        samples._dataset.delete_brain_run(brain_key)
    if method == "umap":
        kwargs.setdefault("seed", random_state)
    elif method == "pca":
        kwargs.setdefault("seed", random_state)
    return fob.compute_visualization(samples, patches_field=patches_field,
                                     embeddings=embeddings_field, method=method,
                                     brain_key=brain_key, **kwargs)
