"""Object-detection label issues: missing objects, spurious boxes, swapped
classes, badly located boxes and images without annotations.

* :mod:`.matching`: numpy IoU and one-to-one matching of ``[x, y, w, h]`` boxes;
* :mod:`.issues`: per-box / per-image scores on plain arrays
  (:func:`score_detection_issues`), no database needed;
* :mod:`.compute`: FiftyOne glue (:func:`compute_detection_issues`);
* :mod:`.synthetic`: canvases of real images with known boxes, injected
  annotation errors and a simulated detector (benchmark, demo, tests).

Submodules are imported on first use, so importing this package is cheap.
"""

_LAZY = {
    "box_iou": ("matching", "box_iou"),
    "greedy_match": ("matching", "greedy_match"),
    "score_detection_issues": ("issues", "score_detection_issues"),
    "DetectionIssueResult": ("issues", "DetectionIssueResult"),
    "compute_detection_issues": ("compute", "compute_detection_issues"),
    "DetectionIssuesResults": ("compute", "DetectionIssuesResults"),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module("." + module_name, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
