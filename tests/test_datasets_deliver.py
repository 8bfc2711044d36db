"""DeliverDataset, DeLiVER file-name parsing and the synthetic DeLiVER generator."""
import collections
import importlib.util
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import mmseg_custom  # noqa: F401  (registers the datasets)
from mmseg.registry import DATASETS
from mmseg_custom.datasets.deliver import (DELIVER_CLASSES, DELIVER_PALETTE, DeliverDataset,
                                           parse_deliver_name)
from mmseg_custom.datasets.synthetic import make_synthetic

REPO = Path(__file__).resolve().parents[1]
SPLITS = REPO.parent / 'shared' / 'data' / 'splits'
NUMS = (12, 6, 13)  # train / val / test


@pytest.fixture(scope='module')
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('deliver')
    make_synthetic('deliver', str(root), NUMS, seed=3, size=(48, 64))
    return root


def build(root, **kw) -> DeliverDataset:
    kw.setdefault('serialize_data', False)  # mmengine's serialisation runs gc.collect(): slow
    return DATASETS.build(dict(type='DeliverDataset', data_root=str(root), **kw))


def n_hard(n: int) -> int:
    return len([i for i in range(n) if i % 6 == 3])  # case cycle: ordinary, mb, oe, ue, ...


@pytest.mark.parametrize('split,num', [('train', 12), ('val', 6), ('test', 13),
                                       ('training', 12), ('validation', 6)])
def test_counts_per_split_and_subset(tree, split, num):
    assert len(build(tree, split=split)) == num
    hard = build(tree, split=split, subset='hard')
    easy = build(tree, split=split, subset='easy')
    assert len(hard) == n_hard(num) and len(easy) == num - n_hard(num)
    assert {hard.get_data_info(i)['case'] for i in range(len(hard))} == {'underexposure'}
    assert 'underexposure' not in {easy.get_data_info(i)['case'] for i in range(len(easy))}


def test_data_info_keys_and_paths(tree):
    ds = build(tree, split='train', modalities=['rgb', 'lidar', 'event'])
    info = ds.get_data_info(0)
    assert list(info['modality_paths']) == ['lidar', 'event']
    assert info['img_path'].endswith('_rgb_front.png')
    assert 'samples/images/training' in info['img_path']
    assert info['seg_map_path'].endswith('_semantic_front.png')
    assert info['modality_paths']['lidar'].endswith('_lidar_front.png')
    assert 'samples/event/training' in info['modality_paths']['event']
    assert info['reduce_zero_label'] is False and info['label_map'] is None
    assert info['seg_fields'] == [] and info['num_classes'] == 25
    names = [os.path.basename(ds.get_data_info(i)['img_path']) for i in range(len(ds))]
    assert names == sorted(names)
    for i in range(len(ds)):
        d = ds.get_data_info(i)
        p = parse_deliver_name(d['img_path'])
        assert (d['condition'], d['case'], d['subset']) == (p.condition, p.case, p.subset)


def test_classes_and_palette(tree):
    ds = build(tree, split='val')
    assert ds.metainfo['classes'] == DELIVER_CLASSES and len(DELIVER_CLASSES) == 25
    assert ds.metainfo['classes'][9] == 'Cars' and ds.metainfo['classes'][24] == 'Truck'
    pal = ds.metainfo['palette']
    assert len(pal) == 25 and pal[0] == [70, 70, 70] and pal[5] == [157, 234, 50]
    assert pal[21] == [145, 170, 100] and pal[24] == [0, 0, 70]


def test_label_values_and_encodings(tree):
    ds = build(tree, split='train', modalities=['rgb', 'depth', 'lidar', 'event'])
    seen = set()
    for i in range(len(ds)):
        d = ds.get_data_info(i)
        lab = cv2.imread(d['seg_map_path'], cv2.IMREAD_UNCHANGED)
        assert lab.dtype == np.uint8 and lab.shape == (48, 64)
        seen |= set(np.unique(lab).tolist())
        rgb = cv2.imread(d['img_path'], cv2.IMREAD_UNCHANGED)
        assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
        shapes = {m: cv2.imread(p, cv2.IMREAD_UNCHANGED).shape
                  for m, p in d['modality_paths'].items()}
        assert shapes == {'depth': (48, 64, 3), 'lidar': (48, 64, 3), 'event': (48, 64)}
    assert 255 in seen and seen - {255} <= set(range(25)) and len(seen) > 5


@pytest.mark.parametrize('name,condition,case', [
    ('fog_MAP_7_point4_lidarjitter_120150_rgb_front.png', 'fog', 'lidarjitter'),
    ('sun_MAP_10_point1_underexposure_031550_rgb_front.png', 'sun', 'underexposure'),
    ('night_MAP_3_point2_motionblur_000010_depth_front.png', 'night', 'motionblur'),
    ('cloud_MAP_1_point3_overexposure_000011_event_front.png', 'cloud', 'overexposure'),
    ('rain_MAP_5_eventlowres_000012_semantic_front.png', 'rain', 'eventlowres'),
    ('cloud_MAP_1_point3_000100_rgb_front.png', 'cloud', 'ordinary'),
    # condition / case words inside other words must not match
    ('sun_terrain_000001_rgb_front.png', 'sun', 'ordinary'),
    ('night_training_brain_000002_lidar_front.png', 'night', 'ordinary'),
    ('fog_MAP_1_notunderexposure_000003_rgb_front.png', 'fog', 'ordinary'),
    ('cloud_MAP_underexposure_point1_000004_rgb_front.png', 'cloud', 'ordinary'),
    ('/data/rain/training/sun_MAP_1_point1_000005_rgb_front.png', 'sun', 'ordinary'),
])
def test_parse_name(name, condition, case):
    p = parse_deliver_name(name)
    assert (p.condition, p.case) == (condition, case)
    assert p.subset == ('hard' if case == 'underexposure' else 'easy')


@pytest.mark.parametrize('name', ['brain_MAP_1_000001_rgb_front.png',
                                  'training_MAP_1_000001_rgb_front.png',
                                  'sun_MAP_1_000001_rgb.png', 'sun_000001_rgb_front.png',
                                  'sun_MAP_1_000001_thermal_front.png'])
def test_parse_name_errors(name):
    with pytest.raises(ValueError, match=name):
        parse_deliver_name(name)


def _copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_tricky_scene_names_in_a_tree(tree, tmp_path):
    root = _copy_tree(tree, tmp_path / 'd')
    for top, kind in [('images', 'rgb'), ('annotations', 'semantic'), ('depth', 'depth')]:
        folder = root / 'samples' / top / 'validation'
        old = sorted(folder.glob(f'*_{kind}_front.png'))[0]
        old.rename(folder / f'sun_terrain_training_999999_{kind}_front.png')
    ds = build(root, split='val')
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    odd = [d for d in infos if 'terrain' in d['img_path']]
    assert len(odd) == 1 and (odd[0]['condition'], odd[0]['case']) == ('sun', 'ordinary')


def test_unknown_condition_in_tree_names_the_file(tree, tmp_path):
    root = _copy_tree(tree, tmp_path / 'd')
    folder = root / 'samples' / 'images' / 'validation'
    sorted(folder.glob('*_rgb_front.png'))[0].rename(folder / 'snow_MAP_1_000001_rgb_front.png')
    with pytest.raises(ValueError, match='snow_MAP_1_000001_rgb_front.png'):
        build(root, split='val')


def test_missing_modality_file_names_the_file(tree, tmp_path):
    root = _copy_tree(tree, tmp_path / 'd')
    victim = sorted((root / 'samples' / 'lidar' / 'test').glob('*.png'))[2]
    victim.unlink()
    build(root, split='test', modalities=['rgb', 'depth'])  # lidar not requested: fine
    with pytest.raises(FileNotFoundError, match=victim.name):
        build(root, split='test', modalities=['rgb', 'lidar'])


def test_missing_label_file_names_the_file(tree, tmp_path):
    root = _copy_tree(tree, tmp_path / 'd')
    victim = sorted((root / 'samples' / 'annotations' / 'training').glob('*.png'))[0]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        build(root, split='train')


def test_subset_lists(tree, tmp_path):
    for subset in ('easy', 'hard'):
        listed = build(tree, split='test', subset=subset,
                       subset_list=f'samples/images/test_{subset}.txt')
        structural = build(tree, split='test', subset=subset)
        assert [listed.get_data_info(i)['img_path'] for i in range(len(listed))] == \
            [structural.get_data_info(i)['img_path'] for i in range(len(structural))]
    bad = tmp_path / 'bad_easy.txt'
    good = (tree / 'samples' / 'images' / 'test_easy.txt').read_text().split()
    bad.write_text('\n'.join(good[:2] + ['sun_MAP_9_point9_424242_rgb_front.png']) + '\n')
    with pytest.raises(FileNotFoundError, match='sun_MAP_9_point9_424242_rgb_front.png'):
        build(tree, split='test', subset='easy', subset_list=str(bad))
    with pytest.raises(ValueError, match='RGB-easy'):
        build(tree, split='test', subset='hard',
              subset_list=str(tree / 'samples' / 'images' / 'test_easy.txt'))
    with pytest.raises(FileNotFoundError, match='nope.txt'):
        build(tree, split='test', subset='hard', subset_list='nope.txt')
    with pytest.raises(ValueError, match='subset_list needs subset'):
        build(tree, split='test', subset_list='samples/images/test_easy.txt')


@pytest.mark.parametrize('mods', [['lidar'], ['rgb', 'thermal'], ['rgb', 'depth', 'depth'],
                                  ['depth', 'rgb']])
def test_bad_modalities(tree, mods):
    with pytest.raises(ValueError, match='modalities'):
        build(tree, split='val', modalities=mods)


def test_bad_split_and_subset(tree):
    with pytest.raises(ValueError, match='split'):
        build(tree, split='testing')
    with pytest.raises(ValueError, match='subset'):
        build(tree, split='test', subset='medium')
    with pytest.raises(FileNotFoundError, match='nowhere'):
        build(tree.parent / 'nowhere', split='test')
    with pytest.raises(TypeError, match='trailing comma'):  # Q16
        DATASETS.build(dict(type='DeliverDataset', data_root=(str(tree),), split='test'))


def test_lazy_init(tree):
    ds = build(tree, split='val', lazy_init=True)
    assert not ds._fully_initialized
    assert len(ds) == 6 and ds._fully_initialized


@pytest.mark.skipif(not (SPLITS / 'deliver').is_dir(),
                    reason=f'published DeLiVER easy/hard lists not found at {SPLITS}/deliver')
def test_published_lists_parse_structurally():
    easy = (SPLITS / 'deliver' / 'test_easy.txt').read_text().split()
    hard = (SPLITS / 'deliver' / 'test_hard.txt').read_text().split()
    assert len(easy) == 1797 and len(hard) == 100 and not set(easy) & set(hard)
    pe, ph = [parse_deliver_name(n) for n in easy], [parse_deliver_name(n) for n in hard]
    assert {p.subset for p in pe} == {'easy'} and {p.subset for p in ph} == {'hard'}
    assert collections.Counter(p.condition for p in pe) == dict(
        cloud=359, fog=359, night=359, rain=360, sun=360)
    assert collections.Counter(p.case for p in pe) == dict(
        ordinary=1198, motionblur=300, overexposure=100, lidarjitter=99, eventlowres=100)
    assert collections.Counter(p.condition for p in ph) == {c: 20 for c in
                                                           ('cloud', 'fog', 'night', 'rain', 'sun')}


def test_generator_deterministic_and_seeded(tmp_path):
    a, b, c = tmp_path / 'a', tmp_path / 'b', tmp_path / 'c'
    make_synthetic('deliver', str(a), (2, 1, 1), seed=5, size=(32, 32))
    make_synthetic('deliver', str(b), (2, 1, 1), seed=5, size=(32, 32))
    make_synthetic('deliver', str(c), (2, 1, 1), seed=6, size=(32, 32))
    files = sorted(p.relative_to(a) for p in a.rglob('*') if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob('*') if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files if f.suffix == '.png')


def test_scenes_are_learnable_from_each_modality(tree):
    """Per-class colour centres on RGB and on the HHA map both separate the classes of an
    ordinary sample (nearest-centre pixel accuracy), RGB class colours follow the palette
    order, and underexposure RGB is much darker (RGB-hard)."""
    ds = build(tree, split='train', modalities=['rgb', 'depth'])
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    ordinary = next(d for d in infos if d['case'] == 'ordinary')
    lab = cv2.imread(ordinary['seg_map_path'], cv2.IMREAD_UNCHANGED).astype(int)
    valid = lab != 255
    classes = np.unique(lab[valid])
    for path, min_acc in [(ordinary['img_path'], 0.9), (ordinary['modality_paths']['depth'], 0.8)]:
        img = cv2.imread(path)[..., ::-1].astype(float)
        centres = np.array([img[lab == c].mean(0) for c in classes])
        pred = classes[np.argmin(((img[..., None, :] - centres) ** 2).sum(-1), axis=-1)]
        assert (pred == lab)[valid].mean() > min_acc, path
        if path == ordinary['img_path']:
            pal = np.array(DELIVER_PALETTE, float)[classes]
            assert np.corrcoef(centres.ravel(), pal.ravel())[0, 1] > 0.95
    dark = next(d for d in infos if d['case'] == 'underexposure')
    assert cv2.imread(dark['img_path']).mean() < 0.3 * cv2.imread(ordinary['img_path']).mean()


def test_cli(tmp_path):
    spec = importlib.util.spec_from_file_location(
        'make_synthetic_dataset', REPO / 'segmentation' / 'tools' / 'make_synthetic_dataset.py')
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cli.main(['--format', 'deliver', '--out', str(tmp_path), '--num', '3', '--num-val', '1',
              '--num-test', '2', '--seed', '1', '--size', '40'])
    assert len(list((tmp_path / 'samples' / 'images' / 'training').glob('*.png'))) == 3
    assert len(list((tmp_path / 'samples' / 'event' / 'validation').glob('*.png'))) == 1
    img = cv2.imread(str(next((tmp_path / 'samples' / 'images' / 'test').glob('*.png'))))
    assert img.shape == (40, 40, 3)
