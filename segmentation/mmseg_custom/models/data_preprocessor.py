"""Per-modality normalisation, padding and batching of multimodal inputs."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.model import BaseDataPreprocessor
from mmseg.registry import MODELS
from mmseg.utils import stack_batch


@MODELS.register_module()
class MultiModalDataPreProcessor(BaseDataPreprocessor):
    """Normalise each modality block of a stacked input with its own statistics.

    The pipeline packs all modalities into one float tensor (C, H, W): channel blocks
    in the order of ``modalities``. Each block b is transformed as
    ``(flip_channels(x) * scale_b - mean_b) / std_b`` (``scale`` = 1/255 reproduces
    the original's ``norm_by_max``; ``to_rgb`` reverses the block's channel order, as
    the original's per-modality ``to_rgb``). Then, in training, the batch is padded at
    the bottom/right to ``size`` with ``pad_val`` (0, i.e. after normalisation, as
    released) and labels with ``seg_pad_val``.

    Args:
        modalities: one dict per block: ``name``, ``channels``, ``mean``, ``std`` (lists
            of length ``channels``), optional ``scale`` (default 1.0) and ``to_rgb``
            (default False). None: inputs are already normalised by the pipeline.
        size: (H, W) training pad size. size_divisor: pad to a multiple instead.
        pad_val / seg_pad_val: padding values for inputs / labels.
        test_cfg: optional dict(size=..., size_divisor=...) for padding at test time.
    """

    def __init__(self, modalities: Sequence[dict] | None = None,
                 size: Sequence[int] | None = None, size_divisor: int | None = None,
                 pad_val: float = 0.0, seg_pad_val: int = 255,
                 test_cfg: dict | None = None, init_cfg: Any = None) -> None:
        super().__init__()
        self.size = tuple(size) if size is not None else None
        self.size_divisor = size_divisor
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val
        self.test_cfg = test_cfg
        self.modalities = [dict(m) for m in modalities] if modalities else []
        index, scale, mean, std = [], [], [], []
        start = 0
        for mod in self.modalities:
            n = int(mod["channels"])
            if len(mod["mean"]) != n or len(mod["std"]) != n:
                raise ValueError(f"modality '{mod['name']}': mean/std need {n} values, got "
                                 f"{len(mod['mean'])}/{len(mod['std'])}")
            order = list(range(start, start + n))
            index += order[::-1] if mod.get("to_rgb", False) else order
            scale += [float(mod.get("scale", 1.0))] * n
            mean += [float(v) for v in mod["mean"]]
            std += [float(v) for v in mod["std"]]
            start += n
        self.num_channels = start
        self.register_buffer("channel_index", torch.tensor(index, dtype=torch.long), False)
        self.register_buffer("scale", torch.tensor(scale).view(-1, 1, 1), False)
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), False)

    def _normalize(self, img: torch.Tensor) -> torch.Tensor:
        img = img.float()
        if not self.modalities:
            return img
        if img.shape[0] != self.num_channels:
            names = ", ".join(f"{m['name']}:{m['channels']}" for m in self.modalities)
            raise ValueError(f"input has {img.shape[0]} channels but the configured modalities "
                             f"({names}) have {self.num_channels}")
        return (img[self.channel_index] * self.scale - self.mean) / self.std

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        inputs = [self._normalize(img) for img in data["inputs"]]
        samples = data.get("data_samples")
        if training:
            if samples is None:
                raise ValueError("training batches need data_samples with ground truth")
            inputs, samples = stack_batch(inputs, samples, size=self.size,
                                          size_divisor=self.size_divisor, pad_val=self.pad_val,
                                          seg_pad_val=self.seg_pad_val)
        elif self.test_cfg:
            inputs, padded = stack_batch(inputs, None, size=self.test_cfg.get("size"),
                                         size_divisor=self.test_cfg.get("size_divisor"),
                                         pad_val=self.pad_val, seg_pad_val=self.seg_pad_val)
            for sample, pad in zip(samples or [], padded):
                sample.set_metainfo({**pad})
        else:
            sizes = {tuple(img.shape) for img in inputs}
            if len(sizes) > 1:
                raise ValueError(f"test inputs of different sizes in one batch: {sorted(sizes)}; "
                                 "use batch size 1 or set test_cfg padding")
            inputs = torch.stack(inputs)
        return dict(inputs=inputs, data_samples=samples)
