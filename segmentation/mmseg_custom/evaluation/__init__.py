"""Evaluation metrics (registered in mmseg METRICS)."""
from .iou_metric import MultiModalIoUMetric
from .prediction_writer import PredictionWriter

__all__ = ["MultiModalIoUMetric", "PredictionWriter"]
