"""Multimodal data transforms (mmcv 2.x ``BaseTransform``s registered in mmseg TRANSFORMS)."""
from .annotations import LoadMultiModalAnnotations
from .blur import RandomGaussianBlurRGB
from .crop import MultiModalRandomCrop
from .flip import MultiModalRandomFlip
from .formatting import PackMultiModalInputs
from .loading import LoadMultiModalImages
from .normalize import NormalizeMultiModal
from .pad import MultiModalPad
from .photometric import MultiModalPhotoMetricDistortion
from .resize import MultiModalResize

__all__ = [
    "LoadMultiModalImages", "LoadMultiModalAnnotations", "RandomGaussianBlurRGB",
    "MultiModalResize", "MultiModalRandomCrop", "MultiModalRandomFlip", "MultiModalPhotoMetricDistortion",
    "NormalizeMultiModal", "MultiModalPad",
    "PackMultiModalInputs",
]
