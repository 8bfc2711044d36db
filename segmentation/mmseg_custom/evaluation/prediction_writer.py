"""Write predicted label maps to files (benchmark submissions, inference)."""
from __future__ import annotations

import os
import os.path as osp
from typing import Any, Sequence

import cv2
import numpy as np
from mmengine.dist import is_main_process
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger
from mmseg.registry import METRICS


@METRICS.register_module()
class PredictionWriter(BaseMetric):
    """Save each prediction as a single-channel 8-bit PNG named after its input.

    The file name is the RGB file's stem with ``strip_suffix`` removed (e.g.
    ``clear_day_REC0006_frame_040719_frame_camera.png`` ->
    ``REC0006_frame_040719.png`` for MUSES with ``strip_suffix='_frame_camera'``; the
    folder structure below ``input_root`` is kept when ``keep_tree`` is set). Values
    are the predicted class indices (train ids), or ``id_map[class]`` when an id map
    is given (e.g. Cityscapes label ids). With ``overlay`` the RGB input blended with
    the dataset palette is also written to ``<output_dir>/overlay``.

    Args:
        output_dir: folder for the PNGs (created).
        strip_suffix: suffix removed from the input stem.
        input_root: common root of the input files, for ``keep_tree``.
        keep_tree: mirror the input folders below ``input_root``.
        id_map: optional list mapping class index -> written value.
        overlay: also write colour overlays (palette from the dataset meta).
    """

    def __init__(self, output_dir: str, strip_suffix: str = "", input_root: str | None = None,
                 keep_tree: bool = False, id_map: Sequence[int] | None = None,
                 overlay: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.output_dir = output_dir
        self.strip_suffix = strip_suffix
        self.input_root = input_root
        self.keep_tree = keep_tree
        self.id_map = np.asarray(id_map, dtype=np.uint8) if id_map is not None else None
        self.overlay = overlay
        os.makedirs(output_dir, exist_ok=True)

    def _target(self, img_path: str) -> str:
        stem = osp.splitext(osp.basename(img_path))[0]
        if self.strip_suffix and stem.endswith(self.strip_suffix):
            stem = stem[: -len(self.strip_suffix)]
        sub = ""
        if self.keep_tree:
            if self.input_root is None:
                raise ValueError("PredictionWriter: keep_tree needs input_root")
            sub = osp.dirname(osp.relpath(img_path, self.input_root))
        return osp.join(self.output_dir, sub, stem + ".png")

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = sample["pred_sem_seg"]["data"].squeeze(0).cpu().numpy().astype(np.uint8)
            if self.id_map is not None:
                pred = self.id_map[pred]
            target = self._target(sample["img_path"])
            os.makedirs(osp.dirname(target), exist_ok=True)
            if not cv2.imwrite(target, pred):
                raise OSError(f"could not write prediction '{target}'")
            if self.overlay:
                self._write_overlay(sample, target)
            self.results.append(1)

    def _write_overlay(self, sample: dict, target: str) -> None:
        palette = np.asarray(self.dataset_meta["palette"], dtype=np.uint8)[:, ::-1]  # BGR
        colour = palette[sample["pred_sem_seg"]["data"].squeeze(0).cpu().numpy()]
        rgb = cv2.imread(sample["img_path"], cv2.IMREAD_COLOR)
        if rgb is None:
            raise OSError(f"could not read '{sample['img_path']}' for the overlay")
        if rgb.shape[:2] != colour.shape[:2]:
            rgb = cv2.resize(rgb, colour.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        overlay_dir = osp.join(self.output_dir, "overlay")
        os.makedirs(overlay_dir, exist_ok=True)
        cv2.imwrite(osp.join(overlay_dir, osp.basename(target)),
                    cv2.addWeighted(rgb, 0.5, colour, 0.5, 0))

    def compute_metrics(self, results: list) -> dict:
        if is_main_process():
            MMLogger.get_current_instance().info(
                f"wrote {len(results)} predictions to {self.output_dir}")
        return dict(num_predictions=len(results))
