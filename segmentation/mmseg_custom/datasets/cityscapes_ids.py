"""Cityscapes label ids <-> train ids (the standard 19-class Cityscapes mapping, used by MUSES).

Train id ``t`` (0..18) corresponds to label id ``TRAIN_TO_LABEL_ID[t]``; every other label id
maps to the ignore train id 255.
"""
import numpy as np

TRAIN_TO_LABEL_ID = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
IGNORE_TRAIN_ID = 255

_LABEL_TO_TRAIN = np.full(256, IGNORE_TRAIN_ID, dtype=np.uint8)
_LABEL_TO_TRAIN[list(TRAIN_TO_LABEL_ID)] = np.arange(len(TRAIN_TO_LABEL_ID), dtype=np.uint8)


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes label-id map (values 0..255) to train ids (0..18, 255 = ignore).

    Returns:
        uint8 array of the same shape.
    """
    arr = np.asarray(label_ids)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f'label ids must lie in 0..255, got range [{arr.min()}, {arr.max()}]')
    return _LABEL_TO_TRAIN[arr.astype(np.intp)]


def train_ids_to_label_ids(train_ids: np.ndarray, ignore_label_id: int = 0) -> np.ndarray:
    """Map train ids (0..18, 255 = ignore) to Cityscapes label ids; 255 -> ``ignore_label_id``
    (0 = 'unlabeled').

    Raises:
        ValueError: a value is neither a train id nor 255.

    Returns:
        uint8 array of the same shape.
    """
    arr = np.asarray(train_ids).astype(np.intp)
    bad = (arr != IGNORE_TRAIN_ID) & ((arr < 0) | (arr >= len(TRAIN_TO_LABEL_ID)))
    if bad.any():
        raise ValueError(f'train ids must be 0..{len(TRAIN_TO_LABEL_ID) - 1} or 255, got '
                         f'{sorted(set(arr[bad].tolist()))}')
    table = np.full(256, ignore_label_id, dtype=np.uint8)
    table[:len(TRAIN_TO_LABEL_ID)] = TRAIN_TO_LABEL_ID
    return table[arr]
