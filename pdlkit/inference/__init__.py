"""Inference: ``Predictor`` (checkpoint -> panoptic predictions), image reading, TTA, and the
writers of the prediction files (``predict_paths``)."""
from .io import DEFAULT_MAX_PIXELS, find_images, image_id_of, read_image, scan_images
from .predictor import Prediction, Predictor
from .runner import PredictSummary, predict_paths
from .writers import PredictionWriter

__all__ = [
    "Predictor",
    "Prediction",
    "predict_paths",
    "PredictSummary",
    "PredictionWriter",
    "read_image",
    "find_images",
    "scan_images",
    "image_id_of",
    "DEFAULT_MAX_PIXELS",
]
