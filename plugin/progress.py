"""Progress of the SDK's long calls (``compute_label_quality``, its multi-task form and
``compute_detection_issues``): a tqdm bar in percent whose description is the current stage,
and the caller's ``progress_callback(fraction, label)``.

No FiftyOne import at module level (the scoring engine maps its stages with :func:`within`);
the operators turn the same callback into ``ctx.set_progress``.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def show_progress(progress) -> bool:
    """Whether to draw a progress bar: ``progress`` itself, or for None FiftyOne's
    ``fiftyone.config.show_progress_bars`` (True when FiftyOne is not installed), as FiftyOne's own
    ``progress`` arguments do."""
    if progress is None:
        try:
            import fiftyone as fo
        except ImportError:
            return True
        return bool(fo.config.show_progress_bars)
    return bool(progress)


def within(callback, lo: float, hi: float, prefix: str = ""):
    """The ``(fraction, label)`` callback of a sub-stage that spans ``[lo, hi]`` of ``callback``'s
    whole, its labels prefixed with ``prefix``; None when ``callback`` is None."""
    if callback is None:
        return None
    return lambda f, label: callback(lo + (hi - lo) * min(max(float(f), 0.0), 1.0), prefix + label)


class ProgressReporter:
    """Call as ``report(fraction, label)`` with ``fraction`` in [0, 1].

    progress (None): show a tqdm bar (``tqdm.auto``: a widget in notebooks, stderr elsewhere)
        and log each new stage at DEBUG level; None = FiftyOne's
        ``fiftyone.config.show_progress_bars`` (True when FiftyOne is not installed), as
        FiftyOne's own ``progress`` arguments do.  The bar appears with the first report past 0,
        so a call that fails its input checks prints none.
    callback (None): called with ``(fraction, label)`` on every report.
    desc: the bar's prefix.

    ``within(lo, hi, prefix="")`` returns a ``(fraction, label)`` callback for a sub-stage that
    spans ``[lo, hi]`` of the whole (what ``score_label_issues(progress_callback=...)`` gets).
    ``close()`` ends the bar (also when the call fails, through ``with``).
    """

    def __init__(self, progress=None, callback=None, desc: str = "label-audit"):
        self.show = show_progress(progress)
        self.callback = callback
        self.desc = desc
        self.bar = None
        self._label = None

    def __call__(self, fraction: float, label: str) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self.bar is None and self.show and fraction > 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=100, unit="%", desc=self.desc,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        if self.bar is not None:
            if label != self._label:
                self.bar.set_description_str("%s: %s" % (self.desc, label), refresh=False)
                logger.debug("%s (%.0f%%)", label, 100 * fraction)
            step = int(round(100 * fraction)) - self.bar.n
            if step > 0:
                self.bar.update(step)
            else:
                self.bar.refresh()
        self._label = label
        if self.callback is not None:
            self.callback(fraction, label)

    def within(self, lo: float, hi: float, prefix: str = ""):
        return within(self, lo, hi, prefix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.show = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
