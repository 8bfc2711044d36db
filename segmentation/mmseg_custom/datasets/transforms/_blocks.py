"""Channel-block bookkeeping shared by the multimodal transforms.

A multimodal sample carries one stacked array ``results['img']`` (H, W, C) whose channels are
the modality blocks in configuration order (RGB first). ``results['modality_channels']`` holds
the channel count of every block, ``results['modalities']`` their names.
"""
from __future__ import annotations

import cv2
import numpy as np


def block_slices(results: dict) -> list[slice]:
    """Channel slices of the modality blocks of ``results['img']``.

    Raises:
        KeyError: if the loader did not record ``modality_channels``.
        ValueError: if the recorded counts do not add up to the image's channel count.
    """
    if "modality_channels" not in results:
        raise KeyError("results has no 'modality_channels': run LoadMultiModalImages first")
    counts = [int(c) for c in results["modality_channels"]]
    channels = results["img"].shape[2]
    if sum(counts) != channels:
        raise ValueError(f"modality_channels {counts} do not add up to the {channels} channels "
                         f"of img ({results.get('img_path')})")
    slices, start = [], 0
    for count in counts:
        slices.append(slice(start, start + count))
        start += count
    return slices


def seg_keys(results: dict) -> list[str]:
    """Keys of the label maps to transform together with the image (``seg_fields``)."""
    return list(results.get("seg_fields", []))


def planes_of(img: np.ndarray) -> np.ndarray:
    """(C, H, W) view of an (H, W, C) image (no copy, whatever its memory layout)."""
    return img.transpose(2, 0, 1)


def new_planar(channels: int, height: int, width: int, dtype=np.float32,
               fill: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A channel-planar buffer: ``(planes (C, H, W) contiguous, img (H, W, C) view of it)``.

    The multimodal transforms keep ``img`` channel-planar so that every channel is a
    contiguous 2-D plane OpenCV can process in place (per-channel bilinear resize and 3x3
    blur give bit-identical results to OpenCV's 3-channel calls) and packing to (C, H, W)
    needs no transpose. ``img`` is still an ordinary (H, W, C) ndarray for any consumer.
    """
    if fill is None:
        planes = np.empty((channels, height, width), dtype)
    else:
        planes = np.full((channels, height, width), fill, dtype)
    return planes, planes.transpose(1, 2, 0)


def cv_dst(plane: np.ndarray) -> np.ndarray | None:
    """``plane`` if OpenCV can write into it in place (packed pixels, positive row stride)."""
    return plane if plane.strides[1] == plane.itemsize and plane.strides[0] > 0 else None


def store(dst: np.ndarray, result: np.ndarray) -> None:
    """Make sure an OpenCV result lands in ``dst`` (OpenCV may have allocated a new array)."""
    if not np.may_share_memory(dst, result):
        dst[...] = result


def interleaved(img: np.ndarray, block: slice) -> np.ndarray:
    """Contiguous (H, W, c) copy of the channels ``block`` of ``img``."""
    planes = planes_of(img)[block]
    if planes.shape[0] == 1:
        return np.ascontiguousarray(planes[0])[:, :, None]
    return cv2.merge(list(planes))


def write_block(img: np.ndarray, block: slice, value: np.ndarray) -> None:
    """Write ``value`` (H, W, c) into the channels ``block`` of ``img`` (cast to its dtype)."""
    np.copyto(planes_of(img)[block], value.transpose(2, 0, 1), casting="unsafe")
