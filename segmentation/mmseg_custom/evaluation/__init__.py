
from .prediction_writer import PredictionWriter  # noqa: F401
