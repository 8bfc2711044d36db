"""Preparation tools: raw DeLiVER -> converted layout, raw FMB -> prepared layout."""
import importlib.util
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import mmseg_custom  # noqa: F401
from mmseg.registry import DATASETS
from mmseg_custom.datasets.prepare import prepare_deliver, prepare_fmb

TOOLS = Path(__file__).resolve().parents[1] / 'segmentation' / 'tools'
SCENES = ('MAP_1_point1', 'MAP_10_point1_underexposure')


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)


def fake_raw_deliver(root: Path) -> Path:
    """Raw layout; the root path itself contains 'img' (Q15)."""
    rng = np.random.default_rng(0)
    for condition in ('fog', 'sun'):
        for split in ('train', 'test'):
            for scene in SCENES:
                for frame in ('000100', '000200'):
                    def p(folder, kind):
                        name = f'{frame}_{kind}_front.png'
                        return root / folder / condition / split / scene / name
                    write(p('img', 'rgb'), rng.integers(0, 256, (20, 20, 4), dtype=np.uint8))
                    write(p('hha', 'depth'), rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
                    write(p('lidar', 'lidar'), rng.integers(0, 256, (20, 20, 4), dtype=np.uint8))
                    write(p('event', 'event'), rng.integers(0, 256, (10, 10), dtype=np.uint8))
                    sem = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
                    sem[..., 2] = rng.choice([0, 1, 7, 25, 255], (20, 20))  # red channel
                    write(p('semantic', 'semantic'), sem)
    return root


@pytest.fixture()
def raw_deliver(tmp_path) -> Path:
    return fake_raw_deliver(tmp_path / 'img_store' / 'DELIVER_img')


def test_prepare_deliver(raw_deliver, tmp_path):
    out = tmp_path / 'out_img'
    counts = prepare_deliver(str(raw_deliver), str(out), splits=('train', 'test'))
    assert counts == {'training': 8, 'test': 8}
    name = 'sun_MAP_10_point1_underexposure_000200'
    conv = out / 'samples'
    raw = raw_deliver
    src = lambda f, k: cv2.imread(  # noqa: E731
        str(raw / f / 'sun' / 'test' / SCENES[1] / f'000200_{k}_front.png'), cv2.IMREAD_UNCHANGED)
    dst = lambda f, k: cv2.imread(  # noqa: E731
        str(conv / f / 'test' / f'{name}_{k}_front.png'), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(dst('images', 'rgb'), src('img', 'rgb')[..., :3])
    assert np.array_equal(dst('depth', 'depth'), src('hha', 'depth'))
    assert np.array_equal(dst('lidar', 'lidar'), src('lidar', 'lidar')[..., :3])
    assert np.array_equal(dst('event', 'event'),
                          np.repeat(np.repeat(src('event', 'event'), 2, 0), 2, 1))
    red = src('semantic', 'semantic')[..., 2]
    lab = dst('annotations', 'semantic')
    assert lab.ndim == 2
    expected = {0: 255, 1: 0, 7: 6, 25: 24, 255: 255}
    for raw_value, value in expected.items():
        assert (lab[red == raw_value] == value).all()
    hard = (conv / 'images' / 'test_hard.txt').read_text().split()
    easy = (conv / 'images' / 'test_easy.txt').read_text().split()
    assert len(hard) == 4 and len(easy) == 4 and all('underexposure' in n for n in hard)
    ds = DATASETS.build(dict(type='DeliverDataset', data_root=str(out), split='test',
                             modalities=['rgb', 'depth', 'lidar', 'event'], subset='hard',
                             subset_list='samples/images/test_hard.txt'))
    assert len(ds) == 4 and ds.get_data_info(0)['case'] == 'underexposure'


def test_prepare_deliver_cli_and_workers(raw_deliver, tmp_path):
    load_tool('prepare_deliver').main([str(raw_deliver), '-o', str(tmp_path / 'o'),
                                       '--splits', 'train', '--modalities', 'lidar',
                                       '--workers', '2'])
    assert len(list((tmp_path / 'o' / 'samples' / 'lidar' / 'training').glob('*.png'))) == 8
    assert not (tmp_path / 'o' / 'samples' / 'depth').exists()


def test_prepare_deliver_errors(raw_deliver, tmp_path):
    victim = raw_deliver / 'lidar' / 'fog' / 'train' / SCENES[0] / '000100_lidar_front.png'
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=str(victim)):
        prepare_deliver(str(raw_deliver), str(tmp_path / 'a'), splits=('train',))
    prepare_deliver(str(raw_deliver), str(tmp_path / 'b'), splits=('train',),
                    modalities=('depth',))  # LiDAR not requested
    write(victim, np.zeros((12, 20, 3), np.uint8))
    with pytest.raises(ValueError, match=str(victim)):
        prepare_deliver(str(raw_deliver), str(tmp_path / 'c'), splits=('train',))
    (raw_deliver / 'img' / 'snowy').mkdir()
    with pytest.raises(ValueError, match='snowy'):
        prepare_deliver(str(raw_deliver), str(tmp_path / 'd'), splits=('train',))


# ------------------------------------------------------------------------------- FMB
LISTS = {'train_easy': [1, 2, 3], 'train_hard': [4, 5], 'val_easy': [6, 7], 'val_hard': [8],
         'test_easy': [11, 12], 'test_hard': [13]}


def fake_raw_fmb(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, ids in (('train', range(1, 11)), ('test', range(11, 15))):
        for k in ids:
            name = f'{k:05d}.png'
            write(root / split / 'Visible' / name, rng.integers(0, 256, (6, 8, 3), np.uint8))
            write(root / split / 'color' / name, rng.integers(0, 256, (6, 8, 3), np.uint8))
            write(root / split / 'Infrared' / name, rng.integers(0, 256, (6, 8), np.uint8))
            write(root / split / 'Label' / name, rng.integers(0, 15, (6, 8), np.uint8))
    return root


def fake_lists(folder: Path, lists=LISTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, ids in lists.items():
        (folder / f'{key}_files.txt').write_text(''.join(f'{k:05d}.png\n' for k in ids))
    return folder


def fmb_counts(root: Path, split: str, subset=None) -> int:
    return len(DATASETS.build(dict(
        type='FMBDataset', data_root=str(root), split=split, subset=subset, serialize_data=False,
        easy_list=f'splits/{split}_easy_files.txt', hard_list=f'splits/{split}_hard_files.txt')))


def test_prepare_fmb_copy(tmp_path):
    raw, lists = fake_raw_fmb(tmp_path / 'raw'), fake_lists(tmp_path / 'lists')
    out = tmp_path / 'FMB'
    load_tool('prepare_fmb').main([str(raw), '--lists-dir', str(lists), '--out', str(out)])
    assert (out / 'val' / 'Visible' / 'hard' / '00008.png').is_file()
    assert (out / 'val' / 'Label' / '00006.png').is_file()
    assert (out / 'val' / 'color' / '00007.png').is_file()
    assert not (out / 'train' / 'Label' / '00006.png').exists()  # carved out of train
    assert (raw / 'train' / 'Visible' / '00006.png').is_file()  # copy leaves raw untouched
    assert sorted(p.name for p in (out / 'splits').iterdir()) == sorted(
        f'{k}_files.txt' for k in LISTS)
    assert [fmb_counts(out, s) for s in ('train', 'val', 'test')] == [5, 3, 3]
    assert fmb_counts(out, 'train', 'hard') == 2 and fmb_counts(out, 'val', 'easy') == 2


def test_prepare_fmb_in_place_and_symlink(tmp_path):
    raw, lists = fake_raw_fmb(tmp_path / 'raw'), fake_lists(tmp_path / 'lists')
    assert prepare_fmb(str(raw), str(lists)) == {'train': 5, 'val': 3, 'test': 3}  # in place
    assert (raw / 'train' / 'Visible' / 'easy' / '00001.png').is_file()
    assert not (raw / 'train' / 'Visible' / '00001.png').exists()
    assert (raw / 'val' / 'Infrared' / '00006.png').is_file()
    assert not (raw / 'train' / 'Infrared' / '00006.png').exists()
    assert (raw / 'train' / 'Visible' / '00009.png').is_file()  # unlisted: left alone
    prepare_fmb(str(raw), str(lists))  # a second run finds everything in place
    assert [fmb_counts(raw, s) for s in ('train', 'val', 'test')] == [5, 3, 3]
    with pytest.raises(ValueError, match='move'):
        prepare_fmb(str(raw), str(lists), mode='copy')
    raw2 = fake_raw_fmb(tmp_path / 'raw2')
    prepare_fmb(str(raw2), str(lists), str(tmp_path / 'linked'), mode='symlink')
    assert (tmp_path / 'linked' / 'test' / 'Visible' / 'hard' / '00013.png').is_symlink()
    assert fmb_counts(tmp_path / 'linked', 'test') == 3


def test_prepare_fmb_errors(tmp_path):
    raw = fake_raw_fmb(tmp_path / 'raw')
    bad = fake_lists(tmp_path / 'bad', {**LISTS, 'val_hard': [8, 42]})
    with pytest.raises(FileNotFoundError, match='00042.png'):
        prepare_fmb(str(raw), str(bad), str(tmp_path / 'o1'))
    assert not (tmp_path / 'o1' / 'train').exists()  # checked before anything is written
    dup = fake_lists(tmp_path / 'dup', {**LISTS, 'val_easy': [6, 7, 2]})
    with pytest.raises(ValueError, match='00002.png'):
        prepare_fmb(str(raw), str(dup), str(tmp_path / 'o2'))
    missing = tmp_path / 'missing'
    shutil.copytree(fake_lists(tmp_path / 'l'), missing)
    (missing / 'test_hard_files.txt').unlink()
    with pytest.raises(FileNotFoundError, match='test_hard_files.txt'):
        prepare_fmb(str(raw), str(missing), str(tmp_path / 'o3'))
