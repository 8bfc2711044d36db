"""DeLiVER (converted layout): RGB + HHA depth / LiDAR / event, 25 classes.

Converted layout (``tools/prepare_deliver.py``; spec data.md §1.2)::

    <data_root>/samples/images/<split>/<condition>_<scene>_<frame>_rgb_front.png
    <data_root>/samples/annotations/<split>/<condition>_<scene>_<frame>_semantic_front.png
    <data_root>/samples/{depth,lidar,event}/<split>/<condition>_<scene>_<frame>_<kind>_front.png

with split folders ``training`` / ``validation`` / ``test``. Labels are 0..24, 255 = ignore.
The weather condition and the sensor-failure case are parsed structurally from the file name.
"""
import os.path as osp
import re
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Union

from mmseg.registry import DATASETS

from .multimodal_base import MultiModalSegDataset, read_list_file, scan_dir

DELIVER_CLASSES = (
    'Building', 'Fence', 'Other', 'Pedestrian', 'Pole', 'RoadLine', 'Road', 'SideWalk',
    'Vegetation', 'Cars', 'Wall', 'TrafficSign', 'Sky', 'Ground', 'Bridge', 'RailTrack',
    'GroundRail', 'TrafficLight', 'Static', 'Dynamic', 'Water', 'Terrain', 'TwoWheeler', 'Bus',
    'Truck')
DELIVER_PALETTE = (
    [70, 70, 70], [100, 40, 40], [55, 90, 80], [220, 20, 60], [153, 153, 153], [157, 234, 50],
    [128, 64, 128], [244, 35, 232], [107, 142, 35], [0, 0, 142], [102, 102, 156],
    [220, 220, 0], [70, 130, 180], [81, 0, 81], [150, 100, 100], [230, 150, 140],
    [180, 165, 180], [250, 170, 30], [110, 190, 160], [170, 120, 50], [45, 60, 150],
    [145, 170, 100], [0, 0, 230], [0, 60, 100], [0, 0, 70])

DELIVER_CONDITIONS = ('cloud', 'fog', 'night', 'rain', 'sun')
DELIVER_CASES = ('motionblur', 'overexposure', 'underexposure', 'lidarjitter', 'eventlowres')
DELIVER_KINDS = ('rgb', 'depth', 'lidar', 'event', 'semantic')
# Case that makes a sample "RGB-hard"; every other case (incl. ordinary) is "RGB-easy".
HARD_CASE = 'underexposure'

DELIVER_SPLITS = {'train': 'training', 'val': 'validation', 'test': 'test',
                  'training': 'training', 'validation': 'validation'}

_NAME_RE = re.compile(r'^(?P<condition>[^_]+)_(?P<scene>.+)_(?P<frame>[^_]+)_'
                      r'(?P<kind>[a-z]+)_front\.png$')


class DeliverName(NamedTuple):
    """Parsed converted DeLiVER file name ``<condition>_<scene>_<frame>_<kind>_front.png``."""
    condition: str
    scene: str
    frame: str
    kind: str
    case: str

    @property
    def subset(self) -> str:
        """``'hard'`` for the underexposure case, else ``'easy'``."""
        return 'hard' if self.case == HARD_CASE else 'easy'


def parse_deliver_name(path: str) -> DeliverName:
    """Parse a converted DeLiVER file name (any directory part is ignored).

    condition = the text before the first ``_`` (must be a DeLiVER condition); scene = the text
    between the condition and the frame id; case = the last ``_``-component of the scene when it
    is one of the five cases, else ``'ordinary'``. Words are matched whole: a condition or case
    word inside another word (``terrain``, ``training``) never matches.

    Raises:
        ValueError: naming the file, if the name does not follow the pattern or the condition /
            kind is unknown.
    """
    name = osp.basename(path)
    m = _NAME_RE.match(name)
    if m is None:
        raise ValueError(f'{path}: not a converted DeLiVER file name '
                         "'<condition>_<scene>_<frame>_<kind>_front.png'")
    condition, scene, frame, kind = m.group('condition', 'scene', 'frame', 'kind')
    if condition not in DELIVER_CONDITIONS:
        raise ValueError(f'{path}: unknown DeLiVER condition {condition!r}; expected one of '
                         f'{list(DELIVER_CONDITIONS)}')
    if kind not in DELIVER_KINDS:
        raise ValueError(f'{path}: unknown DeLiVER file kind {kind!r}; expected one of '
                         f'{list(DELIVER_KINDS)}')
    last = scene.rsplit('_', 1)[-1]
    case = last if last in DELIVER_CASES else 'ordinary'
    return DeliverName(condition, scene, frame, kind, case)


def deliver_sibling_name(rgb_name: str, kind: str) -> str:
    """File name of modality/label ``kind`` for an RGB name (``..._rgb_front.png``)."""
    suffix = '_rgb_front.png'
    if not rgb_name.endswith(suffix):
        raise ValueError(f'{rgb_name}: DeLiVER RGB file names end with {suffix!r}')
    return rgb_name[:-len(suffix)] + f'_{kind}_front.png'


@DATASETS.register_module()
class DeliverDataset(MultiModalSegDataset):
    """DeLiVER in the converted layout (see module docstring).

    Args:
        data_root (str): folder holding ``samples/`` (e.g. ``data/DELIVER``).
        split (str): ``'train'``/``'val'``/``'test'`` or the folder names
            ``'training'``/``'validation'``.
        modalities (Sequence[str]): ``'rgb'`` then any of ``'depth'`` (HHA), ``'lidar'``,
            ``'event'``; default ``('rgb', 'depth')``.
        subset (str | None): ``None`` = all samples; ``'easy'`` = every case but underexposure;
            ``'hard'`` = underexposure only (structural, from the file name).
        subset_list (str | None): optional published list (``test_easy.txt`` /
            ``test_hard.txt``: one RGB file name per line; relative paths are relative to
            ``data_root``). Needs ``subset``; the samples are exactly the listed ones (sorted);
            each must exist in the split's image folder and belong to ``subset`` by the
            structural rule, otherwise an error names the entry.
        pipeline, metainfo, test_mode, lazy_init, serialize_data, indices, max_refetch,
        ignore_index: see :class:`MultiModalSegDataset`.

    data_info keys: ``img_path``, ``seg_map_path``, ``modality_paths``, ``reduce_zero_label``
    (False), ``label_map``, ``seg_fields``, ``num_classes`` (25), ``condition``, ``case``,
    ``subset``.
    """

    METAINFO = dict(classes=DELIVER_CLASSES, palette=[list(c) for c in DELIVER_PALETTE])
    AUX_MODALITIES = ('depth', 'lidar', 'event')
    SPLITS = DELIVER_SPLITS
    SUBSETS = ('easy', 'hard')
    REDUCE_ZERO_LABEL = False
    IMG_SUFFIX = '_rgb_front.png'

    def __init__(self,
                 data_root: str,
                 split: str,
                 modalities: Sequence[str] = ('rgb', 'depth'),
                 subset: Optional[str] = None,
                 subset_list: Optional[str] = None,
                 pipeline: Sequence[Union[dict, Callable]] = (),
                 **kwargs) -> None:
        if subset_list is not None and subset is None:
            raise ValueError('DeliverDataset: subset_list needs subset="easy" or "hard"')
        self.subset_list = subset_list
        super().__init__(data_root=data_root, split=split, modalities=modalities,
                         subset=subset, pipeline=pipeline, **kwargs)

    def _folder(self, kind: str) -> str:
        top = {'rgb': 'images', 'semantic': 'annotations'}.get(kind, kind)
        return self.root_path('samples', top, self.split_dir)

    def _rgb_names(self) -> List[str]:
        img_dir = self._folder('rgb')
        if self.subset_list is None:
            return scan_dir(img_dir, '_rgb_front.png')
        list_path = self.resolve_path(self.subset_list)
        names = read_list_file(list_path)
        for name in names:
            if not osp.isfile(osp.join(img_dir, name)):
                raise FileNotFoundError(f'{list_path} names {name}, which does not exist in '
                                        f'{img_dir}')
            subset = parse_deliver_name(name).subset
            if subset != self.subset:
                raise ValueError(f'{list_path} names {name}, which is RGB-{subset} by its case, '
                                 f'but the list is used as subset {self.subset!r}')
        if len(set(names)) != len(names):
            raise ValueError(f'{list_path} names some files more than once')
        return sorted(names)

    def list_samples(self) -> List[dict]:
        samples = []
        for rel in self._rgb_names():
            parsed = parse_deliver_name(rel)
            if parsed.kind != 'rgb':
                raise ValueError(f'{rel}: expected an RGB file name (kind "rgb")')
            if self.subset is not None and parsed.subset != self.subset:
                continue
            modality_paths: Dict[str, str] = {
                m: osp.join(self._folder(m), deliver_sibling_name(rel, m))
                for m in self.aux_modalities}
            samples.append(dict(
                img_path=osp.join(self._folder('rgb'), rel),
                seg_map_path=osp.join(self._folder('semantic'),
                                      deliver_sibling_name(rel, 'semantic')),
                modality_paths=modality_paths,
                condition=parsed.condition,
                case=parsed.case,
                subset=parsed.subset))
        return samples
