"""Random horizontal flip of all modalities and labels together."""
from __future__ import annotations

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ._blocks import new_planar, planes_of, seg_keys, store


@TRANSFORMS.register_module()
class MultiModalRandomFlip(BaseTransform):
    """Flip ``img`` (every channel) and every label map horizontally with probability ``prob``.

    Draws ``numpy.random.rand() < prob`` (mmseg ``RandomFlip``) unless ``results['flip']`` is
    already set. Added keys: ``flip`` (bool), ``flip_direction`` ('horizontal').
    """

    def __init__(self, prob: float = 0.5) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = float(prob)

    def transform(self, results: dict) -> dict:
        flip = results.get("flip")
        if flip is None:  # a preset decision (test-time augmentation) is kept, as mmseg does
            flip = bool(np.random.rand() < self.prob)
        results["flip"] = flip
        results["flip_direction"] = "horizontal"
        if flip:
            if "img" in results:
                img = results["img"]
                planes, results["img"] = new_planar(img.shape[2], img.shape[0], img.shape[1],
                                                    img.dtype)
                for source, plane in zip(planes_of(img), planes):
                    store(plane, cv2.flip(source, 1, dst=plane))
            for key in seg_keys(results):
                results[key] = _hflip(results[key])
        return results

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(prob={self.prob})"


def _hflip(label: np.ndarray) -> np.ndarray:
    """Horizontal flip of an (H, W) map -> contiguous copy."""
    return cv2.flip(label, 1)
