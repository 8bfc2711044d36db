"""Synthetic FMB tree in the prepared layout (spec data.md §2.2).

Writes ``<out>/{train,val,test}/Visible/{easy,hard}/<id>.png`` (8-bit RGB),
``<out>/<split>/Infrared/<id>.png`` (8-bit grayscale) and ``<out>/<split>/Label/<id>.png``
(raw ids: 0 = unlabeled, 1..14), plus the split lists
``<out>/splits/<split>_{easy,hard}_files.txt``. Ids are 5-digit, global over all splits
(like the real release: 00001..01500). RGB-hard samples (every third) are low-light images;
the infrared map is unaffected.

With ``lists_dir`` (e.g. the published lists), the ids and their easy/hard membership are
taken from ``<lists_dir>/<split>_{easy,hard}_files.txt`` instead; a split then gets the first
``nums[split]`` ids of its lists in sorted order (all of them when ``nums`` is large enough).
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..fmb import FMB_PALETTE
from ..multimodal_base import read_list_file
from .scene import apply_lighting, draw_scene, render_rgb, to_uint8, write_png

SPLITS = ('train', 'val', 'test')
# raw label ids (class index + 1); 0 = unlabeled
SKY, BUILDING, ROAD = 7, 3, 1
OBJECTS = (2, 4, 5, 6, 8, 9, 10, 12, 13, 14)
# per-class "temperature" in [0, 1] for the infrared map (people and vehicles are warm)
TEMPERATURE = {SKY: 0.05, BUILDING: 0.4, ROAD: 0.5, 2: 0.55, 4: 0.65, 5: 0.25, 6: 0.3,
               8: 0.95, 9: 0.8, 10: 0.7, 12: 0.88, 13: 0.6, 14: 0.35}


def render_sample(rng: np.random.Generator, size: Tuple[int, int],
                  hard: bool) -> Dict[str, np.ndarray]:
    """'rgb' (H,W,3 RGB), 'infrared' (H,W), 'label' (H,W) raw ids; all uint8."""
    label = draw_scene(rng, size, SKY, BUILDING, ROAD, OBJECTS, ignore_value=0)
    colours = {c: FMB_PALETTE[c - 1] for c in TEMPERATURE}
    gain = 0.15 if hard else float(rng.uniform(0.8, 1.1))
    rgb = apply_lighting(render_rgb(rng, label, colours), gain)
    temp = np.full(size, 0.45, dtype=np.float32)
    for cls, t in TEMPERATURE.items():
        temp[label == cls] = t
    infrared = cv2.GaussianBlur(255 * temp, (3, 3), 0)
    infrared += rng.normal(0.0, 4.0, infrared.shape).astype(np.float32)
    return dict(rgb=to_uint8(rgb), infrared=to_uint8(infrared), label=label.astype(np.uint8))


def _assign_ids(nums: Tuple[int, int, int], seed: int) -> Dict[str, List[Tuple[str, str]]]:
    """split -> [(name, subset)]: global ids shuffled over the splits, every 3rd hard."""
    order = np.random.default_rng([seed, 99]).permutation(sum(nums)) + 1
    out, start = {}, 0
    for split, num in zip(SPLITS, nums):
        ids = sorted(order[start:start + num].tolist())
        start += num
        out[split] = [(f'{k:05d}.png', 'hard' if i % 3 == 2 else 'easy')
                      for i, k in enumerate(ids)]
    return out


def _ids_from_lists(lists_dir: str, nums: Tuple[int, int, int]) -> Dict[str, List[Tuple[str, str]]]:
    out = {}
    for split, num in zip(SPLITS, nums):
        entries = [(name, subset) for subset in ('easy', 'hard') for name in
                   read_list_file(osp.join(lists_dir, f'{split}_{subset}_files.txt'))]
        out[split] = sorted(entries)[:num]
    return out


def make_fmb(out: str, nums: Tuple[int, int, int], seed: int,
             size: Tuple[int, int] = (120, 160),
             lists_dir: Optional[str] = None) -> Dict[str, List[Tuple[str, str]]]:
    """Write the tree; ``nums`` = samples in (train, val, test).

    Returns:
        dict split -> list of (file name, subset) written.
    """
    plan = _ids_from_lists(lists_dir, nums) if lists_dir else _assign_ids(nums, seed)
    os.makedirs(osp.join(out, 'splits'), exist_ok=True)
    for s, split in enumerate(SPLITS):
        for sub in ('Visible/easy', 'Visible/hard', 'Infrared', 'Label'):
            os.makedirs(osp.join(out, split, sub), exist_ok=True)
        for name, subset in plan[split]:
            maps = render_sample(np.random.default_rng([seed, s, int(name[:-4])]), size,
                                 hard=subset == 'hard')
            write_png(osp.join(out, split, 'Visible', subset, name), maps['rgb'], rgb=True)
            write_png(osp.join(out, split, 'Infrared', name), maps['infrared'])
            write_png(osp.join(out, split, 'Label', name), maps['label'])
        for subset in ('easy', 'hard'):
            with open(osp.join(out, 'splits', f'{split}_{subset}_files.txt'), 'w') as f:
                f.writelines(n + '\n' for n, sub in plan[split] if sub == subset)
    return plan
