"""MUSESDataset, the Cityscapes id mapping and the synthetic MUSES generator."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import mmseg_custom  # noqa: F401  (registers the datasets)
from mmseg.registry import DATASETS
from mmseg_custom.datasets.cityscapes_ids import (TRAIN_TO_LABEL_ID, label_ids_to_train_ids,
                                                  train_ids_to_label_ids)
from mmseg_custom.datasets.muses import MUSES_CLASSES, MUSESDataset
from mmseg_custom.datasets.synthetic import make_synthetic

NUMS = (16, 8, 5)


@pytest.fixture(scope='module')
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('muses')
    make_synthetic('muses', str(root), NUMS, seed=2, size=(27, 48))
    return root


def build(root, split, **kw) -> MUSESDataset:
    kw.setdefault('serialize_data', False)  # mmengine's serialisation runs gc.collect(): slow
    return DATASETS.build(dict(type='MUSESDataset', data_root=str(root), split=split, **kw))


def infos(ds):
    return [ds.get_data_info(i) for i in range(len(ds))]


def test_counts_and_conditions(tree):
    assert [len(build(tree, s)) for s in ('train', 'val', 'test')] == list(NUMS)
    train = infos(build(tree, 'train'))
    combos = {(d['weather'], d['time']) for d in train}
    assert len(combos) == 8  # 4 weathers x day/night
    assert len(build(tree, 'train', times=['night'])) == 8
    assert len(build(tree, 'train', weathers=['fog', 'snow'], times='day')) == 4
    for d in train:
        assert f"/{d['weather']}/{d['time']}/" in d['img_path']


def test_order_and_paths(tree):
    ds = build(tree, 'val', modalities=['rgb', 'event', 'lidar'])
    got = infos(ds)
    keys = [f"{d['weather']}_{d['time']}_{Path(d['img_path']).name}" for d in got]
    assert keys == sorted(keys)
    d = got[0]
    stem = Path(d['img_path']).name[:-len('_frame_camera.png')]
    rel = f"val/{d['weather']}/{d['time']}"
    assert d['seg_map_path'] == str(tree / 'gt_semantic' / rel / f'{stem}_gt_labelTrainIds.png')
    assert list(d['modality_paths']) == ['event', 'lidar']
    assert d['modality_paths']['lidar'] == str(
        tree / 'projected_to_rgb' / 'lidar' / rel / f'{stem}_lidar.npz')
    assert d['modality_paths']['event'] == str(
        tree / 'projected_to_rgb' / 'event_camera' / rel / f'{stem}_event_camera.npz')
    assert d['reduce_zero_label'] is False and d['num_classes'] == 19 and d['seg_fields'] == []


def test_classes_and_palette(tree):
    ds = build(tree, 'val')
    assert ds.metainfo['classes'] == MUSES_CLASSES and len(MUSES_CLASSES) == 19
    pal = ds.metainfo['palette']
    assert pal[0] == [128, 64, 128] and pal[4] == [190, 153, 153] and pal[18] == [119, 11, 32]


def test_encodings_and_labels(tree):
    seen = set()
    for d in infos(build(tree, 'train', modalities=['rgb', 'lidar', 'event'])):
        lab = cv2.imread(d['seg_map_path'], cv2.IMREAD_UNCHANGED)
        assert lab.dtype == np.uint8 and lab.shape == (27, 48)
        seen |= set(np.unique(lab).tolist())
        with np.load(d['modality_paths']['lidar']) as z:
            assert z.files == ['arr_0']
            lidar = z['arr_0']
        with np.load(d['modality_paths']['event']) as z:
            event = z['arr_0']
        assert lidar.dtype == np.float32 and lidar.shape == (27, 48, 3)
        assert event.dtype == np.uint8 and event.shape == (27, 48, 3)
        hit = lidar[..., 0] > 0
        assert 0.05 < hit.mean() < 0.9 and (lidar[~hit] == 0).all()
        assert (event[..., 2] == 0).all() and event[..., 0].max() > 0
    assert 255 in seen and seen - {255} <= set(range(19))


def test_missing_modality_and_label(tree, tmp_path):
    root = tmp_path / 'm'
    shutil.copytree(tree, root)
    victim = sorted((root / 'projected_to_rgb' / 'event_camera').rglob('*.npz'))[0]
    victim.unlink()
    split = victim.relative_to(root / 'projected_to_rgb' / 'event_camera').parts[0]
    build(root, split, modalities=['rgb', 'lidar'])
    with pytest.raises(FileNotFoundError, match=victim.name):
        build(root, split, modalities=['rgb', 'event'])
    gt = sorted((root / 'gt_semantic' / 'test').rglob('*.png'))[0]
    gt.unlink()
    with pytest.raises(FileNotFoundError, match='with_labels=False'):
        build(root, 'test')
    no_labels = build(root, 'test', with_labels=False)
    assert len(no_labels) == NUMS[2] and no_labels.get_data_info(0)['seg_map_path'] is None


def test_bad_arguments(tree, tmp_path):
    with pytest.raises(ValueError, match='weathers'):
        build(tree, 'val', weathers=['sunny'])
    with pytest.raises(ValueError, match='times'):
        build(tree, 'val', times=['dusk'])
    with pytest.raises(ValueError, match='modalities'):
        build(tree, 'val', modalities=['rgb', 'radar'])
    root = tmp_path / 'm'
    shutil.copytree(tree, root)
    (root / 'frame_camera' / 'val' / 'sunny').mkdir()
    with pytest.raises(ValueError, match='sunny'):
        build(root, 'val')


def test_cityscapes_id_mapping():
    train = np.arange(19, dtype=np.uint8)
    assert label_ids_to_train_ids(np.array(TRAIN_TO_LABEL_ID)).tolist() == train.tolist()
    assert train_ids_to_label_ids(train).tolist() == list(TRAIN_TO_LABEL_ID)
    assert label_ids_to_train_ids(np.array([0, 1, 6, 7, 26, 33, 34, 255])).tolist() == \
        [255, 255, 255, 0, 13, 18, 255, 255]
    assert train_ids_to_label_ids(np.array([255, 0])).tolist() == [0, 7]
    assert train_ids_to_label_ids(np.array([255]), ignore_label_id=255).tolist() == [255]
    lab = np.random.default_rng(0).integers(0, 34, (5, 7))
    train_map = label_ids_to_train_ids(lab)
    valid = train_map != 255
    assert (train_ids_to_label_ids(train_map)[valid] == lab[valid]).all()
    with pytest.raises(ValueError, match='19'):
        train_ids_to_label_ids(np.array([19]))
