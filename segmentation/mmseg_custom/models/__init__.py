from . import backbones, losses, segmentors  # noqa: F401
from .data_preprocessor import MultiModalDataPreProcessor  # noqa: F401
