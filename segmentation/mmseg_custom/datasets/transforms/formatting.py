"""Packing of a multimodal sample into the model's input tensor and an mmseg SegDataSample."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import PixelData
from mmseg.registry import TRANSFORMS
from mmseg.structures import SegDataSample

DEFAULT_META_KEYS = (
    "img_path", "seg_map_path", "modality_paths", "ori_shape", "img_shape", "pad_shape",
    "scale_factor", "flip", "flip_direction", "reduce_zero_label", "modalities",
    "modality_channels", "img_padding_size", "condition", "case", "subset", "weather", "time")


@TRANSFORMS.register_module()
class PackMultiModalInputs(BaseTransform):
    """Pack ``img`` (H, W, C) and the label into ``inputs`` and ``data_samples``.

    Output dict:

    * ``inputs``: float32 tensor (C, H, W), contiguous, un-normalised unless a
      ``NormalizeMultiModal`` ran (modality blocks in configuration order).
    * ``data_samples``: :class:`SegDataSample` with ``gt_sem_seg`` = PixelData of an int64
      (1, H, W) tensor (when ``gt_seg_map`` is present) and the metainfo of ``meta_keys`` that
      are present in ``results`` (missing ones are not added).

    Args:
        meta_keys: metainfo keys to copy (default: :data:`DEFAULT_META_KEYS`).
    """

    def __init__(self, meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        packed = {}
        if "img" in results:
            img = results["img"]
            if img.ndim != 3:
                raise ValueError(f"img must be (H, W, C), got shape {img.shape} "
                                 f"({results.get('img_path')})")
            packed["inputs"] = _tensor(img.transpose(2, 0, 1), torch.float32)
        sample = SegDataSample()
        if "gt_seg_map" in results:
            label = results["gt_seg_map"]
            sample.gt_sem_seg = PixelData(data=_tensor(label[None], torch.int64))
        sample.set_metainfo({k: results[k] for k in self.meta_keys if k in results})
        packed["data_samples"] = sample
        return packed

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(meta_keys={self.meta_keys})"


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """Contiguous tensor of ``array`` (no copy for a channel-planar float32 image)."""
    if dtype == torch.float32:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return torch.from_numpy(array.astype(np.int64))
