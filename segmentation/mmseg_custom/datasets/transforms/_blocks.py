"""Channel-block bookkeeping shared by the multimodal transforms.

A multimodal sample carries one stacked array ``results['img']`` (H, W, C) whose channels are
the modality blocks in configuration order (RGB first). ``results['modality_channels']`` holds
the channel count of every block, ``results['modalities']`` their names.
"""
from __future__ import annotations

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


def split_blocks(results: dict) -> list[np.ndarray]:
    """The modality blocks of ``results['img']`` as (H, W, c) views."""
    img = results["img"]
    return [img[:, :, s] for s in block_slices(results)]


def seg_keys(results: dict) -> list[str]:
    """Keys of the label maps to transform together with the image (``seg_fields``)."""
    return list(results.get("seg_fields", []))
