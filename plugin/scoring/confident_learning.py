"""Confident learning over out-of-fold predicted probabilities (cleanlab-compatible).

Functions over arrays, no hidden state.  They reproduce the formulas of
cleanlab 2.9 (``cleanlab.rank``, ``cleanlab.count``, ``cleanlab.filter``) for
single-label multi-class data; ``tests/test_scoring_confident_learning.py``
checks bit-for-bit parity of every function and filter mode claimed here
against the installed cleanlab.  cleanlab is *not* imported by this module.

Conventions (as in cleanlab)
----------------------------
labels : int array of shape (N,), values in [0, K)  -- the *given* (noisy) labels.
pred_probs : float array of shape (N, K), rows sum to 1 -- out-of-fold P(true label = k | x).
confident_joint : int array of shape (K, K); ``cj[i, j]`` counts examples with
    given label i and (confidently estimated) true label j.
noise_matrix : float array (K, K); ``noise_matrix[i, j] = P(given = i | true = j)``;
    columns sum to 1.
inverse_noise_matrix : float array (K, K); ``inv[i, j] = P(true = i | given = j)``;
    columns sum to 1.
"""

from __future__ import annotations

import warnings
from typing import Optional, Tuple

import numpy as np

__all__ = [
    "FILTER_BY_MODES",
    "get_self_confidence_for_each_label",
    "get_normalized_margin_for_each_label",
    "get_label_quality_scores",
    "get_confident_thresholds",
    "compute_confident_joint",
    "calibrate_confident_joint",
    "estimate_joint",
    "estimate_latent",
    "estimate_py_and_noise_matrices_from_probabilities",
    "num_label_issues",
    "find_predicted_neq_given",
    "find_label_issues",
    "round_preserving_row_totals",
]

# Same constants as cleanlab.internal.constants
FLOATING_POINT_COMPARISON = 1e-6
CLIPPING_LOWER_BOUND = 1e-6
CONFIDENT_THRESHOLDS_LOWER_BOUND = 2 * FLOATING_POINT_COMPARISON
TINY_VALUE = 1e-100

FILTER_BY_MODES = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
    "low_self_confidence",
    "low_normalized_margin",
)


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
def _check_labels_probs(labels, pred_probs) -> Tuple[np.ndarray, np.ndarray]:
    if labels is None:
        raise ValueError("labels is None: pass an int array of shape (N,) with values in [0, K).")
    if pred_probs is None:
        raise ValueError("pred_probs is None: pass a float array of shape (N, K).")
    labels = np.asarray(labels)
    pred_probs = np.asarray(pred_probs)
    if pred_probs.ndim != 2:
        raise ValueError(f"pred_probs must be 2-D (N, K); got shape {pred_probs.shape}.")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,); got shape {labels.shape}.")
    if labels.shape[0] != pred_probs.shape[0]:
        raise ValueError(
            f"labels has {labels.shape[0]} entries but pred_probs has {pred_probs.shape[0]} rows; "
            "they must describe the same samples in the same order."
        )
    if labels.shape[0] == 0:
        raise ValueError("Empty input: labels and pred_probs have no rows.")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.isfinite(labels)) and np.all(
            labels == np.round(labels)
        ):
            labels = labels.astype(np.int64)
        else:
            raise ValueError(
                "labels must be integers in [0, K); map class names to ints first "
                "(missing labels, e.g. None/NaN, must be dropped before scoring)."
            )
    K = pred_probs.shape[1]
    if labels.min() < 0 or labels.max() >= K:
        raise ValueError(
            f"labels must lie in [0, K) with K = pred_probs.shape[1] = {K}; "
            f"got min {labels.min()}, max {labels.max()}."
        )
    if not np.all(np.isfinite(pred_probs)):
        raise ValueError("pred_probs contains NaN or inf; recompute the probabilities.")
    return labels, pred_probs


# --------------------------------------------------------------------------- #
# per-sample label quality scores (cleanlab.rank)
# --------------------------------------------------------------------------- #
def get_self_confidence_for_each_label(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Self-confidence ``pred_probs[i, labels[i]]``.

    Parameters
    ----------
    labels : int array, shape (N,), values in [0, K)
    pred_probs : float array, shape (N, K)

    Returns
    -------
    scores : array, shape (N,), range [0, 1], dtype of ``pred_probs``.
        Higher = the given label is more likely correct (cleanlab convention;
        ``1 - score`` ranks likely label errors first).
    """
    labels = np.asarray(labels)
    pred_probs = np.asarray(pred_probs)
    return pred_probs[np.arange(labels.shape[0]), labels]


def get_normalized_margin_for_each_label(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Normalized margin ``(p[y] - max_{k != y} p[k] + 1) / 2`` (cleanlab.rank).

    Parameters
    ----------
    labels : int array, shape (N,)
    pred_probs : float array, shape (N, K), K >= 2

    Returns
    -------
    scores : array, shape (N,), range [0, 1].  Higher = given label more likely correct;
        0.5 means the given label ties with the best other class.
    """
    labels = np.asarray(labels)
    pred_probs = np.asarray(pred_probs)
    n = labels.shape[0]
    self_confidence = pred_probs[np.arange(n), labels]
    other = pred_probs.copy()
    other[np.arange(n), labels] = -np.inf
    max_prob_not_label = other.max(axis=1)
    return (self_confidence - max_prob_not_label + 1) / 2


def get_label_quality_scores(
    labels: np.ndarray, pred_probs: np.ndarray, *, method: str = "self_confidence"
) -> np.ndarray:
    """Label quality score per sample (``method`` in {'self_confidence', 'normalized_margin'}).

    Same as ``cleanlab.rank.get_label_quality_scores(..., adjust_pred_probs=False)`` for these
    two methods.  Returns shape (N,), range [0, 1], higher = label more likely correct.
    """
    labels, pred_probs = _check_labels_probs(labels, pred_probs)
    if method == "self_confidence":
        return get_self_confidence_for_each_label(labels, pred_probs)
    if method == "normalized_margin":
        return get_normalized_margin_for_each_label(labels, pred_probs)
    raise ValueError(f"method must be 'self_confidence' or 'normalized_margin'; got {method!r}.")


# --------------------------------------------------------------------------- #
# thresholds, confident joint, calibration (cleanlab.count)
# --------------------------------------------------------------------------- #
def get_confident_thresholds(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Per-class threshold ``t_k = mean(pred_probs[labels == k, k])``.

    Classes absent from ``labels`` get threshold 2 (never confident), and thresholds are clipped
    below at 2e-6, as in cleanlab.  Returns shape (K,).
    """
    labels = np.asarray(labels)
    pred_probs = np.asarray(pred_probs)
    present = set(np.unique(labels).tolist())
    BIG_VALUE = 2
    thresholds = [
        np.mean(pred_probs[:, k][labels == k]) if k in present else BIG_VALUE
        for k in range(pred_probs.shape[1])
    ]
    return np.clip(thresholds, a_min=CONFIDENT_THRESHOLDS_LOWER_BOUND, a_max=None)


def _round_preserving_sum(iterable) -> np.ndarray:
    floats = np.asarray(iterable, dtype=float)
    ints = floats.round()
    orig_sum = np.sum(floats).round()
    int_sum = np.sum(ints).round()
    while abs(int_sum - orig_sum) > FLOATING_POINT_COMPARISON:
        diff = np.round(orig_sum - int_sum)
        increment = -1 if int(diff < 0.0) else 1
        changes = min(int(abs(diff)), len(iterable))
        indices = np.argsort(floats - ints)[::-increment][:changes]
        for i in indices:
            ints[i] = ints[i] + increment
        int_sum = np.sum(ints).round()
    return ints.astype(int)


def round_preserving_row_totals(matrix: np.ndarray) -> np.ndarray:
    """Round a (K, K) float matrix to ints so that every row keeps its (rounded) total."""
    return np.apply_along_axis(func1d=_round_preserving_sum, axis=1, arr=matrix).astype(int)


def _value_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)


def calibrate_confident_joint(confident_joint: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Calibrate the confident joint so that row sums equal the given-label counts.

    ``cj'[i, :] = cj[i, :] / sum(cj[i, :]) * count(labels == i)``, renormalised to total N,
    then rounded preserving row totals.  Returns an int (K, K) array.
    """
    confident_joint = np.asarray(confident_joint)
    K = len(confident_joint)
    label_counts = _value_counts(labels, K)
    calibrated = (
        confident_joint.T / np.clip(confident_joint.sum(axis=1), a_min=TINY_VALUE, a_max=None) * label_counts
    ).T
    calibrated = calibrated / np.clip(np.sum(calibrated), a_min=TINY_VALUE, a_max=None) * sum(label_counts)
    return round_preserving_row_totals(calibrated)


def compute_confident_joint(
    labels: np.ndarray,
    pred_probs: np.ndarray,
    *,
    thresholds: Optional[np.ndarray] = None,
    calibrate: bool = True,
    return_indices_of_off_diagonals: bool = False,
):
    """Confident joint ``C[given, true]`` (cleanlab ``compute_confident_joint``).

    Sample i is counted in bin (labels[i], j) when ``pred_probs[i, j] >= t_j - 1e-6`` for exactly
    one j, or, if several classes pass their threshold, j = argmax pred_probs[i].  Samples with no
    class above threshold are not counted.  The diagonal is clipped to >= 1.

    Parameters
    ----------
    labels : int array, shape (N,)
    pred_probs : float array, shape (N, K)
    thresholds : float array, shape (K,), optional
        Defaults to :func:`get_confident_thresholds`.
    calibrate : bool, default True
        Apply :func:`calibrate_confident_joint`.
    return_indices_of_off_diagonals : bool, default False
        Also return indices of samples counted off the diagonal (the 'confident_learning' filter).

    Returns
    -------
    confident_joint : int array, shape (K, K)
    indices : int array, only if ``return_indices_of_off_diagonals``
    """
    labels, pred_probs = _check_labels_probs(labels, pred_probs)
    K = pred_probs.shape[1]
    if thresholds is None:
        thresholds = get_confident_thresholds(labels, pred_probs)
    thresholds = np.asarray(thresholds)
    pred_probs_bool = pred_probs >= thresholds - 1e-6
    num_confident_bins = pred_probs_bool.sum(axis=1)
    at_least_one_confident = num_confident_bins > 0
    more_than_one_confident = num_confident_bins > 1
    true_label_guess = np.where(
        more_than_one_confident, pred_probs.argmax(axis=1), pred_probs_bool.argmax(axis=1)
    )
    true_conf = true_label_guess[at_least_one_confident]
    labels_conf = labels[at_least_one_confident]
    confident_joint = np.bincount(
        labels_conf.astype(np.int64) * K + true_conf, minlength=K * K
    ).reshape(K, K).astype(np.int64)
    np.fill_diagonal(confident_joint, confident_joint.diagonal().clip(min=1))
    if calibrate:
        confident_joint = calibrate_confident_joint(confident_joint, labels)
    if return_indices_of_off_diagonals:
        indices = np.arange(len(labels))[at_least_one_confident][true_conf != labels_conf]
        return confident_joint, indices
    return confident_joint


def estimate_joint(labels: np.ndarray, pred_probs: np.ndarray, *, confident_joint=None) -> np.ndarray:
    """Estimated joint distribution ``P(given = i, true = j)``, shape (K, K), sums to 1."""
    if confident_joint is None:
        cj = compute_confident_joint(labels, pred_probs, calibrate=True)
    else:
        cj = calibrate_confident_joint(confident_joint, labels)
    return cj / np.clip(float(np.sum(cj)), a_min=TINY_VALUE, a_max=None)


def _clip_noise_rates(noise_matrix: np.ndarray) -> np.ndarray:
    diagonal = np.diagonal(noise_matrix)
    noise_matrix = np.clip(noise_matrix, 0, 0.9999)
    np.fill_diagonal(noise_matrix, diagonal)
    return noise_matrix / np.clip(noise_matrix.sum(axis=0), a_min=TINY_VALUE, a_max=None)


def _clip_values(x, low=0.0, high=1.0, new_sum=None) -> np.ndarray:
    prev_sum = np.sum(x) if new_sum is None else new_sum
    x = np.clip(x, low, high)
    return x * prev_sum / np.clip(np.sum(x), a_min=TINY_VALUE, a_max=None)


def _compute_py(ps, noise_matrix, inverse_noise_matrix, py_method, true_labels_class_counts):
    if py_method == "cnt":
        py = inverse_noise_matrix.diagonal() / np.clip(noise_matrix.diagonal(), a_min=TINY_VALUE, a_max=None) * ps
    elif py_method == "eqn":
        py = np.linalg.inv(noise_matrix).dot(ps)
    elif py_method == "marginal":
        py = true_labels_class_counts / np.clip(float(sum(true_labels_class_counts)), a_min=TINY_VALUE, a_max=None)
    elif py_method == "marginal_ps":
        py = np.dot(inverse_noise_matrix, ps)
    else:
        raise ValueError(f"py_method must be one of cnt, eqn, marginal, marginal_ps; got {py_method!r}.")
    return _clip_values(py, low=CLIPPING_LOWER_BOUND, high=1.0, new_sum=1.0)


def _compute_inv_noise_matrix(py, noise_matrix, ps):
    joint = noise_matrix * py
    inv = joint.T / np.clip(ps, a_min=TINY_VALUE, a_max=None)
    return _clip_noise_rates(inv)


def _compute_noise_matrix_from_inverse(ps, inverse_noise_matrix, py):
    joint = (inverse_noise_matrix * ps).T
    return _clip_noise_rates(joint / np.clip(py, a_min=TINY_VALUE, a_max=None))


def estimate_latent(
    confident_joint: np.ndarray,
    labels: np.ndarray,
    *,
    py_method: str = "cnt",
    converge_latent_estimates: bool = False,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent prior and noise matrices from a (calibrated) confident joint.

    Returns
    -------
    py : shape (K,), estimated P(true = k), sums to 1.
    noise_matrix : shape (K, K), P(given = i | true = j), columns sum to 1.
    inverse_noise_matrix : shape (K, K), P(true = i | given = j), columns sum to 1.
    """
    confident_joint = np.asarray(confident_joint)
    labels = np.asarray(labels)
    K = len(confident_joint)
    ps = _value_counts(labels, K) / float(len(labels))
    labels_class_counts = confident_joint.sum(axis=1).astype(float)
    true_labels_class_counts = confident_joint.sum(axis=0).astype(float)
    noise_matrix = confident_joint / np.clip(true_labels_class_counts, a_min=TINY_VALUE, a_max=None)
    inv_noise_matrix = confident_joint.T / np.clip(labels_class_counts, a_min=TINY_VALUE, a_max=None)
    py = _compute_py(ps, noise_matrix, inv_noise_matrix, py_method, true_labels_class_counts)
    noise_matrix = _clip_noise_rates(noise_matrix)
    inv_noise_matrix = _clip_noise_rates(inv_noise_matrix)
    if converge_latent_estimates:
        for _ in range(3):
            for _ in range(5):
                inv_noise_matrix = _compute_inv_noise_matrix(py, noise_matrix, ps)
                py = _compute_py(ps, noise_matrix, inv_noise_matrix, "cnt", None)
            noise_matrix = _compute_noise_matrix_from_inverse(ps, inv_noise_matrix, py)
        py = _clip_values(py, low=1e-5, high=1.0, new_sum=1.0)
        noise_matrix = _clip_noise_rates(noise_matrix)
        inv_noise_matrix = _clip_noise_rates(inv_noise_matrix)
    return py, noise_matrix, inv_noise_matrix


def estimate_py_and_noise_matrices_from_probabilities(
    labels: np.ndarray,
    pred_probs: np.ndarray,
    *,
    thresholds: Optional[np.ndarray] = None,
    converge_latent_estimates: bool = True,
    py_method: str = "cnt",
    calibrate: bool = True,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(py, noise_matrix, inverse_noise_matrix, confident_joint) as in cleanlab.count."""
    cj = compute_confident_joint(labels, pred_probs, thresholds=thresholds, calibrate=calibrate)
    py, nm, inv = estimate_latent(
        cj, np.asarray(labels), py_method=py_method, converge_latent_estimates=converge_latent_estimates
    )
    return py, nm, inv, cj


def _reduce_issues(pred_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """True where the given label is (within 1e-6) the argmax: never flagged."""
    pp = np.copy(pred_probs)
    pp[np.arange(len(labels)), labels] += FLOATING_POINT_COMPARISON
    return pp.argmax(axis=1) == labels


def num_label_issues(labels: np.ndarray, pred_probs: np.ndarray, *, estimation_method: str = "off_diagonal") -> int:
    """Estimated number of label issues (cleanlab ``count.num_label_issues``).

    ``estimation_method`` in {'off_diagonal', 'off_diagonal_calibrated'}.
    """
    labels, pred_probs = _check_labels_probs(labels, pred_probs)
    if estimation_method == "off_diagonal":
        _, idx = compute_confident_joint(labels, pred_probs, calibrate=False, return_indices_of_off_diagonals=True)
        mask = np.zeros(len(labels), dtype=bool)
        mask[idx] = True
        mask[_reduce_issues(pred_probs, labels)] = False
        return int(np.sum(mask))
    if estimation_method == "off_diagonal_calibrated":
        cj = compute_confident_joint(labels, pred_probs, calibrate=True)
        joint = estimate_joint(labels, pred_probs, confident_joint=cj)
        return int(np.rint((1.0 - joint.trace()) * len(labels)))
    raise ValueError("estimation_method must be 'off_diagonal' or 'off_diagonal_calibrated'.")


def find_predicted_neq_given(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Boolean mask, shape (N,): ``argmax(pred_probs[i]) != labels[i]``."""
    labels, pred_probs = _check_labels_probs(labels, pred_probs)
    return np.argmax(pred_probs, axis=1) != labels


def _reduce_prune_counts(prune_count_matrix: np.ndarray, frac_noise: float = 1.0) -> np.ndarray:
    new_mat = prune_count_matrix * frac_noise
    np.fill_diagonal(new_mat, prune_count_matrix.diagonal())
    np.fill_diagonal(new_mat, prune_count_matrix.diagonal() + np.sum(prune_count_matrix - new_mat, axis=0))
    return new_mat.astype(int)


def _keep_at_least_n_per_class(prune_count_matrix: np.ndarray, n: int, *, frac_noise: float = 1.0) -> np.ndarray:
    diag = np.diagonal(prune_count_matrix)
    new_diagonal = np.maximum(diag, n)
    diff_per_col = new_diagonal - diag
    num_noise_rates_per_col = np.maximum(np.count_nonzero(prune_count_matrix, axis=0) - 1.0, 1.0)
    new_mat = prune_count_matrix - diff_per_col / num_noise_rates_per_col
    new_mat[new_mat < 0] = 0
    np.fill_diagonal(new_mat, new_diagonal)
    new_mat = _reduce_prune_counts(new_mat, frac_noise)
    return round_preserving_row_totals(new_mat).astype(int)


def _prune_by_class(pred_probs_k: np.ndarray, prune_col: np.ndarray, k: int, min_examples_per_class: int):
    n_k = pred_probs_k.shape[0]
    mask = np.zeros(n_k, dtype=bool)
    if n_k > min_examples_per_class:
        num_issues = n_k - prune_col[k]
        if num_issues >= 1:
            order = np.argsort(pred_probs_k[:, k])
            mask[order[:num_issues]] = True
        return mask
    warnings.warn(f"May not flag all label issues in class {k}: it has too few examples (min_examples_per_class).")
    return mask


def _prune_by_count(pred_probs_k: np.ndarray, prune_col: np.ndarray, k: int, min_examples_per_class: int):
    n_k = pred_probs_k.shape[0]
    mask = np.zeros(n_k, dtype=bool)
    if n_k <= min_examples_per_class:
        warnings.warn(f"May not flag all label issues in class {k}: it has too few examples (min_examples_per_class).")
        return mask
    for j in range(pred_probs_k.shape[1]):
        num2prune = prune_col[j]
        if k != j and num2prune > 0:
            margin = pred_probs_k[:, j] - pred_probs_k[:, k]
            order = np.argsort(-margin)
            mask[order[:num2prune]] = True
    return mask


def find_label_issues(
    labels: np.ndarray,
    pred_probs: np.ndarray,
    *,
    filter_by: str = "prune_by_noise_rate",
    frac_noise: float = 1.0,
    min_examples_per_class: int = 1,
    confident_joint: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Boolean mask of likely label issues, same result as ``cleanlab.filter.find_label_issues``.

    Parameters
    ----------
    labels : int array, shape (N,), values in [0, K)
    pred_probs : float array, shape (N, K); must be out-of-sample (e.g. out-of-fold).
    filter_by : str, default 'prune_by_noise_rate'
        - 'prune_by_noise_rate': for every off-diagonal cell (i, j) of the (calibrated)
          confident joint, flag the ``cj[i, j]`` samples labelled i with the largest margin
          ``p[j] - p[i]``.
        - 'prune_by_class': in class i, flag the ``N_i - cj[i, i]`` samples with lowest ``p[i]``.
        - 'both': intersection of the two.
        - 'confident_learning': samples counted off the diagonal of the confident joint.
        - 'predicted_neq_given': ``argmax p != label``.
        - 'low_self_confidence' / 'low_normalized_margin': the ``num_label_issues`` lowest scores.
        In every mode except the last two, samples whose given label is the argmax are unflagged.
    frac_noise : float in (0, 1], default 1.0
        Only for the prune modes: keep the top ``frac_noise`` fraction of the counts.
    min_examples_per_class : int, default 1
        Prune modes never leave a class with fewer than this many samples.
    confident_joint : int array (K, K), optional
        Precomputed (calibrated) confident joint, used by the prune modes.

    Returns
    -------
    label_issues_mask : bool array, shape (N,), True = likely mislabelled.
    """
    if filter_by not in FILTER_BY_MODES:
        raise ValueError(f"filter_by must be one of {FILTER_BY_MODES}; got {filter_by!r}.")
    labels, pred_probs = _check_labels_probs(labels, pred_probs)
    K = pred_probs.shape[1]
    n = len(labels)
    cl_error_indices = None
    if confident_joint is None or filter_by == "confident_learning":
        confident_joint, cl_error_indices = compute_confident_joint(
            labels, pred_probs, return_indices_of_off_diagonals=True
        )
    if filter_by in ("low_normalized_margin", "low_self_confidence"):
        scores = get_label_quality_scores(labels, pred_probs, method=filter_by[4:])
        num_errors = num_label_issues(labels, pred_probs)
        cl_error_indices = np.argsort(scores)[:num_errors]

    label_issues_mask = np.zeros(n, dtype=bool)
    if filter_by in ("prune_by_noise_rate", "prune_by_class", "both"):
        prune = _keep_at_least_n_per_class(np.asarray(confident_joint).T, n=min_examples_per_class, frac_noise=frac_noise)
        per_class = [(k, pred_probs[labels == k], prune[:, k]) for k in range(K)]
        if filter_by in ("prune_by_class", "both"):
            for k, pp_k, col in per_class:
                m = _prune_by_class(pp_k, col, k, min_examples_per_class)
                if len(m) > 1:
                    label_issues_mask[labels == k] = m
        if filter_by == "both":
            by_class = label_issues_mask
            label_issues_mask = np.zeros(n, dtype=bool)
        if filter_by in ("prune_by_noise_rate", "both"):
            for k, pp_k, col in per_class:
                m = _prune_by_count(pp_k, col, k, min_examples_per_class)
                if len(m) > 1:
                    label_issues_mask[labels == k] = m
        if filter_by == "both":
            label_issues_mask = label_issues_mask & by_class
    elif filter_by in ("confident_learning", "low_normalized_margin", "low_self_confidence"):
        label_issues_mask[cl_error_indices] = True
    elif filter_by == "predicted_neq_given":
        label_issues_mask = np.argmax(pred_probs, axis=1) != labels
    if filter_by not in ("low_self_confidence", "low_normalized_margin"):
        label_issues_mask[_reduce_issues(pred_probs, labels)] = False
    return label_issues_mask
