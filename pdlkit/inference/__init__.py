"""Inference: ``Predictor`` (checkpoint -> panoptic predictions), image reading, TTA, and the
writers of the prediction files of DESIGN.md §3 (``predict_paths``)."""
from .io import find_images, image_id_of, read_image
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
    "image_id_of",
]
