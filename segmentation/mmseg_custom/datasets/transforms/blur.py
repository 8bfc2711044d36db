"""Random Gaussian blur of the RGB block."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ._blocks import block_slices, cv_dst, planes_of, store


@TRANSFORMS.register_module()
class RandomGaussianBlurRGB(BaseTransform):
    """With probability ``p`` blur the RGB block (first modality) with a Gaussian kernel.

    Draws ``numpy.random.random() < p``; kernel ``kernel_size`` (w, h) with ``sigma`` (0: OpenCV
    derives it from the kernel size, 0.8 for 3x3); a zero kernel size draws sigma uniformly
    in [0, 1) (``numpy.random.random()``) and lets OpenCV derive the kernel. The auxiliary
    blocks are untouched. Modified keys: ``img``.
    """

    def __init__(self, p: float = 0.2, kernel_size: Sequence[int] = (3, 3),
                 sigma: float = 0.0) -> None:
        self.p = float(p)
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
        self.sigma = float(sigma)

    def transform(self, results: dict) -> dict:
        if np.random.random() < self.p:
            rgb = block_slices(results)[0]
            sigma = self.sigma
            if self.kernel_size == (0, 0):
                sigma = np.random.random()
            for plane in planes_of(results["img"])[rgb]:  # per channel = OpenCV's 3-channel result
                store(plane, cv2.GaussianBlur(plane, self.kernel_size, sigma, dst=cv_dst(plane)))
        return results

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(p={self.p}, kernel_size={self.kernel_size}, "
                f"sigma={self.sigma})")
