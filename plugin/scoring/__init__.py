"""label_audit.scoring: label-error scoring over plain arrays (numpy / torch / sklearn).

No FiftyOne, no database: the glue code maps samples to rows and class names to ints.

Main entry points
-----------------
score_label_issues(labels, features=None, pred_probs=None, *, n_folds=5, n_repeats='auto', k=10,
                   random_state=0, ...)
    -> LabelIssueResult
update_label_issues(result, features, labels, *, changed=None, removed=None, ...)
    -> LabelIssueResult
"""

from .confident_learning import (
    FILTER_BY_MODES,
    calibrate_confident_joint,
    compute_confident_joint,
    estimate_joint,
    estimate_latent,
    estimate_py_and_noise_matrices_from_probabilities,
    find_label_issues,
    find_predicted_neq_given,
    get_confident_thresholds,
    get_label_quality_scores,
    get_normalized_margin_for_each_label,
    get_self_confidence_for_each_label,
    num_label_issues,
)
from .engine import LabelIssueResult, score_label_issues
from .fusion import (
    ambiguity_flags,
    flag_label_issues,
    fuse_probabilities,
    label_issue_scores,
    margins,
    noise_concentration,
    outlier_flags,
    outlier_scores,
)
from .importance import class_conditional_leverage, logistic_sensitivity, select_for_review
from .incremental import update_label_issues
from .neighbors import knn_agreement, knn_class_probabilities, knn_search
from .probabilities import assign_folds, auto_n_repeats, out_of_fold_probabilities, repeat_folds

__all__ = [
    "FILTER_BY_MODES",
    "LabelIssueResult",
    "ambiguity_flags",
    "assign_folds",
    "auto_n_repeats",
    "calibrate_confident_joint",
    "class_conditional_leverage",
    "compute_confident_joint",
    "estimate_joint",
    "estimate_latent",
    "estimate_py_and_noise_matrices_from_probabilities",
    "find_label_issues",
    "find_predicted_neq_given",
    "flag_label_issues",
    "fuse_probabilities",
    "get_confident_thresholds",
    "get_label_quality_scores",
    "get_normalized_margin_for_each_label",
    "get_self_confidence_for_each_label",
    "knn_agreement",
    "knn_class_probabilities",
    "knn_search",
    "label_issue_scores",
    "logistic_sensitivity",
    "margins",
    "noise_concentration",
    "num_label_issues",
    "out_of_fold_probabilities",
    "outlier_flags",
    "outlier_scores",
    "repeat_folds",
    "score_label_issues",
    "select_for_review",
    "update_label_issues",
]
