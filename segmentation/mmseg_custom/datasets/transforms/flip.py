"""Random horizontal flip of all modalities and labels together."""
from __future__ import annotations

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ._blocks import seg_keys


@TRANSFORMS.register_module()
class MultiModalRandomFlip(BaseTransform):
    """Flip ``img`` (every channel) and every label map horizontally with probability ``prob``.

    Draws ``numpy.random.rand() < prob`` (mmseg ``RandomFlip``). Added keys: ``flip`` (bool),
    ``flip_direction`` ('horizontal').
    """

    def __init__(self, prob: float = 0.5) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = float(prob)

    def transform(self, results: dict) -> dict:
        flip = bool(np.random.rand() < self.prob)
        results["flip"] = flip
        results["flip_direction"] = "horizontal"
        if flip:
            if "img" in results:
                results["img"] = _hflip(results["img"])
            for key in seg_keys(results):
                results[key] = _hflip(results[key])
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(prob={self.prob})"


def _hflip(arr: np.ndarray) -> np.ndarray:
    """Horizontal flip (H, W[, C]) -> contiguous copy; cv2 handles up to 512 channels."""
    if arr.ndim == 3 and arr.shape[2] > 4:
        return np.ascontiguousarray(arr[:, ::-1])
    out = cv2.flip(np.ascontiguousarray(arr), 1)
    return out[:, :, None] if arr.ndim == 3 and out.ndim == 2 else out
