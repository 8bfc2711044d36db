"""Learnable synthetic street scenes shared by the per-dataset generators.

A scene is a label map of *dataset class ids*: a sky band on top, a building band, a road at
the bottom, and a few rectangles/discs of object classes; optionally a small patch of the
ignore/unlabeled value. Renderers turn it into an RGB image (class colour + noise) and into
auxiliary maps where every class has its own value (depth, intensity, temperature...), so a
small model can learn the classes from either modality.
"""
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np


def draw_scene(rng: np.random.Generator,
               size: Tuple[int, int],
               sky: int,
               building: int,
               road: int,
               objects: Sequence[int],
               ignore_value: Optional[int] = None,
               num_objects: Tuple[int, int] = (3, 7)) -> np.ndarray:
    """Draw one label map.

    Args:
        rng: random generator (the only source of randomness).
        size: (H, W).
        sky, building, road: class ids of the three background bands.
        objects: class ids the objects are drawn from.
        ignore_value: if given, a small patch with this value (ignore / unlabeled) is added.
        num_objects: inclusive range of the number of objects.

    Returns:
        (H, W) int64 label map.
    """
    h, w = size
    label = np.full((h, w), road, dtype=np.int64)
    sky_end = int(h * rng.uniform(0.2, 0.35))
    build_end = int(h * rng.uniform(0.45, 0.6))
    label[:sky_end] = sky
    label[sky_end:build_end] = building
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(num_objects[0], num_objects[1] + 1))):
        cls = int(rng.choice(objects))
        ch, cw = rng.uniform(0.12, 0.35) * h, rng.uniform(0.08, 0.3) * w
        cy, cx = rng.uniform(sky_end, h - ch / 2), rng.uniform(cw / 2, w - cw / 2)
        if rng.random() < 0.5:
            mask = (np.abs(yy - cy) <= ch / 2) & (np.abs(xx - cx) <= cw / 2)
        else:
            mask = ((yy - cy) / (ch / 2)) ** 2 + ((xx - cx) / (cw / 2)) ** 2 <= 1
        label[mask] = cls
    if ignore_value is not None:
        ph, pw = max(2, h // 16), max(2, w // 16)
        y0, x0 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        label[y0:y0 + ph, x0:x0 + pw] = ignore_value
    return label


def render_rgb(rng: np.random.Generator, label: np.ndarray,
               colours: Dict[int, Sequence[int]], noise: float = 10.0) -> np.ndarray:
    """RGB image (H, W, 3) float32 in 0..255: class colour + per-pixel Gaussian noise + a
    horizontal texture. Values not in ``colours`` (ignore) are mid-grey."""
    img = np.full(label.shape + (3,), 128.0, dtype=np.float32)
    for cls, colour in colours.items():
        img[label == cls] = colour
    img += rng.normal(0.0, noise, img.shape).astype(np.float32)
    img += 6.0 * np.sin(np.arange(label.shape[1], dtype=np.float32) / 3.0)[None, :, None]
    return img


def class_values(label: np.ndarray, values: Dict[int, float], default: float = 0.0) -> np.ndarray:
    """(H, W) float32 map with ``values[cls]`` at the pixels of each class."""
    out = np.full(label.shape, default, dtype=np.float32)
    for cls, v in values.items():
        out[label == cls] = v
    return out


def class_edges(label: np.ndarray) -> np.ndarray:
    """(H, W) bool map of pixels whose right or lower neighbour has another class."""
    edges = np.zeros(label.shape, dtype=bool)
    edges[:, :-1] |= label[:, :-1] != label[:, 1:]
    edges[:-1, :] |= label[:-1, :] != label[1:, :]
    return edges


def apply_lighting(img: np.ndarray, gain: float = 1.0, haze: float = 0.0,
                   blur: int = 0) -> np.ndarray:
    """Scale brightness, blend towards grey (fog) and box-blur horizontally (motion)."""
    out = img * gain
    if haze:
        out = (1 - haze) * out + haze * 200.0
    if blur > 1:
        out = cv2.blur(out, (blur, 1))
    return out


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round and clip to uint8."""
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_png(path: str, img: np.ndarray, rgb: bool = False) -> None:
    """Write an 8-bit PNG; ``rgb=True`` means (H, W, 3) in RGB order (converted for OpenCV)."""
    if img.dtype != np.uint8:
        raise TypeError(f'{path}: expected uint8, got {img.dtype}')
    if rgb:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(path, img):
        raise OSError(f'could not write {path}')
