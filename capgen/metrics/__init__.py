"""Caption scores (the official COCO scorers), the grounding score of attention models and the
per-image loss; each a torchmetrics Metric that counts every image once under DDP."""

from .captions import CaptionScores, default_metrics, score_captions, score_captions_per_image
from .grounding import GroundingScore, GroundingScores, grounding_score
from .loss import ImageMeanLoss
from .per_image import PerImageMetric

__all__ = [
    "CaptionScores", "GroundingScore", "GroundingScores", "ImageMeanLoss", "PerImageMetric",
    "default_metrics", "grounding_score", "score_captions", "score_captions_per_image",
]
