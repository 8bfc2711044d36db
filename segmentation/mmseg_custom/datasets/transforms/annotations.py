"""Loading of semantic label maps with explicit validation of the label values."""
from __future__ import annotations

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from .loading import read_bytes


@TRANSFORMS.register_module()
class LoadMultiModalAnnotations(BaseTransform):
    """Read the label map of a sample (single-channel PNG, decoded unchanged) as uint8.

    Processing, in order:

    1. ``reduce_zero_label`` (FMB): 255 -> 0, then subtract 1 with uint8 wrap-around, i.e.
       0 -> 255 (ignore) and k -> k - 1 (the original's ``LoadAnnotationsov``).
    2. ``label_map`` from the data info (mmseg's class-subset remapping), if not None.
    3. Validation: every value must lie in [0, num_classes) or equal ``ignore_index``;
       otherwise a ValueError names the file and the offending values.

    Required keys: ``seg_map_path``; optional ``reduce_zero_label``, ``label_map``,
    ``num_classes`` (data info). Added keys: ``gt_seg_map`` (H, W) uint8; ``'gt_seg_map'`` is
    appended to ``seg_fields``.

    Args:
        num_classes: number of classes; None takes ``results['num_classes']`` (an error if
            neither is given: values are always validated).
        ignore_index: the ignore value (255).
        reduce_zero_label: overrides the data info's flag when not None.
        imdecode_backend: ``'pillow'`` (mmseg's default; palette PNGs give indices) or ``'cv2'``.
        backend_args: mmengine file backend arguments.
    """

    def __init__(self, num_classes: int | None = None, ignore_index: int = 255,
                 reduce_zero_label: bool | None = None, imdecode_backend: str = "pillow",
                 backend_args: dict | None = None) -> None:
        if imdecode_backend not in ("pillow", "cv2"):
            raise ValueError(f"imdecode_backend must be 'pillow' or 'cv2', got {imdecode_backend!r}")
        self.num_classes = num_classes
        self.ignore_index = int(ignore_index)
        self.reduce_zero_label = reduce_zero_label
        self.imdecode_backend = imdecode_backend
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        path = results["seg_map_path"]
        data = read_bytes(path, "label", self.backend_args)
        try:
            label = mmcv.imfrombytes(data, flag="unchanged", backend=self.imdecode_backend)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot decode label image (unreadable or corrupt): {path}") from err
        if label is None:
            raise ValueError(f"cannot decode label image (unreadable or corrupt): {path}")
        label = np.squeeze(label)
        if label.ndim != 2:
            raise ValueError(f"label file {path}: expected a single-channel map, got shape "
                             f"{label.shape}")
        if label.dtype != np.uint8:
            if label.min() < 0 or label.max() > 255:
                raise ValueError(f"label file {path}: values outside 0..255 "
                                 f"(min {label.min()}, max {label.max()})")
            label = label.astype(np.uint8)
        reduce = self.reduce_zero_label
        if reduce is None:
            reduce = bool(results.get("reduce_zero_label", False))
        if reduce:
            label = label.copy()
            label[label == 255] = 0
            label -= 1  # uint8 wrap-around: 0 -> 255
        label_map = results.get("label_map")
        if label_map is not None:
            source = label.copy()
            for old, new in label_map.items():
                label[source == old] = new
        self._check_values(label, path, results)
        results["gt_seg_map"] = label
        results["reduce_zero_label"] = reduce
        fields = results.setdefault("seg_fields", [])
        if "gt_seg_map" not in fields:
            fields.append("gt_seg_map")
        return results

    def _check_values(self, label: np.ndarray, path: str, results: dict) -> None:
        num_classes = self.num_classes
        if num_classes is None:
            num_classes = results.get("num_classes")
        if num_classes is None:
            raise ValueError("LoadMultiModalAnnotations needs num_classes (transform argument or "
                             f"data info key 'num_classes') to validate {path}")
        counts = np.bincount(label.ravel(), minlength=256)
        counts[self.ignore_index] = 0
        bad = np.flatnonzero(counts[int(num_classes):])
        if bad.size:
            values = (bad + int(num_classes)).tolist()
            raise ValueError(f"label file {path}: values {values} outside [0, {num_classes}) "
                             f"and not the ignore index {self.ignore_index}")

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_classes={self.num_classes}, "
                f"ignore_index={self.ignore_index}, reduce_zero_label={self.reduce_zero_label}, "
                f"imdecode_backend={self.imdecode_backend!r})")
