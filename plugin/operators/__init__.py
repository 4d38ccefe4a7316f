"""label-audit's FiftyOne operators: one class per action, thin glue over the SDK."""

from .detection import ComputeDetectionIssues
from .embeddings import ComputeEmbeddings
from .evaluate import EvaluateCleaning
from .quality import ComputeLabelQuality
from .panel import LabelAuditPanel
from .review import REVIEW_OPERATORS
from .visualize import VisualizeEmbeddings

OPERATORS = [ComputeEmbeddings, ComputeLabelQuality] + REVIEW_OPERATORS + [EvaluateCleaning,
    VisualizeEmbeddings, ComputeDetectionIssues, LabelAuditPanel]
