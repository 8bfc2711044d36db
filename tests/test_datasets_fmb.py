"""FMBDataset and the synthetic FMB generator."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import mmseg_custom  # noqa: F401  (registers the datasets)
from mmseg.registry import DATASETS
from mmseg_custom.datasets.fmb import FMB_CLASSES, FMBDataset
from mmseg_custom.datasets.synthetic import make_synthetic

REPO = Path(__file__).resolve().parents[1]
LISTS = REPO.parent / 'shared' / 'data' / 'splits' / 'fmb'
NEED_LISTS = pytest.mark.skipif(
    not LISTS.is_dir(), reason=f'published FMB split lists not found at {LISTS} (not shipped '
    'with the repository; see datasets/FMB/README.md)')
NUMS = (9, 6, 7)


@pytest.fixture(scope='module')
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('fmb')
    make_synthetic('fmb', str(root), NUMS, seed=1, size=(30, 40))
    return root


def build(root, split, lists=False, **kw) -> FMBDataset:
    kw.setdefault('serialize_data', False)  # mmengine's serialisation runs gc.collect(): slow
    if lists:
        kw.update(easy_list=f'splits/{split}_easy_files.txt',
                  hard_list=f'splits/{split}_hard_files.txt')
    return DATASETS.build(dict(type='FMBDataset', data_root=str(root), split=split, **kw))


def paths(ds, key='img_path'):
    return [ds.get_data_info(i)[key] for i in range(len(ds))]


@pytest.mark.parametrize('lists', [False, True])
@pytest.mark.parametrize('split,num', [('train', 9), ('val', 6), ('test', 7)])
def test_counts_per_split_and_subset(tree, split, num, lists):
    n_hard = num // 3  # every third sample of a split is RGB-hard
    assert len(build(tree, split, lists)) == num
    assert len(build(tree, split, lists, subset='easy')) == num - n_hard
    hard = build(tree, split, lists, subset='hard')
    assert len(hard) == n_hard
    assert all('/Visible/hard/' in p for p in paths(hard))


def test_data_info_and_order(tree):
    ds = build(tree, 'train', lists=True)
    info = ds.get_data_info(0)
    assert set(info) >= {'img_path', 'seg_map_path', 'modality_paths', 'reduce_zero_label',
                         'label_map', 'seg_fields', 'num_classes', 'subset'}
    assert info['reduce_zero_label'] is True and info['num_classes'] == 14
    assert info['label_map'] is None and info['seg_fields'] == []
    name = Path(info['img_path']).name
    assert info['seg_map_path'].endswith(f'train/Label/{name}')
    assert info['modality_paths'] == {'infrared': str(tree / 'train' / 'Infrared' / name)}
    names = [Path(p).name for p in paths(ds)]
    assert names == sorted(names) and len(set(names)) == len(names)  # ordered, no shuffle
    assert paths(build(tree, 'train', lists=True)) == paths(ds)  # deterministic
    rgb_only = build(tree, 'val', modalities=['rgb'])
    assert rgb_only.get_data_info(0)['modality_paths'] == {}


def test_ids_global_across_splits(tree):
    ids = [Path(p).name for s in ('train', 'val', 'test') for p in paths(build(tree, s))]
    assert len(ids) == sum(NUMS) == len(set(ids))
    assert all(len(n) == 9 and n[:5].isdigit() for n in ids)


def test_classes_and_palette(tree):
    ds = build(tree, 'test')
    assert ds.metainfo['classes'] == FMB_CLASSES and len(FMB_CLASSES) == 14
    assert ds.metainfo['classes'][3] == 'Traffic Light' and ds.metainfo['classes'][13] == 'Pole'
    pal = ds.metainfo['palette']
    assert len(pal) == 14 and pal[0] == [179, 228, 228] and pal[13] == [135, 113, 90]


def test_encodings_and_label_values(tree):
    ds = build(tree, 'train')
    raw = set()
    for i in range(len(ds)):
        d = ds.get_data_info(i)
        lab = cv2.imread(d['seg_map_path'], cv2.IMREAD_UNCHANGED)
        ir = cv2.imread(d['modality_paths']['infrared'], cv2.IMREAD_UNCHANGED)
        rgb = cv2.imread(d['img_path'], cv2.IMREAD_UNCHANGED)
        assert lab.shape == ir.shape == (30, 40) and rgb.shape == (30, 40, 3)
        assert lab.dtype == ir.dtype == rgb.dtype == np.uint8
        raw |= set(np.unique(lab).tolist())
    assert 0 in raw and raw <= set(range(15)) and len(raw) > 5  # 0 = unlabeled, 1..14
    easy = [cv2.imread(p).mean() for p in paths(build(tree, 'train', subset='easy'))]
    hard = [cv2.imread(p).mean() for p in paths(build(tree, 'train', subset='hard'))]
    assert max(hard) < 0.4 * min(easy)  # RGB-hard = low light


def test_list_naming_missing_file(tree, tmp_path):
    bad = tmp_path / 'val_easy_files.txt'
    bad.write_text((tree / 'splits' / 'val_easy_files.txt').read_text() + '09999.png\n')
    with pytest.raises(FileNotFoundError, match='09999.png'):
        build(tree, 'val', easy_list=str(bad))
    with pytest.raises(FileNotFoundError, match='no_such_list.txt'):
        build(tree, 'val', easy_list='no_such_list.txt')


def test_name_in_both_lists(tree, tmp_path):
    hard = (tree / 'splits' / 'val_hard_files.txt').read_text().split()
    dup = tmp_path / 'dup.txt'
    dup.write_text(hard[0] + '\n')
    shutil.copy(tree / 'val' / 'Visible' / 'hard' / hard[0], tmp_path / hard[0])
    root = tmp_path / 'fmb'
    shutil.copytree(tree, root)
    shutil.copy(tmp_path / hard[0], root / 'val' / 'Visible' / 'easy' / hard[0])
    with pytest.raises(ValueError, match=hard[0]):
        build(root, 'val')


def test_missing_infrared_names_the_file(tree, tmp_path):
    root = tmp_path / 'fmb'
    shutil.copytree(tree, root)
    victim = sorted((root / 'test' / 'Infrared').glob('*.png'))[1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=str(victim)):
        build(root, 'test')
    assert len(build(root, 'test', modalities=['rgb'])) == NUMS[2]


@pytest.mark.parametrize('mods', [['rgb', 'thermal'], ['infrared'], ['rgb', 'depth']])
def test_bad_modalities(tree, mods):
    with pytest.raises(ValueError, match='modalities'):
        build(tree, 'val', modalities=mods)


@NEED_LISTS
def test_published_lists(tmp_path):
    """A tree with the ids of the published val lists: 80 easy + 80 hard; the published test
    lists against a tree holding only part of the test ids name the first missing file."""
    make_synthetic('fmb', str(tmp_path), (0, 160, 50), seed=0, size=(16, 16),
                   lists_dir=str(LISTS))
    kw = dict(easy_list=str(LISTS / 'val_easy_files.txt'),
              hard_list=str(LISTS / 'val_hard_files.txt'))
    assert len(build(tmp_path, 'val', subset='easy', **kw)) == 80
    assert len(build(tmp_path, 'val', subset='hard', **kw)) == 80
    both = build(tmp_path, 'val', **kw)
    assert len(both) == 160
    listed = set((LISTS / 'val_easy_files.txt').read_text().split())
    assert {Path(d['img_path']).name for d in map(both.get_data_info, range(160))
            if d['subset'] == 'easy'} == listed
    present = {p.name for p in (tmp_path / 'test' / 'Visible' / 'easy').glob('*.png')}
    first_missing = next(n for n in (LISTS / 'test_easy_files.txt').read_text().split()
                         if n not in present)
    with pytest.raises(FileNotFoundError, match=first_missing):
        build(tmp_path, 'test', easy_list=str(LISTS / 'test_easy_files.txt'))


def test_unprepared_tree(tmp_path):
    (tmp_path / 'train' / 'Visible').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match='prepare_fmb'):
        build(tmp_path, 'train')
