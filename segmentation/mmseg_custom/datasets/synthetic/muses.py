"""Synthetic MUSES tree in the SDK layout (spec data.md §3.1-3.2).

Writes, for split in train/val/test and the sample's weather/time::

    frame_camera/<split>/<weather>/<time>/<stem>_frame_camera.png                 8-bit RGB
    gt_semantic/<split>/<weather>/<time>/<stem>_gt_labelTrainIds.png              train ids + 255
    projected_to_rgb/lidar/<split>/<weather>/<time>/<stem>_lidar.npz              arr_0 float32
    projected_to_rgb/event_camera/<split>/<weather>/<time>/<stem>_event_camera.npz arr_0 uint8

``stem`` = ``REC<rec>_frame_<frame>``. LiDAR ``arr_0`` = (range m, intensity, height m) on
sparse scan lines dilated by 2x2, 0 where no point; event ``arr_0`` = (positive count,
negative count, 0) at object boundaries plus noise. Labels are written for the test split
too (the real test labels are withheld; the synthetic ones let the test path be evaluated).
Sample ``i`` has weather ``MUSES_WEATHERS[i % 4]`` and time ``MUSES_TIMES[(i // 4) % 2]``.
"""
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import numpy as np

from ..muses import MUSES_PALETTE, MUSES_TIMES, MUSES_WEATHERS
from .scene import apply_lighting, class_edges, class_values, draw_scene, render_rgb, to_uint8
from .scene import write_png

SPLITS = ('train', 'val', 'test')
SKY, BUILDING, ROAD = 10, 2, 0
OBJECTS = (1, 4, 5, 7, 8, 11, 13, 14, 18)
_ALL = (SKY, BUILDING, ROAD) + OBJECTS
RANGE_M = {BUILDING: 40.0, ROAD: 15.0, **{c: 5.0 + 3.0 * k for k, c in enumerate(OBJECTS)}}
INTENSITY = {c: 0.1 + 0.9 * k / (len(_ALL) - 1) for k, c in enumerate(reversed(_ALL))}
WEATHER_LIGHT = {'clear': (1.0, 0.0), 'rain': (0.8, 0.1), 'fog': (0.9, 0.5), 'snow': (1.0, 0.3)}


def sample_location(i: int, split_index: int) -> Tuple[str, str, str]:
    """(weather, time, stem) of sample ``i`` of a split."""
    weather, time = MUSES_WEATHERS[i % 4], MUSES_TIMES[(i // 4) % 2]
    stem = f'REC{split_index * 100 + i // 8:04d}_frame_{1000 * (split_index + 1) + i:06d}'
    return weather, time, stem


def render_sample(rng: np.random.Generator, size: Tuple[int, int], weather: str,
                  time: str) -> Dict[str, np.ndarray]:
    """'rgb' (H,W,3 uint8 RGB), 'label' (H,W uint8), 'lidar' (H,W,3 float32),
    'event' (H,W,3 uint8)."""
    h, w = size
    label = draw_scene(rng, size, SKY, BUILDING, ROAD, OBJECTS, ignore_value=255)
    gain, haze = WEATHER_LIGHT[weather]
    if time == 'night':
        gain *= 0.3
    rgb = apply_lighting(render_rgb(rng, label, {c: MUSES_PALETTE[c] for c in _ALL}), gain, haze)
    if weather in ('rain', 'snow'):
        rgb[rng.random((h, w)) < 0.01] = 230.0

    points = np.zeros((h, w), dtype=bool)
    points[::4, ::2] = True
    points &= label != SKY
    points = cv2.dilate(points.astype(np.uint8), np.ones((2, 2), np.uint8)).astype(bool)
    points &= label != SKY
    rows = np.broadcast_to(np.linspace(3.0, -1.5, h, dtype=np.float32)[:, None], (h, w))
    lidar = np.stack([class_values(label, RANGE_M, 20.0) + rng.normal(0, 0.2, (h, w)),
                      100 * class_values(label, INTENSITY, 0.5), rows], axis=-1)
    lidar = (lidar * points[..., None]).astype(np.float32)

    edges = class_edges(label)
    counts = np.rint(1 + 5 * class_values(label, INTENSITY, 0.5)) * edges
    noise = rng.random((h, w)) < (0.02 if time == 'night' else 0.005)
    event = np.zeros((h, w, 3), dtype=np.uint8)
    event[..., 0] = counts + noise
    event[..., 1] = np.rint(counts / 2) + (rng.random((h, w)) < 0.005)
    return dict(rgb=to_uint8(rgb), label=label.astype(np.uint8), lidar=lidar, event=event)


def make_muses(out: str, nums: Tuple[int, int, int], seed: int,
               size: Tuple[int, int] = (108, 192)) -> Dict[str, List[str]]:
    """Write the tree; ``nums`` = samples in (train, val, test).

    Returns:
        dict split -> list of ``<weather>/<time>/<stem>`` written.
    """
    written = {}
    for s, (split, num) in enumerate(zip(SPLITS, nums)):
        written[split] = []
        for i in range(num):
            weather, time, stem = sample_location(i, s)
            rel = osp.join(split, weather, time)
            maps = render_sample(np.random.default_rng([seed, s, i]), size, weather, time)
            folders = {
                'rgb': osp.join(out, 'frame_camera', rel),
                'label': osp.join(out, 'gt_semantic', rel),
                'lidar': osp.join(out, 'projected_to_rgb', 'lidar', rel),
                'event': osp.join(out, 'projected_to_rgb', 'event_camera', rel)}
            for folder in folders.values():
                os.makedirs(folder, exist_ok=True)
            write_png(osp.join(folders['rgb'], stem + '_frame_camera.png'), maps['rgb'], rgb=True)
            write_png(osp.join(folders['label'], stem + '_gt_labelTrainIds.png'), maps['label'])
            np.savez_compressed(osp.join(folders['lidar'], stem + '_lidar.npz'), maps['lidar'])
            np.savez_compressed(osp.join(folders['event'], stem + '_event_camera.npz'),
                                maps['event'])
            written[split].append(osp.join(weather, time, stem))
    return written
