"""Per-sample confusion areas and the IoU / accuracy summaries computed from them."""
from __future__ import annotations

import numpy as np
import torch

# Row order of an ``areas`` array: (intersection, union, prediction, label), each (K,).
INTERSECT, UNION, PRED, LABEL = range(4)


def confusion_areas(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
                    ignore_index: int = 255, name: str = "sample") -> np.ndarray:
    """Intersection, union, predicted and labelled pixel counts per class.

    Args:
        pred: (H, W) integer prediction in [0, num_classes).
        label: (H, W) integer ground truth in [0, num_classes) or ``ignore_index``.
        name: used in error messages (e.g. the image path).

    Returns:
        (4, K) int64 array; pixels whose label is ``ignore_index`` are excluded everywhere.
    """
    if pred.shape != label.shape:
        raise ValueError(f"{name}: prediction shape {tuple(pred.shape)} differs from the ground "
                         f"truth shape {tuple(label.shape)}")
    label = label.to(torch.int64)
    pred = pred.to(torch.int64)
    mask = label != ignore_index
    label = label[mask]
    pred = pred[mask]
    if label.numel():
        if int(label.min()) < 0 or int(label.max()) >= num_classes:
            raise ValueError(f"{name}: ground-truth values outside [0, {num_classes}) "
                             f"other than {ignore_index}: {torch.unique(label).tolist()}")
        if int(pred.min()) < 0 or int(pred.max()) >= num_classes:
            raise ValueError(f"{name}: predicted values outside [0, {num_classes}): "
                             f"{torch.unique(pred).tolist()}")
    area_label = torch.bincount(label, minlength=num_classes)
    area_pred = torch.bincount(pred, minlength=num_classes)
    area_intersect = torch.bincount(label[pred == label], minlength=num_classes)
    area_union = area_pred + area_label - area_intersect
    return torch.stack([area_intersect, area_union, area_pred, area_label]).numpy()


def summarize(areas: np.ndarray, nan_to_num: float | None = None) -> dict[str, object]:
    """aAcc, mIoU, mAcc (fractions) and per-class IoU / Acc from summed areas.

    A class absent from both prediction and ground truth has IoU = 0/0 = NaN (Acc is NaN
    when it is absent from the ground truth). ``nan_to_num=None`` (standard, mmseg) leaves
    NaNs and averages over the remaining classes; a number (the original's 0, Q30) replaces
    them before averaging over all K classes.

    Returns:
        dict with ``aAcc``, ``mIoU``, ``mAcc`` (floats, NaN when undefined) and ``IoU``,
        ``Acc`` ((K,) float64 arrays, after the NaN replacement).
    """
    areas = np.asarray(areas, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = areas[INTERSECT] / areas[UNION]
        acc = areas[INTERSECT] / areas[LABEL]
        total = areas[LABEL].sum()
        a_acc = areas[INTERSECT].sum() / total if total else float("nan")
    if nan_to_num is not None:
        iou = np.nan_to_num(iou, nan=nan_to_num)
        acc = np.nan_to_num(acc, nan=nan_to_num)
    return dict(aAcc=float(a_acc), mIoU=_nanmean(iou), mAcc=_nanmean(acc), IoU=iou, Acc=acc)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")
