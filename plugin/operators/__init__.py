"""label-audit's FiftyOne operators: one class per action, thin glue over the SDK."""

from .embeddings import ComputeEmbeddings
from .quality import ComputeLabelQuality
from .review import REVIEW_OPERATORS

OPERATORS = [ComputeEmbeddings, ComputeLabelQuality] + REVIEW_OPERATORS
