"""Convert the raw DeLiVER release into the converted layout read by ``DeliverDataset``.

Raw layout (front view)::

    <raw>/{img,hha,lidar,event,semantic}/<condition>/<split>/<scene>/<frame>_<kind>_front.png

with split in train/val/test. Output (spec data.md §1.2)::

    <out>/samples/{images,annotations,depth,lidar,event}/{training,validation,test}/
        <condition>_<scene>_<frame>_<kind>_front.png

Per sample: RGB keeps its first 3 channels; HHA (from ``hha/``, saved as the ``depth``
modality), LiDAR and event drop an alpha channel (1-channel maps stay 1-channel); the event map
is resized to the RGB size with nearest-neighbour sampling; the label is the red channel of the
semantic PNG with 255 -> 0 and then -1 in uint8 (0 -> 255 ignore, 1..25 -> 0..24). Every path
is built from parsed components relative to ``<raw>`` (never by substring replacement), and
every missing or inconsistent file raises an error naming it.
"""
import logging
import os
import os.path as osp
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, Iterable, List, NamedTuple, Sequence, Tuple

import cv2
import numpy as np
from mmengine.logging import print_log

from ..deliver import DELIVER_CONDITIONS, parse_deliver_name

RAW_SPLITS = {'train': 'training', 'val': 'validation', 'test': 'test'}
# modality -> (raw folder, kind in file names, output folder)
RAW_MODALITIES = {'depth': ('hha', 'depth', 'depth'), 'lidar': ('lidar', 'lidar', 'lidar'),
                  'event': ('event', 'event', 'event')}
MAX_RAW_LABEL = 25


class RawSample(NamedTuple):
    """One raw RGB frame: ``<raw>/img/<condition>/<split>/<scene>/<frame>_rgb_front.png``."""
    raw_root: str
    condition: str
    split: str
    scene: str
    frame: str

    def raw_path(self, folder: str, kind: str) -> str:
        return osp.join(self.raw_root, folder, self.condition, self.split, self.scene,
                        f'{self.frame}_{kind}_front.png')

    def out_name(self, kind: str) -> str:
        return f'{self.condition}_{self.scene}_{self.frame}_{kind}_front.png'


def find_raw_samples(raw_root: str, split: str) -> List[RawSample]:
    """Sorted raw RGB frames of ``split`` (train/val/test) under ``<raw_root>/img``.

    Raises:
        FileNotFoundError: ``<raw_root>/img`` is missing.
        ValueError: an unknown condition folder or a file name that is not
            ``<frame>_rgb_front.png``.
    """
    img_root = osp.join(raw_root, 'img')
    if not osp.isdir(img_root):
        raise FileNotFoundError(f'raw DeLiVER RGB folder {img_root} does not exist')
    samples = []
    for condition in sorted(os.listdir(img_root)):
        if not osp.isdir(osp.join(img_root, condition)):
            continue
        if condition not in DELIVER_CONDITIONS:
            raise ValueError(f'{osp.join(img_root, condition)}: unknown DeLiVER condition '
                             f'folder; expected one of {list(DELIVER_CONDITIONS)}')
        split_dir = osp.join(img_root, condition, split)
        if not osp.isdir(split_dir):
            continue
        for scene in sorted(os.listdir(split_dir)):
            scene_dir = osp.join(split_dir, scene)
            if not osp.isdir(scene_dir):
                continue
            for name in sorted(os.listdir(scene_dir)):
                if not name.endswith('.png'):
                    continue
                frame, sep, rest = name.partition('_')
                if rest != 'rgb_front.png' or not frame:
                    raise ValueError(f'{osp.join(scene_dir, name)}: expected a raw RGB name '
                                     "'<frame>_rgb_front.png'")
                samples.append(RawSample(raw_root, condition, split, scene, frame))
    return samples


def _read(path: str) -> np.ndarray:
    if not osp.isfile(path):
        raise FileNotFoundError(f'missing raw DeLiVER file {path}')
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'cannot decode {path}')
    if img.dtype != np.uint8:
        raise ValueError(f'{path}: expected an 8-bit image, got {img.dtype}')
    return img


def _drop_alpha(img: np.ndarray) -> np.ndarray:
    return img[..., :3] if img.ndim == 3 and img.shape[2] == 4 else img


def resize_nearest(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to (H, W): output pixel (i, j) takes source pixel
    (floor(i * H_in / H), floor(j * W_in / W)) (the ``torch`` 'nearest' rule)."""
    h, w = size
    rows = np.minimum((np.arange(h) * (img.shape[0] / h)).astype(np.intp), img.shape[0] - 1)
    cols = np.minimum((np.arange(w) * (img.shape[1] / w)).astype(np.intp), img.shape[1] - 1)
    return img[rows][:, cols]


def convert_label(semantic: np.ndarray, path: str) -> np.ndarray:
    """Raw semantic PNG (decoded by OpenCV) -> converted label: red channel, 255 -> 0, then
    -1 in uint8 (0 -> 255 ignore, 1..25 -> 0..24). Values above 25 are logged with the file."""
    red = semantic[..., 2] if semantic.ndim == 3 else semantic  # OpenCV decodes BGR(A)
    if red.max() > MAX_RAW_LABEL and (red[red != 255] > MAX_RAW_LABEL).any():
        print_log(f'{path}: raw label values above {MAX_RAW_LABEL} found '
                  f'({sorted(set(red[(red > MAX_RAW_LABEL) & (red != 255)].tolist()))})',
                  logger='current', level=logging.WARNING)
    label = red.copy()
    label[label == 255] = 0
    return label - np.uint8(1)  # uint8 wrap: 0 -> 255


def _write(path: str, img: np.ndarray) -> None:
    if not cv2.imwrite(path, img):
        raise OSError(f'could not write {path}')


def convert_sample(sample: RawSample, out_root: str, modalities: Sequence[str]) -> str:
    """Convert one frame; returns the output RGB file name."""
    out_split = RAW_SPLITS[sample.split]
    rgb = _drop_alpha(_read(sample.raw_path('img', 'rgb')))
    size = rgb.shape[:2]
    out = {'images': (sample.out_name('rgb'), rgb)}
    for m in modalities:
        folder, kind, out_folder = RAW_MODALITIES[m]
        path = sample.raw_path(folder, kind)
        arr = _drop_alpha(_read(path))
        if m == 'event' and arr.shape[:2] != size:
            arr = resize_nearest(arr, size)
        if arr.shape[:2] != size:
            raise ValueError(f'{path}: size {arr.shape[1]}x{arr.shape[0]} differs from the RGB '
                             f'image {sample.raw_path("img", "rgb")} ({size[1]}x{size[0]})')
        out[out_folder] = (sample.out_name(kind), arr)
    sem_path = sample.raw_path('semantic', 'semantic')
    label = convert_label(_read(sem_path), sem_path)
    if label.shape != size:
        raise ValueError(f'{sem_path}: label size differs from the RGB image')
    out['annotations'] = (sample.out_name('semantic'), label)
    for folder, (name, arr) in out.items():
        parse_deliver_name(name)  # the output name must parse back (condition, case)
        _write(osp.join(out_root, 'samples', folder, out_split, name), arr)
    return out['images'][0]


def _convert_star(args: tuple) -> str:
    return convert_sample(*args)


def write_easy_hard_lists(out_root: str, rgb_names: Iterable[str]) -> Dict[str, int]:
    """Write ``samples/images/test_{easy,hard}.txt`` (sorted; hard = underexposure case)."""
    lists: Dict[str, List[str]] = {'easy': [], 'hard': []}
    for name in sorted(rgb_names):
        lists[parse_deliver_name(name).subset].append(name)
    for subset, names in lists.items():
        with open(osp.join(out_root, 'samples', 'images', f'test_{subset}.txt'), 'w') as f:
            f.writelines(n + '\n' for n in names)
    return {k: len(v) for k, v in lists.items()}


def prepare_deliver(raw_root: str, out_root: str,
                    splits: Sequence[str] = ('train', 'val', 'test'),
                    modalities: Sequence[str] = ('depth', 'lidar', 'event'),
                    workers: int = 0) -> Dict[str, int]:
    """Convert the raw release; returns the number of samples per output split folder.

    Also writes the RGB-easy/RGB-hard lists of the test split (when converted).
    """
    bad = [m for m in modalities if m not in RAW_MODALITIES]
    if bad:
        raise ValueError(f'unknown modalities {bad}; expected some of {list(RAW_MODALITIES)}')
    counts = {}
    for split in splits:
        if split not in RAW_SPLITS:
            raise ValueError(f'unknown split {split!r}; expected some of {list(RAW_SPLITS)}')
        samples = find_raw_samples(raw_root, split)
        if not samples:
            raise FileNotFoundError(f'no raw RGB frames found for split {split!r} under '
                                    f'{osp.join(raw_root, "img")}/<condition>/{split}/<scene>/')
        for folder in ('images', 'annotations', *[RAW_MODALITIES[m][2] for m in modalities]):
            os.makedirs(osp.join(out_root, 'samples', folder, RAW_SPLITS[split]), exist_ok=True)
        jobs = [(s, out_root, tuple(modalities)) for s in samples]
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                names = list(pool.map(_convert_star, jobs, chunksize=8))
        else:
            names = [_convert_star(j) for j in jobs]
        counts[RAW_SPLITS[split]] = len(names)
        print_log(f'DeLiVER {split}: converted {len(names)} samples', logger='current')
        if split == 'test':
            sizes = write_easy_hard_lists(out_root, names)
            print_log(f'DeLiVER test: wrote test_easy.txt ({sizes["easy"]}) and test_hard.txt '
                      f'({sizes["hard"]}) to {osp.join(out_root, "samples", "images")}',
                      logger='current')
    return counts
