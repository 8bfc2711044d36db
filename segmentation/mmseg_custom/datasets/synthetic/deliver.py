"""Synthetic DeLiVER tree in the converted layout (spec data.md §1.2).

Writes ``<out>/samples/{images,annotations,depth,lidar,event}/{training,validation,test}/``
with ``<condition>_<scene>_<frame>_<kind>_front.png`` names, and the published-style easy/hard
lists ``<out>/samples/images/test_easy.txt`` / ``test_hard.txt``. Encodings: RGB 8-bit 3-ch;
depth = HHA 8-bit 3-ch; LiDAR 8-bit 3-ch (sparse scan lines, 0 where no return); event 8-bit
1-ch; labels 8-bit 1-ch with the converted ids 0..24 and 255 = ignore.

Sample ``i`` of a split has condition ``DELIVER_CONDITIONS[i % 5]`` and case
``CASES[i % 6]`` (``'ordinary'`` first), so 30 consecutive samples cover every
(condition, case) pair and every 6th sample is an underexposure (RGB-hard) sample.
"""
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import numpy as np

from ..deliver import DELIVER_CASES, DELIVER_CONDITIONS, DELIVER_PALETTE, parse_deliver_name
from .scene import (apply_lighting, class_edges, class_values, draw_scene, render_rgb,
                    to_uint8, write_png)

CASES = ('ordinary',) + DELIVER_CASES
SPLIT_DIRS = ('training', 'validation', 'test')
SKY, BUILDING, ROAD = 12, 0, 6
# Pedestrian, Pole, Vegetation, Cars, TrafficSign, Truck, Fence, SideWalk
OBJECTS = (3, 4, 8, 9, 11, 24, 1, 7)
_ALL = (SKY, BUILDING, ROAD) + OBJECTS
# Class-dependent auxiliary values in [0, 1]: depth (far = 1) and LiDAR/event intensity.
DEPTH = {SKY: 1.0, BUILDING: 0.8, ROAD: 0.55,
         **{c: 0.05 + 0.06 * k for k, c in enumerate(OBJECTS)}}
INTENSITY = {c: 0.15 + 0.85 * k / (len(_ALL) - 1) for k, c in enumerate(reversed(_ALL))}
CONDITION_LIGHT = {'sun': (1.0, 0.0), 'cloud': (0.85, 0.0), 'rain': (0.75, 0.1),
                   'fog': (0.9, 0.45), 'night': (0.35, 0.0)}


def sample_name(i: int, split_index: int) -> Tuple[str, str, str]:
    """(condition, case, name stem ``<condition>_<scene>_<frame>``) of sample ``i``."""
    condition, case = DELIVER_CONDITIONS[i % 5], CASES[i % 6]
    scene = f'MAP_{1 + (i // 6) % 10}_point{1 + i % 3}'
    if case != 'ordinary':
        scene += f'_{case}'
    frame = f'{100000 * (split_index + 1) + 10 * i:06d}'
    return condition, case, f'{condition}_{scene}_{frame}'


def render_sample(rng: np.random.Generator, size: Tuple[int, int], condition: str,
                  case: str) -> Dict[str, np.ndarray]:
    """All maps of one sample: 'rgb' (H,W,3 RGB), 'depth' (H,W,3), 'lidar' (H,W,3),
    'event' (H,W), 'semantic' (H,W); all uint8."""
    h, w = size
    label = draw_scene(rng, size, SKY, BUILDING, ROAD, OBJECTS, ignore_value=255)
    colours = {c: DELIVER_PALETTE[c] for c in _ALL}
    gain, haze = CONDITION_LIGHT[condition]
    rgb = apply_lighting(render_rgb(rng, label, colours), gain, haze,
                         blur=max(3, w // 16) if case == 'motionblur' else 0)
    if condition == 'rain':
        rgb[rng.random((h, w)) < 0.01] = 220.0
    rgb *= {'underexposure': 0.12, 'overexposure': 2.5}.get(case, 1.0)  # camera failure

    depth = class_values(label, DEPTH, default=0.5)
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    hha = np.stack([255 * (1 - depth), 255 * (0.5 * rows + 0.5 * depth),
                    255 * class_values(label, INTENSITY, 0.5)], axis=-1)
    hha += rng.normal(0.0, 3.0, hha.shape).astype(np.float32)

    intensity = class_values(label, INTENSITY, default=0.0)
    lidar = np.zeros((h, w, 3), dtype=np.float32)
    scan = np.arange(0, h, 3)
    shift = rng.integers(-3, 4, len(scan)) if case == 'lidarjitter' else np.zeros(len(scan), int)
    for r, s in zip(scan, shift):
        lidar[r, :, 0] = 255 * np.roll(intensity[r], s)
        lidar[r, :, 1] = 255 * np.roll(1 - depth[r], s)
        lidar[r, :, 2] = 255 * (1 - r / h)
    lidar[label == SKY] = 0.0  # no LiDAR returns from the sky

    ev_label = label
    if case == 'eventlowres':
        ev_label = cv2.resize(label.astype(np.uint8), (w // 4, h // 4),
                              interpolation=cv2.INTER_NEAREST)
    event = class_edges(ev_label) * (60 + 190 * class_values(ev_label, INTENSITY, 0.5))
    event += (rng.random(event.shape) < 0.005) * 40.0
    if case == 'eventlowres':
        event = cv2.resize(event, (w, h), interpolation=cv2.INTER_NEAREST)

    return dict(rgb=to_uint8(rgb), depth=to_uint8(hha), lidar=to_uint8(lidar),
                event=to_uint8(event), semantic=label.astype(np.uint8))


def make_deliver(out: str, nums: Tuple[int, int, int], seed: int,
                 size: Tuple[int, int] = (128, 128)) -> Dict[str, List[str]]:
    """Write the tree; ``nums`` = samples in (training, validation, test).

    Returns:
        dict split folder -> list of RGB file names written.
    """
    written = {}
    folders = {'rgb': 'images', 'semantic': 'annotations', 'depth': 'depth', 'lidar': 'lidar',
               'event': 'event'}
    for s, (split, num) in enumerate(zip(SPLIT_DIRS, nums)):
        for top in folders.values():
            os.makedirs(osp.join(out, 'samples', top, split), exist_ok=True)
        names = []
        for i in range(num):
            condition, case, stem = sample_name(i, s)
            maps = render_sample(np.random.default_rng([seed, s, i]), size, condition, case)
            for kind, arr in maps.items():
                path = osp.join(out, 'samples', folders[kind], split, f'{stem}_{kind}_front.png')
                write_png(path, arr, rgb=kind == 'rgb')
            names.append(f'{stem}_rgb_front.png')
        written[split] = names
    test = sorted(written['test'])
    for subset in ('easy', 'hard'):
        lines = [n for n in test if parse_deliver_name(n).subset == subset]
        with open(osp.join(out, 'samples', 'images', f'test_{subset}.txt'), 'w') as f:
            f.writelines(line + '\n' for line in lines)
    return written
