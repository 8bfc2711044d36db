"""Encoder-decoder segmentor with the test procedures of the released MM SAM-Adapter configs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import OptSampleList, SampleList

TEST_MODES = ("whole", "whole_dim", "whole_dim_cut", "slide")


@MODELS.register_module()
class MultiModalEncoderDecoder(EncoderDecoder):
    """mmseg ``EncoderDecoder`` for a multimodal backbone, with the original's test modes.

    The input is the stacked multimodal tensor (B, C, H, W) made by the data preprocessor.
    The backbone may return the feature list or the original's 2-tuple ``(list, None)``.
    Training is mmseg's (decode-head logits resized to the label size, then the losses).

    ``test_cfg`` (``mode`` selects the procedure; ``rescale`` defaults to True; the
    original passed it from the test loop, see ``head_loss_segmentor.md`` §4.1):

    * ``whole``: logits of the full input, bilinearly resized to the input size; with
      ``rescale`` mmseg's post-processing removes ``padding_size`` and resizes to
      ``ori_shape``; without it the prediction stays at the input size.
    * ``whole_dim`` (``dim=(H, W)``): logits at the input size, then (``rescale``)
      bilinearly resized to ``dim``. Output size = ``dim`` (the input size without
      ``rescale``; the original returned nothing then). DeLiVER: ``dim=(1024, 1024)``.
    * ``whole_dim_cut`` (``dim=(H, W)``, ``cut_dim=(W, H)`` as in the original's configs):
      logits at the input size, (``rescale``) resized to ``dim``, then cropped to rows
      ``[0, cut_dim[1])`` and columns ``[0, cut_dim[0])``. Output size =
      ``(cut_dim[1], cut_dim[0])``. FMB: the pipeline pads 600x800 images at the bottom to
      800x800, ``dim=(600, 800)``, ``cut_dim=(800, 600)``, ``rescale=False`` -> the
      800x800 logits are cut to the 600x800 image area.
    * ``slide`` (``crop_size=(h, w)``, ``stride=(h, w)``): mmseg's window placement, each
      window's logits resized to the window, summed and divided by the coverage count
      (averaged logits); with ``rescale`` resized to ``ori_shape`` (after removing
      ``padding_size``). MUSES: 1024x1024 windows, stride 640, on 1080x1920 images.

    ``whole_dim`` and ``whole_dim_cut`` produce their final size themselves: the result is
    NOT resized to ``ori_shape`` afterwards (flips recorded in the meta are undone).
    """

    def __init__(self, backbone: dict, decode_head: dict, pretrained: str | None = None,
                 **kwargs) -> None:
        if pretrained is not None:  # as mmseg, but also for plain-dict configs
            if backbone.get("pretrained") is not None:
                raise ValueError("both the segmentor and its backbone set `pretrained`")
            backbone = {**backbone, "pretrained": pretrained}
        super().__init__(backbone=backbone, decode_head=decode_head, **kwargs)

    def extract_feat(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> the backbone's feature list (the original's tuple is unpacked)."""
        feats = self.backbone(inputs)
        if isinstance(feats, tuple) and len(feats) == 2 and isinstance(feats[0], (list, tuple)):
            feats = feats[0]
        if self.with_neck:
            feats = self.neck(feats)
        return list(feats)

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        """Logits (B, K, H, W), bilinearly resized to the size of ``inputs``."""
        logits = self.decode_head.forward(self.extract_feat(inputs))
        return F.interpolate(logits, size=inputs.shape[2:], mode="bilinear",
                             align_corners=self.align_corners)

    # ------------------------------------------------------------------ test procedures
    @property
    def _test_cfg(self) -> dict:
        return self.test_cfg or {}

    def _mode(self) -> str:
        mode = self._test_cfg.get("mode", "whole")
        if mode not in TEST_MODES:
            raise ValueError(f"test_cfg.mode '{mode}' is not supported; use one of {TEST_MODES}")
        return mode

    def _cfg_pair(self, key: str) -> tuple[int, int]:
        value = self._test_cfg.get(key)
        if value is None or len(value) != 2:
            raise ValueError(f"test_cfg.mode '{self._test_cfg.get('mode')}' needs "
                             f"test_cfg.{key} = (a, b), got {value!r}")
        return int(value[0]), int(value[1])

    def slide_inference(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        """Averaged logits of overlapping ``crop_size`` windows, (B, K, H, W)."""
        h_stride, w_stride = self._cfg_pair("stride")
        h_crop, w_crop = self._cfg_pair("crop_size")
        batch_size, _, h_img, w_img = inputs.shape
        h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
        preds = inputs.new_zeros((batch_size, self.out_channels, h_img, w_img))
        count = inputs.new_zeros((1, 1, h_img, w_img))
        for h_idx in range(h_grids):
            for w_idx in range(w_grids):
                y2 = min(h_idx * h_stride + h_crop, h_img)
                x2 = min(w_idx * w_stride + w_crop, w_img)
                y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
                preds[:, :, y1:y2, x1:x2] += self.encode_decode(
                    inputs[:, :, y1:y2, x1:x2], batch_img_metas)
                count[:, :, y1:y2, x1:x2] += 1
        return preds / count

    def inference(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        """Logits of the configured mode (before ``ori_shape`` post-processing)."""
        mode = self._mode()
        if mode == "slide":
            return self.slide_inference(inputs, batch_img_metas)
        logits = self.encode_decode(inputs, batch_img_metas)
        rescale = self._test_cfg.get("rescale", True)
        if mode == "whole_dim" and rescale:
            logits = F.interpolate(logits, size=self._cfg_pair("dim"), mode="bilinear",
                                   align_corners=self.align_corners)
        elif mode == "whole_dim_cut":
            if rescale:
                logits = F.interpolate(logits, size=self._cfg_pair("dim"), mode="bilinear",
                                       align_corners=self.align_corners)
            cut_w, cut_h = self._cfg_pair("cut_dim")
            logits = logits[:, :, :cut_h, :cut_w]
        return logits

    def predict(self, inputs: torch.Tensor, data_samples: OptSampleList = None) -> SampleList:
        """Predictions (``pred_sem_seg``, ``seg_logits``) at the mode's output size."""
        if data_samples is not None:
            batch_img_metas = [sample.metainfo for sample in data_samples]
        else:
            shape = tuple(inputs.shape[2:])
            batch_img_metas = [dict(ori_shape=shape, img_shape=shape, pad_shape=shape,
                                    padding_size=[0, 0, 0, 0])] * inputs.shape[0]
        seg_logits = self.inference(inputs, batch_img_metas)
        return self.postprocess_result(seg_logits, data_samples)

    def postprocess_result(self, seg_logits: torch.Tensor,
                           data_samples: OptSampleList = None) -> SampleList:
        mode = self._mode()
        if mode in ("whole", "slide") and self._test_cfg.get("rescale", True):
            return super().postprocess_result(seg_logits, data_samples)
        if data_samples is None:
            data_samples = [SegDataSample() for _ in range(seg_logits.shape[0])]
        for i, sample in enumerate(data_samples):
            logits = seg_logits[i]
            if sample.metainfo.get("flip", False):
                direction = sample.metainfo.get("flip_direction", "horizontal")
                logits = logits.flip(dims=(2,) if direction == "horizontal" else (1,))
            sample.set_data({"seg_logits": PixelData(data=logits),
                             "pred_sem_seg": PixelData(data=logits.argmax(dim=0, keepdim=True))})
        return data_samples

