"""Loading of the RGB image and the auxiliary modalities of a multimodal sample."""
from __future__ import annotations

import io
import zipfile
from typing import Sequence

import cv2
import mmengine.fileio as fileio
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ._blocks import new_planar


def read_bytes(path: str, what: str, backend_args: dict | None = None) -> bytes:
    """Raw bytes of ``path``; a missing file raises FileNotFoundError naming ``what`` and path."""
    try:
        return fileio.get(path, backend_args=backend_args)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{what} file not found: {path}") from err


def decode_image(data: bytes, path: str, what: str, unchanged: bool) -> np.ndarray:
    """Decode PNG/JPEG bytes with OpenCV.

    Colour mode (``unchanged=False``): (H, W, 3) uint8 BGR; grayscale is replicated to 3
    channels and 16-bit data is down-converted to 8 bit, as ``cv2.IMREAD_COLOR`` does.
    Unchanged mode: the stored channels and bit depth.
    """
    flag = cv2.IMREAD_UNCHANGED if unchanged else cv2.IMREAD_COLOR
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if img is None:
        raise ValueError(f"cannot decode {what} image (unreadable or corrupt): {path}")
    return img


def load_npz(data_path: str, what: str, backend_args: dict | None = None) -> np.ndarray:
    """``arr_0`` of a NumPy ``.npz`` archive (the MUSES projected LiDAR / event maps)."""
    raw = read_bytes(data_path, what, backend_args)
    try:
        with np.load(io.BytesIO(raw)) as archive:
            if "arr_0" not in archive.files:
                raise KeyError(f"{what} archive {data_path} has no 'arr_0' array "
                               f"(arrays: {archive.files})")
            return archive["arr_0"]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ValueError(f"cannot read {what} archive (unreadable or corrupt): "
                         f"{data_path}: {err}") from err


@TRANSFORMS.register_module()
class LoadMultiModalImages(BaseTransform):
    """Read the RGB image and every auxiliary modality and stack them into one array.

    Per modality (decoding chosen by file type):

    * ``.npz`` files: ``arr_0`` (MUSES projected maps); a 2-D map gets a channel axis. The
      number of channels must equal the configured one.
    * images with ``channels == 3``: OpenCV colour mode (BGR uint8; grayscale replicated,
      16-bit down-converted), like the original's ``LoadImageandModalities3ch``.
    * images with ``channels == 1``: decoded unchanged (any bit depth), must be
      single-channel, and tiled to 3 channels (the original's 1-channel path).

    The first modality is read from ``results['img_path']``, the others from
    ``results['modality_paths'][name]``. All blocks are cast to float32 and stacked along the
    channels in configuration order (``img`` is channel-planar in memory, see ``_blocks``).

    Required keys: ``img_path``, ``modality_paths`` (if more than one modality).
    Added keys: ``img`` (H, W, C) float32, ``img_shape``/``ori_shape``/``pad_shape`` (H, W),
    ``scale_factor`` (1.0, 1.0), ``modalities`` (names), ``modality_channels`` (channel count
    of every block in ``img``), ``modality_shapes`` (name -> shape as decoded).

    Args:
        modalities: modality names, RGB first (e.g. ``('rgb', 'depth')``); None: RGB plus
            the sample's ``modality_paths`` in dataset order (the dataset's ``modalities``
            is then the one place that names them).
        channels: channels per modality as stored (1 or 3 for images; any for ``.npz``);
            None: 3 each.
        backend_args: mmengine file backend arguments.
    """

    def __init__(self, modalities: Sequence[str] | None = ("rgb", "depth"),
                 channels: Sequence[int] | None = (3, 3), backend_args: dict | None = None) -> None:
        if modalities is not None:
            self.modalities, self.channels = self._checked(modalities, channels)
        else:
            self.modalities, self.channels = None, channels
        self.backend_args = backend_args

    @staticmethod
    def _checked(modalities: Sequence[str], channels: Sequence[int] | None
                 ) -> tuple[list[str], list[int]]:
        if channels is None:
            channels = [3] * len(modalities)
        if len(modalities) != len(channels):
            raise ValueError(f"modalities {list(modalities)} and channels {list(channels)} "
                             "must have the same length")
        if not modalities:
            raise ValueError("at least one modality (RGB) is needed")
        if int(channels[0]) != 3:
            raise ValueError(f"the first modality ({modalities[0]}) is the RGB image and must have "
                             f"3 channels, got {channels[0]}")
        return [str(m) for m in modalities], [int(c) for c in channels]

    def _sample_modalities(self, results: dict) -> tuple[list[str], list[int]]:
        """Configured modalities, or (``modalities=None``) RGB plus the sample's
        ``modality_paths`` in dataset order."""
        if self.modalities is not None:
            return self.modalities, self.channels
        return self._checked(["rgb", *(results.get("modality_paths") or {})], self.channels)

    @staticmethod
    def _path(results: dict, name: str, index: int) -> str:
        if index == 0:
            return results["img_path"]
        paths = results.get("modality_paths") or {}
        if name not in paths:
            raise KeyError(f"sample {results.get('img_path')} has no path for modality '{name}' "
                           f"(modality_paths: {sorted(paths)})")
        return paths[name]

    def _read(self, path: str, name: str, channels: int) -> np.ndarray:
        what = f"'{name}' modality"
        if path.endswith(".npz"):
            arr = load_npz(path, what, self.backend_args)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            if arr.ndim != 3 or arr.shape[2] != channels:
                raise ValueError(f"{what} file {path}: expected {channels} channel(s), got an "
                                 f"array of shape {arr.shape}")
            return arr
        data = read_bytes(path, what, self.backend_args)
        if channels == 3:
            return decode_image(data, path, what, unchanged=False)
        if channels == 1:
            img = decode_image(data, path, what, unchanged=True)
            if img.ndim == 3 and img.shape[2] != 1:
                raise ValueError(f"{what} file {path}: expected 1 channel, got {img.shape[2]}")
            return np.tile(img.reshape(img.shape[0], img.shape[1], 1), (1, 1, 3))
        raise ValueError(f"{what} file {path}: image files are read with 1 or 3 channels, "
                         f"configured {channels}")

    def transform(self, results: dict) -> dict:
        blocks, shapes, paths = [], {}, []
        modalities, channels_cfg = self._sample_modalities(results)
        for index, (name, channels) in enumerate(zip(modalities, channels_cfg)):
            path = self._path(results, name, index)
            block = self._read(path, name, channels)
            if blocks and block.shape[:2] != blocks[0].shape[:2]:
                raise ValueError(f"size mismatch between modalities: '{name}' file {path} is "
                                 f"{block.shape[1]}x{block.shape[0]} (WxH) but "
                                 f"'{modalities[0]}' file {paths[0]} is "
                                 f"{blocks[0].shape[1]}x{blocks[0].shape[0]}")
            blocks.append(block)
            shapes[name] = tuple(block.shape)
            paths.append(path)
        height, width = blocks[0].shape[:2]
        counts = [b.shape[2] for b in blocks]
        planes, img = new_planar(sum(counts), height, width)
        start = 0
        for block in blocks:
            np.copyto(planes[start:start + block.shape[2]], block.transpose(2, 0, 1),
                      casting="unsafe")
            start += block.shape[2]
        results["img"] = img
        results["img_shape"] = (height, width)
        results["ori_shape"] = (height, width)
        results["pad_shape"] = (height, width)
        results["scale_factor"] = (1.0, 1.0)
        results["modalities"] = list(modalities)
        results["modality_channels"] = counts
        results["modality_shapes"] = shapes
        return results

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(modalities={self.modalities}, "
                f"channels={self.channels})")


__all__ = ["LoadMultiModalImages", "read_bytes", "decode_image", "load_npz"]
