"""Photometric distortion of the RGB block (mmseg ``PhotoMetricDistortion`` sequence)."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ._blocks import block_slices, interleaved, write_block


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """uint8(clip(float32(img) * alpha + beta, 0, 255)) with truncation, as mmseg's ``convert``."""
    out = img.astype(np.float32)
    if alpha != 1.0:
        out *= np.float32(alpha)
    if beta != 0.0:
        out += np.float32(beta)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


@TRANSFORMS.register_module()
class MultiModalPhotoMetricDistortion(BaseTransform):
    """Random brightness, contrast, saturation and hue changes of the RGB block (BGR order).

    Sequence (each step with probability 1/2, ``numpy.random``): brightness (add
    U(-delta, delta)); ``mode = randint(2)``; contrast if mode == 1 (multiply by
    U(contrast_range)); saturation (BGR->HSV, S *= U(saturation_range) truncated to uint8,
    HSV->BGR); hue (H = (int(H) + randint(-hue_delta, hue_delta)) mod 180); contrast if
    mode == 0. Brightness and contrast clip to [0, 255] and cast to uint8. Auxiliary blocks
    are untouched; the result is written back into the float32 image.

    Faithful mode (default, ``clean=False``, Q26): the block stays float32 until a brightness
    or contrast step converts it, as released. When saturation / hue run on the float block,
    OpenCV's float HSV convention applies (H in [0, 360), S in [0, 1], V in [0, 255]): S is
    truncated to {0, 1} by the uint8 cast and H is folded into [0, 180).
    Clean mode (``clean=True``): the block is first rounded to uint8, so every step uses the
    uint8 HSV convention (H in [0, 180), S and V in [0, 255]).
    """

    def __init__(self, brightness_delta: int = 32, contrast_range: Sequence[float] = (0.5, 1.5),
                 saturation_range: Sequence[float] = (0.5, 1.5), hue_delta: int = 18,
                 clean: bool = False) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta
        self.clean = bool(clean)

    def brightness(self, img: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            return _convert(img, beta=np.random.uniform(-self.brightness_delta,
                                                        self.brightness_delta))
        return img

    def contrast(self, img: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            return _convert(img, alpha=np.random.uniform(self.contrast_lower, self.contrast_upper))
        return img

    def saturation(self, img: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=np.random.uniform(
                self.saturation_lower, self.saturation_upper))
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return img

    def hue(self, img: np.ndarray) -> np.ndarray:
        if np.random.randint(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
            shift = np.random.randint(-self.hue_delta, self.hue_delta)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int64) + shift) % 180
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        return img

    def distort(self, rgb: np.ndarray) -> np.ndarray:
        """The distortion sequence on one (H, W, 3) BGR block (float32 or uint8)."""
        rgb = self.brightness(rgb)
        mode = np.random.randint(2)
        if mode == 1:
            rgb = self.contrast(rgb)
        rgb = self.saturation(rgb)
        rgb = self.hue(rgb)
        if mode == 0:
            rgb = self.contrast(rgb)
        return rgb

    def transform(self, results: dict) -> dict:
        block = block_slices(results)[0]
        img = results["img"]
        if block.stop - block.start != 3:
            raise ValueError("MultiModalPhotoMetricDistortion needs a 3-channel RGB block, got "
                             f"{block.stop - block.start} channels ({results.get('img_path')})")
        rgb = interleaved(img, block)
        if self.clean:
            rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        write_block(img, block, self.distort(rgb))
        return results

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(brightness_delta={self.brightness_delta}, "
                f"contrast_range=({self.contrast_lower}, {self.contrast_upper}), "
                f"saturation_range=({self.saturation_lower}, {self.saturation_upper}), "
                f"hue_delta={self.hue_delta}, clean={self.clean})")
