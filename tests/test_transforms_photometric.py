"""Photometric distortion (faithful float-HSV and clean modes) and per-modality normalisation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import mmseg_custom  # noqa: F401  (registration)
from mmseg_custom.datasets.transforms import MultiModalPhotoMetricDistortion, NormalizeMultiModal


def _script(monkeypatch, randints, uniforms):
    """Replace numpy's randint / uniform by scripted values (in call order)."""
    randints, uniforms = list(randints), list(uniforms)
    calls = []

    def randint(low, high=None):
        calls.append(("randint", low, high))
        return randints.pop(0)

    def uniform(low, high):
        calls.append(("uniform", low, high))
        return uniforms.pop(0)

    monkeypatch.setattr(np.random, "randint", randint)
    monkeypatch.setattr(np.random, "uniform", uniform)
    return calls, randints, uniforms


def _sample(rgb, aux=None):
    rgb = np.asarray(rgb, np.float32).reshape(1, -1, 3)
    aux = np.full(rgb.shape, 7.5, np.float32) if aux is None else aux
    return dict(img=np.concatenate([rgb, aux], 2), modality_channels=[3, 3])


def test_float_hsv_saturation_truncates_to_zero_or_one(monkeypatch):
    # brightness off, mode 0, saturation on (x1.2), hue off, contrast (mode 0) off
    calls, left, _ = _script(monkeypatch, [0, 0, 1, 0, 0], [1.2])
    out = MultiModalPhotoMetricDistortion()(_sample([[200, 100, 50], [100, 100, 0]]))["img"]
    assert not left and calls[3] == ("uniform", 0.5, 1.5)
    # pixel 1: S = 150/200 = 0.75 -> 0.9 -> uint8 0 -> grey at V = 200
    np.testing.assert_allclose(out[0, 0, :3], [200, 200, 200], atol=1e-3)
    # pixel 2: S = 1 -> 1.2 -> clipped 1 -> uint8 1: unchanged
    np.testing.assert_allclose(out[0, 1, :3], [100, 100, 0], atol=1e-3)
    assert out.dtype == np.float32 and (out[:, :, 3:] == 7.5).all()


def test_float_hsv_hue_folds_degrees_into_0_180(monkeypatch):
    # brightness off, mode 0, saturation off, hue on (shift 0), contrast off
    _script(monkeypatch, [0, 0, 0, 1, 0, 0], [])
    out = MultiModalPhotoMetricDistortion()(_sample([[200, 100, 50]]))["img"]
    # float H = 240 + 60 * (50 - 100) / 150 = 220 deg -> 220 % 180 = 40 deg (orange), S 0.75, V 200
    # -> R = 200, G = 50 + 150 * 40 / 60 = 150, B = 50
    np.testing.assert_allclose(out[0, 0, :3], [50, 150, 200], atol=1e-3)


def test_clean_mode_uses_uint8_hsv(monkeypatch):
    _script(monkeypatch, [0, 0, 0, 1, 0, 0], [])
    out = MultiModalPhotoMetricDistortion(clean=True)(_sample([[200, 100, 50]]))["img"]
    hsv = cv2.cvtColor(np.array([[[200, 100, 50]]], np.uint8), cv2.COLOR_BGR2HSV)
    assert hsv[0, 0, 0] == 110                         # uint8 hue = 220 / 2, shift 0: unchanged
    np.testing.assert_array_equal(out[0, 0, :3], cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
    _script(monkeypatch, [0, 0, 1, 0, 0], [1.2])
    out = MultiModalPhotoMetricDistortion(clean=True)(_sample([[200, 100, 50]]))["img"]
    assert out[0, 0, 0] > out[0, 0, 2] + 100           # still saturated (not grey)


def test_brightness_contrast_truncate_and_uint8_path(monkeypatch):
    # brightness on (+10.7), mode 1, contrast on (x0.5), saturation off, hue off
    calls, left, _ = _script(monkeypatch, [1, 1, 1, 0, 0], [10.7, 0.5])
    out = MultiModalPhotoMetricDistortion()(_sample([[250.5, 3.2, 100.0]]))["img"]
    # brightness: (260.xx -> 255, 13.9 -> 13, 110.7 -> 110); contrast x0.5: 127.5 -> 127, 6.5 -> 6, 55
    np.testing.assert_array_equal(out[0, 0, :3], [127, 6, 55])
    assert calls[0] == ("randint", 2, None) and calls[1] == ("uniform", -32, 32)
    assert calls[4] == ("uniform", 0.5, 1.5)
    calls, _, _ = _script(monkeypatch, [0, 0, 0, 1, -18, 0], [])
    MultiModalPhotoMetricDistortion()(_sample([[1, 2, 3]]))
    assert ("randint", -18, 18) in calls                # hue shift in [-18, 17]


@pytest.mark.parametrize("clean", [False, True])
def test_fraction_of_greyscale_samples(clean):
    """Faithful: P(float HSV at the saturation step) = 1/2 * (1/2 + 1/4) = 3/8, saturation runs
    with p 1/2, and S = 230/250 = 0.92 truncates to 0 when alpha < 1/0.92 (p 0.587): 0.110."""
    np.random.seed(0)
    rng = np.random.default_rng(0)
    grey = 0
    transform = MultiModalPhotoMetricDistortion(clean=clean)
    for _ in range(400):
        rgb = np.stack([np.full(8, 250.0), rng.uniform(20, 250, 8), np.full(8, 20.0)], -1)
        out = transform(_sample(rgb))["img"][..., :3]
        grey += int(np.ptp(out, axis=-1).max() < 1e-3)
    if clean:
        assert grey == 0
    else:
        assert 0.06 < grey / 400 < 0.17


def test_normalize_per_modality():
    img = np.array([[[51, 102, 153, 10, 20, 30]]], np.float32)
    cfg = dict(mean=[0.5, 0.5, 0.5, 1, 2, 3], std=[0.25, 0.5, 1.0, 2, 4, 6])
    muses = NormalizeMultiModal(**cfg, to_rgb=[True, False], norm_by_max=[True, False])(
        dict(img=img.copy(), modality_channels=[3, 3], modalities=["rgb", "lidar"]))
    # rgb: BGR->RGB (153,102,51)/255 = (.6,.4,.2) -> ((.6-.5)/.25, (.4-.5)/.5, (.2-.5)/1)
    # lidar: no /255, no reversal: ((10-1)/2, (20-2)/4, (30-3)/6)
    np.testing.assert_allclose(muses["img"][0, 0], [0.4, -0.2, -0.3, 4.5, 4.5, 4.5], atol=1e-6)
    assert muses["modality_norm_cfg"]["lidar"]["norm_by_max"] is False
    released = NormalizeMultiModal(mean=[0.5] * 3 + [0] * 3, std=[0.25, 0.5, 1] + [1] * 3)(
        dict(img=img.copy(), modality_channels=[3, 3]))
    # aux: /255 and reversed order: (30, 20, 10) / 255
    np.testing.assert_allclose(released["img"][0, 0, 3:], [30 / 255, 20 / 255, 10 / 255], atol=1e-7)
    assert released["img"].dtype == np.float32
    with pytest.raises(ValueError, match="6 mean/std values for an image with 7"):
        NormalizeMultiModal(**cfg)(dict(img=np.zeros((1, 1, 7), np.float32),
                                        modality_channels=[3, 4]))
