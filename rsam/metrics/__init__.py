"""Metrics of every RemoteSAM benchmark, synchronised across ranks (torchmetrics ``Metric`` where possible).

Each module's docstring states the official formula it reproduces and any deliberate deviation. Values are
fractions in [0, 1] (CIDEr: x10 as in the reference code); multiply by 100 for the paper's tables. A metric that saw
no valid sample raises ``ValueError`` instead of returning 0.
"""

from rsam.metrics.captioning import CaptionMetric, caption_scores, cider
from rsam.metrics.classification import MultiLabelAccuracy, SceneAccuracy
from rsam.metrics.counting import CountingAccuracy
from rsam.metrics.detection import CocoDetectionMetric, VocDetectionMetric
from rsam.metrics.grounding import GroundingMetric, box_iou
from rsam.metrics.referring import ReferringSegMetric
from rsam.metrics.semseg import SemanticSegMetric
from rsam.tasks.polygon import polygon_iou

__all__ = [
    "CaptionMetric",
    "CocoDetectionMetric",
    "CountingAccuracy",
    "GroundingMetric",
    "MultiLabelAccuracy",
    "ReferringSegMetric",
    "SceneAccuracy",
    "SemanticSegMetric",
    "VocDetectionMetric",
    "box_iou",
    "caption_scores",
    "cider",
    "polygon_iou",
]
