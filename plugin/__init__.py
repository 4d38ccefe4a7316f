"""label-audit: find and fix label errors in FiftyOne datasets.

This file is both the FiftyOne plugin entry point (``register``) and the
top-level of the pip package ``label_audit``. Keep it light: FiftyOne
re-imports it at every plugin registry build, so the SDK functions below are
imported lazily on first use.

SDK::

    import label_audit as la

    la.compute_embeddings(dataset, model="resnet50")
    la.compute_label_quality(dataset, "ground_truth")
    result = la.score_label_issues(labels, features=X)
"""

__version__ = "0.1.0"

# public name -> (submodule, attribute)
_LAZY = {
    "compute_embeddings": ("embeddings.compute", "compute_embeddings"),
    "embed_images": ("embeddings.compute", "embed_images"),
    "load_model": ("embeddings.models", "load_model"),
    "score_label_issues": ("scoring", "score_label_issues"),
    "LabelIssueResult": ("scoring", "LabelIssueResult"),
    "compute_label_quality": ("quality", "compute_label_quality"),
    "find_confused_classes": ("review.confusion", "find_confused_classes"),
    "suspects": ("review.suspects", "suspects"),
    "tag_decisions": ("review.decisions", "tag_decisions"),
    "apply_decisions": ("review.apply", "apply_decisions"),
    "undo_decisions": ("review.apply", "undo_decisions"),
    "cleaning_rounds": ("review.rounds", "cleaning_rounds"),
    "export_cleanset": ("review.export", "export_cleanset"),
    "visualize": ("visualize", "visualize"),
    "compute_detection_issues": ("detection.compute", "compute_detection_issues"),
    "score_detection_issues": ("detection.issues", "score_detection_issues"),
    "evaluate_cleaning": ("review.evaluate", "evaluate_cleaning"),
    "load_evaluation": ("review.evaluate", "load_evaluation"),
    "export_multitask_labels": ("review.multitask_export", "export_multitask_labels"),
    "refresh_combined": ("multitask", "refresh_combined"),
    "combine_task_scores": ("multitask", "combine_task_scores"),
}

__all__ = sorted(_LAZY) + ["register"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        module = importlib.import_module("." + module_name, __name__)
        value = getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def __dir__():
    return __all__


def register(p):
    """Registers label-audit's operators and panels with FiftyOne."""
    from .operators import OPERATORS

    for operator in OPERATORS:
        p.register(operator)
