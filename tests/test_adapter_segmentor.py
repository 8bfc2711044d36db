"""MultiModalEncoderDecoder test procedures (head_loss_segmentor.md §1.2, §4): output size
and values of whole / whole_dim / whole_dim_cut / slide; SegFormer head key names."""
from __future__ import annotations

import mmseg_custom  # noqa: F401
import pytest
import torch
import torch.nn.functional as F
from adapter_configs import single_thread  # noqa: F401  (autouse fixture)
from adapter_configs import reduced_model
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    segmentor = MODELS.build(reduced_model(64, num_classes=NUM_CLASSES))
    with torch.no_grad():  # a non-trivial head (the default init is nearly constant)
        segmentor.decode_head.conv_seg.weight.normal_()
    return segmentor.eval()


def _predict(model, test_cfg: dict, inputs: torch.Tensor, **meta) -> list[SegDataSample]:
    model.test_cfg = test_cfg
    h, w = inputs.shape[2:]
    samples = []
    for _ in range(inputs.shape[0]):
        sample = SegDataSample()
        sample.set_metainfo(dict(dict(ori_shape=(h, w), img_shape=(h, w), pad_shape=(h, w)),
                                 **meta))
        samples.append(sample)
    with torch.no_grad():
        return model.predict(inputs, samples)


def _logits(model, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_decode(inputs, [{}])


@pytest.fixture(scope="module")
def square_input() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 6, 64, 64)


def test_whole_resizes_to_ori_shape(model, square_input):
    out = _predict(model, dict(mode="whole"), square_input, ori_shape=(50, 70))
    full = _logits(model, square_input)
    assert full.shape == (2, NUM_CLASSES, 64, 64)
    expected = F.interpolate(full, size=(50, 70), mode="bilinear", align_corners=False)
    for i, sample in enumerate(out):
        assert sample.pred_sem_seg.data.shape == (1, 50, 70)
        torch.testing.assert_close(sample.seg_logits.data, expected[i])
        assert torch.equal(sample.pred_sem_seg.data[0], expected[i].argmax(0))
    out = _predict(model, dict(mode="whole", rescale=False), square_input, ori_shape=(50, 70))
    assert out[0].pred_sem_seg.data.shape == (1, 64, 64)


def test_whole_dim_output_is_dim_not_ori_shape(model, square_input):
    cfg = dict(mode="whole_dim", dim=(48, 80), rescale=True)
    out = _predict(model, cfg, square_input, ori_shape=(66, 66))  # e.g. DeLiVER 1042 -> 1024
    expected = F.interpolate(_logits(model, square_input), size=(48, 80), mode="bilinear",
                             align_corners=False)
    assert out[1].pred_sem_seg.data.shape == (1, 48, 80)
    torch.testing.assert_close(out[1].seg_logits.data, expected[1])
    out = _predict(model, dict(cfg, dim=(64, 64)), square_input, ori_shape=(66, 66))
    assert out[0].pred_sem_seg.data.shape == (1, 64, 64)  # DeLiVER: stays at 1024x1024
    torch.testing.assert_close(out[0].seg_logits.data, _logits(model, square_input)[0],
                               rtol=0, atol=0)


def test_whole_dim_cut_keeps_the_image_area_of_a_padded_input(model, square_input):
    # FMB-like: a 48x64 image padded at the bottom to 64x64; dim=(48, 64), cut_dim=(64, 48)
    cfg = dict(mode="whole_dim_cut", dim=(48, 64), cut_dim=(64, 48), rescale=False)
    out = _predict(model, cfg, square_input, ori_shape=(48, 64))
    full = _logits(model, square_input)
    for i, sample in enumerate(out):
        assert sample.pred_sem_seg.data.shape == (1, 48, 64)
        torch.testing.assert_close(sample.seg_logits.data, full[i, :, :48, :64], rtol=0, atol=0)
    rescaled = _predict(model, dict(cfg, rescale=True), square_input, ori_shape=(48, 64))
    expected = F.interpolate(full, size=(48, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(rescaled[0].seg_logits.data, expected[0, :, :48, :64])


def test_slide_averages_window_logits(model):
    torch.manual_seed(2)
    inputs = torch.randn(1, 6, 64, 112)
    cfg = dict(mode="slide", crop_size=(64, 64), stride=(40, 40))
    out = _predict(model, cfg, inputs)
    assert out[0].pred_sem_seg.data.shape == (1, 64, 112)
    # windows: columns [0, 64), [40, 104), [48, 112) (the last one shifted back)
    total = torch.zeros(1, NUM_CLASSES, 64, 112)
    count = torch.zeros(1, 1, 64, 112)
    for x1 in (0, 40, 48):
        total[..., x1:x1 + 64] += _logits(model, inputs[..., x1:x1 + 64])
        count[..., x1:x1 + 64] += 1
    torch.testing.assert_close(out[0].seg_logits.data, (total / count)[0])
    resized = _predict(model, cfg, inputs, ori_shape=(32, 56))
    assert resized[0].pred_sem_seg.data.shape == (1, 32, 56)


def test_flip_is_undone(model, square_input):
    cfg = dict(mode="whole_dim", dim=(64, 64))
    plain = _predict(model, cfg, square_input[:1])
    flipped = _predict(model, cfg, square_input[:1].flip(-1), flip=True,
                       flip_direction="horizontal")
    torch.testing.assert_close(flipped[0].seg_logits.data.flip(-1),
                               _logits(model, square_input[:1].flip(-1))[0])
    assert plain[0].seg_logits.data.shape == flipped[0].seg_logits.data.shape


def test_bad_test_cfg_fails_clearly(model, square_input):
    with pytest.raises(ValueError, match="test_cfg.mode 'slide_mod_sel' is not supported"):
        _predict(model, dict(mode="slide_mod_sel"), square_input)
    with pytest.raises(ValueError, match=r"needs test_cfg.dim"):
        _predict(model, dict(mode="whole_dim"), square_input)


def test_backbone_tuple_output_and_head_keys(model, square_input):
    model.backbone.return_tuple = True
    try:
        feats = model.extract_feat(square_input[:1])
    finally:
        model.backbone.return_tuple = False
    assert isinstance(feats, list) and len(feats) == 4
    keys = {k for k in model.state_dict() if k.startswith("decode_head.")}
    assert {"decode_head.conv_seg.weight", "decode_head.convs.3.conv.weight",
            "decode_head.convs.0.bn.running_var", "decode_head.fusion_conv.conv.weight",
            "decode_head.fusion_conv.bn.num_batches_tracked"} <= keys
    assert not any(k.endswith("conv.bias") for k in keys if ".convs." in k or "fusion" in k)


def test_train_and_test_steps_through_the_data_preprocessor():
    torch.manual_seed(0)
    modality = dict(channels=3, scale=1 / 255, to_rgb=True, mean=[0.5] * 3, std=[0.25] * 3)
    cfg = reduced_model(64, num_classes=NUM_CLASSES,
                        test_cfg=dict(mode="whole_dim_cut", dim=(48, 64), cut_dim=(64, 48),
                                      rescale=False))
    cfg["data_preprocessor"] = dict(type="MultiModalDataPreProcessor", size=(64, 64),
                                    modalities=[dict(modality, name="rgb"),
                                                dict(modality, name="depth")])
    with DefaultScope.overwrite_default_scope("mmseg"):
        segmentor = MODELS.build(cfg)

    def batch(h: int) -> dict:
        samples = []
        for _ in range(2):
            sample = SegDataSample(gt_sem_seg=PixelData(
                data=torch.randint(0, NUM_CLASSES, (1, h, 64))))
            sample.set_metainfo(dict(ori_shape=(48, 64), img_shape=(h, 64), pad_shape=(h, 64)))
            samples.append(sample)
        return dict(inputs=[torch.rand(6, h, 64) * 255 for _ in range(2)], data_samples=samples)

    optim = OptimWrapper(torch.optim.SGD(segmentor.parameters(), lr=1e-3))
    log_vars = segmentor.train_step(batch(48), optim)  # padded to 64x64 by the preprocessor
    assert torch.isfinite(log_vars["loss"]) and "decode.loss_ohem" in log_vars
    segmentor.eval()
    outputs = segmentor.test_step(batch(64))  # e.g. FMB: pipeline-padded input, native GT
    assert [tuple(o.pred_sem_seg.data.shape) for o in outputs] == [(1, 48, 64)] * 2


def test_without_test_cfg_the_mode_is_whole(model, square_input):
    out = _predict(model, None, square_input[:1], ori_shape=(32, 32))
    assert out[0].pred_sem_seg.data.shape == (1, 32, 32)
