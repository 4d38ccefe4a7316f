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
    root = samples._root_dataset
    existing = root.list_brain_runs()
    if brain_key in existing:
        kind = getattr(root.get_brain_info(brain_key).config, "type", None)
        if kind != "visualization":
            raise ValueError(
                "Brain key %r holds a %s run on dataset %r, not a visualization: choose another "
                "brain_key, or dataset.delete_brain_run(%r) first. Nothing was changed"
                % (brain_key, kind or "brain", root.name, brain_key))
    kwargs.setdefault("seed", random_state)  # every method (t-SNE's seed was not passed)
    if method == "tsne":
        n = len(samples) if patches_field is None else samples.count(path)
        perplexity = float(kwargs.get("perplexity", 30.0))
        if n <= perplexity:
            raise ValueError("t-SNE with perplexity %g needs more than %d points; got %d. Use "
                             "method='pca' or 'umap', or pass a smaller perplexity" % (perplexity, perplexity, n))
        first = samples.limit(20).values(path, unwind=patches_field is not None)
        dim = next((len(v) for v in first if v is not None), None)
        if dim is not None:
            kwargs.setdefault("pca_dims", min(50, int(dim)))  # Brain's PCA step needs pca_dims <= d
    # computed under a temporary key and swapped in only when it succeeded: a failing call
    # keeps the previous map
    tmp = brain_key + "_new"
    if tmp in existing:
        root.delete_brain_run(tmp)
    try:
        fob.compute_visualization(samples, patches_field=patches_field,
                                  embeddings=embeddings_field, method=method,
                                  brain_key=tmp, **kwargs)
    except BaseException:
        if tmp in root.list_brain_runs():
            root.delete_brain_run(tmp)
        raise
    if brain_key in root.list_brain_runs():
        root.delete_brain_run(brain_key)
    root.rename_brain_run(tmp, brain_key)
    return root.load_brain_results(brain_key)
