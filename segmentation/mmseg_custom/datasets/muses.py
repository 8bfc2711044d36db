"""MUSES (SDK layout): frame camera + projected LiDAR or event maps, 19 Cityscapes classes.

Layout under ``data_root`` (spec data.md §3.1; the projected maps come from the MUSES SDK's
``project_sensors_to_rgb.py``)::

    frame_camera/<split>/<weather>/<time>/<stem>_frame_camera.png
    gt_semantic/<split>/<weather>/<time>/<stem>_gt_labelTrainIds.png      (train ids, 255 ignore)
    projected_to_rgb/lidar/<split>/<weather>/<time>/<stem>_lidar.npz       (arr_0 float32 HxWx3)
    projected_to_rgb/event_camera/<split>/<weather>/<time>/<stem>_event_camera.npz  (uint8 HxWx3)

split in train / val / test, weather in clear / rain / fog / snow, time in day / night.
"""
import os
import os.path as osp
from typing import Callable, List, Optional, Sequence, Union

from mmseg.registry import DATASETS

from .multimodal_base import MultiModalSegDataset, scan_dir

MUSES_CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
                 'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
                 'truck', 'bus', 'train', 'motorcycle', 'bicycle')
MUSES_PALETTE = (
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
    [0, 80, 100], [0, 0, 230], [119, 11, 32])
MUSES_WEATHERS = ('clear', 'rain', 'fog', 'snow')
MUSES_TIMES = ('day', 'night')
# modality -> (folder under projected_to_rgb/, file suffix)
MUSES_MODALITY_FILES = {'lidar': ('lidar', '_lidar.npz'),
                        'event': ('event_camera', '_event_camera.npz')}
IMG_SUFFIX = '_frame_camera.png'
SEG_SUFFIX = '_gt_labelTrainIds.png'


@DATASETS.register_module()
class MUSESDataset(MultiModalSegDataset):
    """MUSES in the SDK layout (see module docstring).

    Samples are ordered by ``<weather>_<time>_<file name>`` (the original's order).

    Args:
        data_root (str): the MUSES root (e.g. ``data/muses``).
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        modalities (Sequence[str]): ``'rgb'`` then any of ``'lidar'``, ``'event'``; default
            ``('rgb', 'lidar')``.
        weathers (Sequence[str] | None): keep only these weathers (default: all four).
        times (Sequence[str] | None): keep only ``'day'`` and/or ``'night'`` (default: both).
        with_labels (bool): list the ground truth (must exist). Use False for the test split
            of the real release, whose labels are withheld: ``seg_map_path`` is then None.
        pipeline, metainfo, test_mode, lazy_init, serialize_data, indices, max_refetch,
        ignore_index: see :class:`MultiModalSegDataset`.

    data_info keys: ``img_path``, ``seg_map_path``, ``modality_paths``, ``reduce_zero_label``
    (False), ``label_map``, ``seg_fields``, ``num_classes`` (19), ``weather``, ``time``.
    """

    METAINFO = dict(classes=MUSES_CLASSES, palette=[list(c) for c in MUSES_PALETTE])
    AUX_MODALITIES = tuple(MUSES_MODALITY_FILES)
    SPLITS = {'train': 'train', 'val': 'val', 'test': 'test'}
    REDUCE_ZERO_LABEL = False
    IMG_SUFFIX = IMG_SUFFIX

    def __init__(self,
                 data_root: str,
                 split: str,
                 modalities: Sequence[str] = ('rgb', 'lidar'),
                 weathers: Optional[Sequence[str]] = None,
                 times: Optional[Sequence[str]] = None,
                 with_labels: bool = True,
                 pipeline: Sequence[Union[dict, Callable]] = (),
                 **kwargs) -> None:
        self.weathers = self._check('weathers', weathers, MUSES_WEATHERS)
        self.times = self._check('times', times, MUSES_TIMES)
        self.with_labels = with_labels
        super().__init__(data_root=data_root, split=split, modalities=modalities,
                         pipeline=pipeline, **kwargs)

    @staticmethod
    def _check(what: str, values: Optional[Sequence[str]], allowed: Sequence[str]) -> List[str]:
        if values is None:
            return list(allowed)
        values = [values] if isinstance(values, str) else list(values)
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise ValueError(f'MUSESDataset: {what} must be a non-empty subset of '
                             f'{list(allowed)}, got {values}')
        return [v for v in allowed if v in values]

    def list_samples(self) -> List[dict]:
        img_root = self.root_path('frame_camera', self.split_dir)
        if not osp.isdir(img_root):
            raise FileNotFoundError(f'MUSESDataset: folder {img_root} does not exist')
        for entry in sorted(os.listdir(img_root)):
            if osp.isdir(osp.join(img_root, entry)) and entry not in MUSES_WEATHERS:
                raise ValueError(f'MUSESDataset: unexpected folder {osp.join(img_root, entry)}; '
                                 f'weather folders are {list(MUSES_WEATHERS)}')
        keyed = []
        for weather in self.weathers:
            for time in self.times:
                rel = osp.join(self.split_dir, weather, time)
                folder = self.root_path('frame_camera', rel)
                if not osp.isdir(folder):
                    continue  # not every weather x time combination exists in every split
                for name in scan_dir(folder, IMG_SUFFIX, recursive=False):
                    stem = name[:-len(IMG_SUFFIX)]
                    seg = (self.root_path('gt_semantic', rel, stem + SEG_SUFFIX)
                           if self.with_labels else None)
                    if seg is not None and not osp.isfile(seg):
                        raise FileNotFoundError(
                            f'MUSESDataset: missing label file {seg} (the real test split has '
                            'no public labels: use with_labels=False for it)')
                    keyed.append((f'{weather}_{time}_{name}', dict(
                        img_path=osp.join(folder, name),
                        seg_map_path=seg,
                        modality_paths={
                            m: self.root_path('projected_to_rgb', MUSES_MODALITY_FILES[m][0], rel,
                                              stem + MUSES_MODALITY_FILES[m][1])
                            for m in self.aux_modalities},
                        weather=weather,
                        time=time)))
        return [info for _, info in sorted(keyed, key=lambda kv: kv[0])]
