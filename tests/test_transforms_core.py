"""Exact semantics of the multimodal loading / geometric / packing transforms."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import mmseg_custom  # noqa: F401  (registration)
from mmseg_custom.datasets.transforms import (LoadMultiModalAnnotations, LoadMultiModalImages,
                                              MultiModalPad, MultiModalRandomCrop,
                                              MultiModalRandomFlip, MultiModalResize,
                                              PackMultiModalInputs, RandomGaussianBlurRGB)


def _sample(img: np.ndarray, label: np.ndarray | None = None, counts=(3, 3)) -> dict:
    results = dict(img=img, modality_channels=list(counts), img_path="x.png", seg_fields=[])
    if label is not None:
        results["gt_seg_map"] = label
        results["seg_fields"] = ["gt_seg_map"]
    return results


# ---------------------------------------------------------------- loading


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")          # stored as RGB
    gray = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    deep = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    lidar = rng.random((6, 5, 3)).astype(np.float32) * 80
    np.savez(tmp_path / "lidar.npz", lidar)
    flat = rng.random((6, 5)).astype(np.float64)
    np.savez(tmp_path / "flat.npz", flat)
    return dict(dir=tmp_path, rgb=rgb, gray=gray, deep=deep, lidar=lidar, flat=flat)


def _load(files, modalities, channels, **paths):
    info = dict(img_path=str(files["dir"] / "rgb.png"),
                modality_paths={k: str(files["dir"] / v) for k, v in paths.items()})
    return LoadMultiModalImages(modalities, channels)(info)


def test_load_modalities_from_the_sample(files):
    """modalities=None: RGB plus the sample's modality_paths, in dataset order."""
    explicit = _load(files, ["rgb", "deep", "gray"], [3, 3, 3], deep="deep.png", gray="gray.png")
    derived = _load(files, None, None, deep="deep.png", gray="gray.png")
    assert derived["modalities"] == ["rgb", "deep", "gray"]
    np.testing.assert_array_equal(derived["img"], explicit["img"])
    with pytest.raises(ValueError, match="same length"):
        _load(files, None, [3, 3], deep="deep.png", gray="gray.png")


def test_load_colour_modes_bgr_gray_replicated_and_16bit_downconverted(files):
    out = _load(files, ["rgb", "gray", "deep"], [3, 3, 3], gray="gray.png", deep="deep.png")
    img = out["img"]
    assert img.dtype == np.float32 and img.shape == (6, 5, 9)
    np.testing.assert_array_equal(img[:, :, 0:3], files["rgb"][:, :, ::-1])   # BGR order
    np.testing.assert_array_equal(img[:, :, 3:6], np.repeat(files["gray"][:, :, None], 3, 2))
    np.testing.assert_array_equal(img[:, :, 6:9],
                                  np.repeat((files["deep"] >> 8)[:, :, None], 3, 2))
    assert out["modality_channels"] == [3, 3, 3]
    assert out["modalities"] == ["rgb", "gray", "deep"]
    assert out["img_shape"] == out["ori_shape"] == (6, 5)
    assert out["modality_shapes"]["deep"] == (6, 5, 3)


def test_load_one_channel_unchanged_tiled_and_npz(files):
    out = _load(files, ["rgb", "deep", "lidar", "flat"], [3, 1, 3, 1],
                deep="deep.png", lidar="lidar.npz", flat="flat.npz")
    img = out["img"]
    np.testing.assert_array_equal(img[:, :, 3:6], np.repeat(files["deep"][:, :, None], 3, 2))
    np.testing.assert_array_equal(img[:, :, 6:9], files["lidar"])
    np.testing.assert_array_equal(img[:, :, 9], files["flat"].astype(np.float32))
    assert out["modality_channels"] == [3, 3, 3, 1]


def test_load_errors_name_the_file(files, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        _load(files, ["rgb", "depth"], [3, 3], depth="missing.png")
    with pytest.raises(ValueError, match="broken.png"):
        _load(files, ["rgb", "depth"], [3, 3], depth="broken.png")
    with pytest.raises(ValueError, match="size mismatch.*small.png"):
        _load(files, ["rgb", "depth"], [3, 3], depth="small.png")
    with pytest.raises(ValueError, match="lidar.npz.*expected 2 channel"):
        _load(files, ["rgb", "lidar"], [3, 2], lidar="lidar.npz")
    with pytest.raises(ValueError, match="rgb.png: expected 1 channel"):
        _load(files, ["rgb", "depth"], [3, 1], depth="rgb.png")
    with pytest.raises(KeyError, match="event"):
        _load(files, ["rgb", "event"], [3, 3], depth="gray.png")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.npz"):
        _load(files, ["rgb", "lidar"], [3, 3], lidar="bad.npz")


def test_annotations_reduce_zero_label_and_range_check(tmp_path):
    raw = np.array([[0, 1, 2], [14, 255, 7]], np.uint8)
    Image.fromarray(raw).save(tmp_path / "lab.png")
    info = dict(seg_map_path=str(tmp_path / "lab.png"), reduce_zero_label=True, seg_fields=[])
    out = LoadMultiModalAnnotations(num_classes=14)(dict(info))
    np.testing.assert_array_equal(out["gt_seg_map"], [[255, 0, 1], [13, 255, 6]])
    assert out["gt_seg_map"].dtype == np.uint8 and out["seg_fields"] == ["gt_seg_map"]
    plain = LoadMultiModalAnnotations(num_classes=15)(dict(info, reduce_zero_label=False))
    np.testing.assert_array_equal(plain["gt_seg_map"], raw)
    with pytest.raises(ValueError, match=r"lab.png: values \[14\] outside \[0, 14\)"):
        LoadMultiModalAnnotations(num_classes=14)(dict(info, reduce_zero_label=False))
    with pytest.raises(ValueError, match="needs num_classes"):
        LoadMultiModalAnnotations()(dict(info))
    (tmp_path / "junk.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.png"):
        LoadMultiModalAnnotations(num_classes=14)(dict(info, seg_map_path=str(tmp_path / "junk.png")))


# ---------------------------------------------------------------- blur


def test_blur_rgb_only():
    rng = np.random.default_rng(1)
    img = rng.random((9, 8, 6)).astype(np.float32) * 255
    out = RandomGaussianBlurRGB(p=1.0)(_sample(img.copy()))["img"]
    np.testing.assert_array_equal(out[:, :, :3], cv2.GaussianBlur(img[:, :, :3].copy(), (3, 3), 0))
    assert not np.array_equal(out[:, :, :3], img[:, :, :3])
    np.testing.assert_array_equal(out[:, :, 3:], img[:, :, 3:])
    assert np.array_equal(RandomGaussianBlurRGB(p=0.0)(_sample(img.copy()))["img"], img)


# ---------------------------------------------------------------- resize


def test_resize_sizes_follow_imrescale_rule():
    img = np.zeros((7, 5, 6), np.float32)
    # f = min(max(11, 13) / max(7, 5), min(11, 13) / min(7, 5)) = min(13/7, 11/5) = 13/7
    # new (w, h) = (int(5 * 13/7 + .5), int(7 * 13/7 + .5)) = (9, 13)
    out = MultiModalResize(img_scale=(11, 13))(_sample(img, np.zeros((7, 5), np.uint8)))
    assert out["img"].shape == (13, 9, 6) and out["gt_seg_map"].shape == (13, 9)
    assert out["img_shape"] == (13, 9) and out["scale_factor"] == (9 / 5, 13 / 7)
    out = MultiModalResize(img_scale=(4, 3), keep_ratio=False)(_sample(img))
    assert out["img"].shape == (3, 4, 6)


def test_resize_ratio_range_draws_numpy_random_sample():
    np.random.seed(3)
    ratio = np.random.random_sample() * 1.5 + 0.5
    expected_scale = (int(20 * ratio), int(20 * ratio))
    np.random.seed(3)
    out = MultiModalResize(img_scale=(20, 20), ratio_range=(0.5, 2.0))(
        _sample(np.zeros((10, 10, 6), np.float32)))
    assert out["scale"] == expected_scale
    assert out["img"].shape[:2] == (expected_scale[1], expected_scale[0])


@pytest.mark.parametrize("aux", ["bilinear", "nearest"])
def test_resize_interpolation_per_modality(aux):
    rng = np.random.default_rng(2)
    img = (rng.integers(0, 2, (6, 6, 6)) * 255).astype(np.float32)
    label = rng.integers(0, 3, (6, 6)).astype(np.uint8)
    out = MultiModalResize(img_scale=(15, 15), aux_interpolation=aux)(_sample(img, label))
    flag = cv2.INTER_LINEAR if aux == "bilinear" else cv2.INTER_NEAREST
    np.testing.assert_array_equal(
        out["img"][:, :, :3], cv2.resize(img[:, :, :3].copy(), (15, 15), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(
        out["img"][:, :, 3:], cv2.resize(img[:, :, 3:].copy(), (15, 15), interpolation=flag))
    assert len(np.unique(out["img"][:, :, :3])) > 2          # bilinear RGB: blended values
    assert (len(np.unique(out["img"][:, :, 3:])) > 2) == (aux == "bilinear")
    np.testing.assert_array_equal(
        out["gt_seg_map"], cv2.resize(label, (15, 15), interpolation=cv2.INTER_NEAREST))


def test_resize_seg_scale_and_label_only():
    label = np.arange(42 * 42, dtype=np.int64).reshape(42, 42).astype(np.uint8) % 7
    out = MultiModalResize(img_scale=(30, 30), seg_scale=(40, 40))(
        _sample(np.zeros((42, 42, 6), np.float32), label))
    assert out["img"].shape[:2] == (30, 30) and out["gt_seg_map"].shape == (40, 40)
    gt_only = MultiModalResize(img_scale=(30, 30), seg_scale=(40, 40))(
        dict(gt_seg_map=label, seg_fields=["gt_seg_map"]))
    np.testing.assert_array_equal(gt_only["gt_seg_map"], out["gt_seg_map"])
    assert "img" not in gt_only


# ---------------------------------------------------------------- crop


def _ok(label, box, ratio=0.75):
    y1, y2, x1, x2 = box
    values, counts = np.unique(label[y1:y2, x1:x2], return_counts=True)
    counts = counts[values != 255]
    return len(counts) > 1 and counts.max() / counts.sum() < ratio


def _draw(shape, crop):
    y = np.random.randint(0, max(shape[0] - crop[0], 0) + 1)
    x = np.random.randint(0, max(shape[1] - crop[1], 0) + 1)
    return y, y + min(crop[0], shape[0]), x, x + min(crop[1], shape[1])


def test_crop_cat_max_ratio_rule_matches_ten_attempt_semantics():
    label = np.zeros((40, 40), np.uint8)
    label[30:, 30:] = 1                        # only boxes reaching the corner are accepted
    img = np.random.default_rng(0).random((40, 40, 6)).astype(np.float32)
    for seed in range(20):
        np.random.seed(seed)
        box = _draw(label.shape, (16, 16))
        for _ in range(10):
            if _ok(label, box):
                break
            box = _draw(label.shape, (16, 16))
        np.random.seed(seed)
        out = MultiModalRandomCrop((16, 16), cat_max_ratio=0.75)(_sample(img, label))
        y1, y2, x1, x2 = box
        np.testing.assert_array_equal(out["img"], img[y1:y2, x1:x2])
        np.testing.assert_array_equal(out["gt_seg_map"], label[y1:y2, x1:x2])
        assert out["img_shape"] == (16, 16)


def test_crop_single_class_uses_eleventh_unchecked_box_and_small_image():
    label = np.full((30, 30), 4, np.uint8)
    np.random.seed(0)
    boxes = [_draw((30, 30), (10, 10)) for _ in range(11)]
    after = np.random.random()
    np.random.seed(0)
    img = np.arange(30 * 30 * 6, dtype=np.float32).reshape(30, 30, 6)
    out = MultiModalRandomCrop((10, 10), cat_max_ratio=0.75)(_sample(img, label))
    assert np.random.random() == after                    # exactly 11 boxes drawn
    y1, y2, x1, x2 = boxes[-1]
    np.testing.assert_array_equal(out["img"], img[y1:y2, x1:x2])
    small = MultiModalRandomCrop((10, 50))(_sample(np.zeros((20, 8, 6), np.float32)))
    assert small["img"].shape == (10, 8, 6)               # whole extent along the short axis


def test_crop_bounded_rounds_terminate():
    label = np.full((30, 30), 4, np.uint8)                # the original loops forever here
    np.random.seed(0)
    [_draw((30, 30), (10, 10)) for _ in range(1 + 9 * 3)]
    after = np.random.random()
    np.random.seed(0)
    out = MultiModalRandomCrop((10, 10), cat_max_ratio=0.75, max_rounds=3)(
        _sample(np.zeros((30, 30, 6), np.float32), label))
    assert np.random.random() == after and out["gt_seg_map"].shape == (10, 10)
    label[:, 15:] = 255                                   # 2 distinct values: accepted after a round
    np.random.seed(0)
    [_draw((30, 30), (10, 10)) for _ in range(10)]
    after = np.random.random()
    np.random.seed(0)
    MultiModalRandomCrop((10, 10), cat_max_ratio=0.75, max_rounds=3)(
        _sample(np.zeros((30, 30, 6), np.float32), label))
    assert np.random.random() == after


# ---------------------------------------------------------------- flip / pad / pack


def test_flip_every_modality_and_label_together():
    img = np.arange(3 * 4 * 6, dtype=np.float32).reshape(3, 4, 6)
    label = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = MultiModalRandomFlip(prob=1.0)(_sample(img.copy(), label.copy()))
    np.testing.assert_array_equal(out["img"], img[:, ::-1])
    np.testing.assert_array_equal(out["gt_seg_map"], label[:, ::-1])
    assert out["flip"] is True and out["flip_direction"] == "horizontal"
    out = MultiModalRandomFlip(prob=0.0)(_sample(img.copy(), label.copy()))
    np.testing.assert_array_equal(out["img"], img)
    assert out["flip"] is False


def test_pad_values_and_errors():
    img = np.ones((2, 3, 6), np.float32)
    label = np.zeros((2, 3), np.uint8)
    out = MultiModalPad(size=(4, 5), pad_val=-1, seg_pad_val=255)(_sample(img, label))
    assert out["img"].shape == (4, 5, 6) and out["gt_seg_map"].shape == (4, 5)
    assert (out["img"][:2, :3] == 1).all() and (out["img"][2:] == -1).all()
    assert (out["img"][:, 3:] == -1).all()
    assert (out["gt_seg_map"][:2, :3] == 0).all() and (out["gt_seg_map"][2:] == 255).all()
    assert out["pad_shape"] == (4, 5) and out["img_padding_size"] == [0, 2, 0, 2]
    gt_only = MultiModalPad(size=(4, 5))(dict(gt_seg_map=label, seg_fields=["gt_seg_map"]))
    assert gt_only["gt_seg_map"].shape == (4, 5)
    with pytest.raises(ValueError, match="larger than the pad size"):
        MultiModalPad(size=(1, 5))(_sample(img, label))


def test_pack_layout_dtype_and_metainfo():
    rng = np.random.default_rng(5)
    img = rng.random((3, 4, 6)).astype(np.float32)
    label = rng.integers(0, 5, (3, 4)).astype(np.uint8)
    results = _sample(img, label)
    results.update(condition="fog", case="ordinary", modality_paths={"depth": "d.png"},
                   ori_shape=(3, 4), img_shape=(3, 4), flip=False)
    out = PackMultiModalInputs()(results)
    inputs = out["inputs"]
    assert inputs.dtype == torch.float32 and inputs.shape == (6, 3, 4) and inputs.is_contiguous()
    np.testing.assert_array_equal(inputs.numpy(), img.transpose(2, 0, 1))
    sample = out["data_samples"]
    assert sample.gt_sem_seg.data.dtype == torch.int64
    np.testing.assert_array_equal(sample.gt_sem_seg.data.numpy(), label[None])
    assert sample.condition == "fog" and sample.case == "ordinary"
    assert sample.modality_paths == {"depth": "d.png"} and "subset" not in sample.metainfo


def test_flip_keeps_a_preset_decision():
    img = np.arange(2 * 3 * 6, dtype=np.float32).reshape(2, 3, 6)
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    out = MultiModalRandomFlip(prob=0.0)(dict(_sample(img.copy()), flip=True))
    np.testing.assert_array_equal(out["img"], img[:, ::-1])
    assert np.random.rand() == expected                   # no random number drawn
