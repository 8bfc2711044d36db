"""FMB (prepared layout): RGB + infrared, 14 classes, raw label 0 = unlabeled.

Prepared layout (``tools/prepare_fmb.py``; spec data.md §2.2)::

    <data_root>/<split>/Visible/{easy,hard}/<id>.png    RGB, split = train / val / test
    <data_root>/<split>/Infrared/<id>.png               8-bit grayscale
    <data_root>/<split>/Label/<id>.png                  raw ids: 0 = unlabeled, 1..14

``val`` is carved out of the original training set by the preparation tool. Labels are
reduced at load time (``reduce_zero_label=True``): 0 -> 255 (ignore), k -> k - 1.
"""
import os.path as osp
from typing import Callable, List, Optional, Sequence, Union

from mmseg.registry import DATASETS

from .multimodal_base import MultiModalSegDataset, read_list_file, scan_dir

FMB_CLASSES = ('Road', 'Sidewalk', 'Building', 'Traffic Light', 'Traffic Sign', 'Vegetation',
               'Sky', 'Person', 'Car', 'Truck', 'Bus', 'Motorcycle', 'Bicycle', 'Pole')
FMB_PALETTE = (
    [179, 228, 228], [181, 57, 133], [67, 162, 177], [200, 178, 50], [132, 45, 199],
    [66, 172, 84], [179, 73, 79], [76, 99, 166], [66, 121, 253], [137, 165, 91],
    [155, 97, 152], [105, 153, 140], [222, 215, 158], [135, 113, 90])
FMB_SUBSETS = ('easy', 'hard')


@DATASETS.register_module()
class FMBDataset(MultiModalSegDataset):
    """FMB in the prepared layout (see module docstring).

    Samples are the union of the selected subsets, ordered by file name (deterministic; the
    original's random shuffle of ``FMB_val`` is not reproduced).

    Args:
        data_root (str): the FMB root (e.g. ``data/FMB``).
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        modalities (Sequence[str]): ``('rgb', 'infrared')`` (the default) or ``('rgb',)``.
        subset (str | None): ``None`` = easy + hard, ``'easy'`` or ``'hard'``.
        easy_list, hard_list (str | None): split-list files (one ``<id>.png`` per line, e.g.
            ``test_easy_files.txt``); relative paths are relative to ``data_root``. When a
            needed list is given, its entries are the subset's samples and each must exist in
            ``<split>/Visible/<subset>/`` (error naming the entry otherwise); when it is not
            given, the subset's samples are the files of that folder.
        pipeline, metainfo, test_mode, lazy_init, serialize_data, indices, max_refetch,
        ignore_index: see :class:`MultiModalSegDataset`.

    data_info keys: ``img_path``, ``seg_map_path``, ``modality_paths`` (``{'infrared': ...}``),
    ``reduce_zero_label`` (True), ``label_map``, ``seg_fields``, ``num_classes`` (14; checked
    after the zero-label reduction), ``subset``.
    """

    METAINFO = dict(classes=FMB_CLASSES, palette=[list(c) for c in FMB_PALETTE])
    AUX_MODALITIES = ('infrared',)
    SPLITS = {'train': 'train', 'val': 'val', 'test': 'test'}
    SUBSETS = FMB_SUBSETS
    REDUCE_ZERO_LABEL = True
    IMG_SUFFIX = '.png'

    def __init__(self,
                 data_root: str,
                 split: str,
                 modalities: Sequence[str] = ('rgb', 'infrared'),
                 subset: Optional[str] = None,
                 easy_list: Optional[str] = None,
                 hard_list: Optional[str] = None,
                 pipeline: Sequence[Union[dict, Callable]] = (),
                 **kwargs) -> None:
        self.lists = {'easy': easy_list, 'hard': hard_list}
        super().__init__(data_root=data_root, split=split, modalities=modalities,
                         subset=subset, pipeline=pipeline, **kwargs)

    def _names(self, subset: str) -> List[str]:
        folder = self.root_path(self.split_dir, 'Visible', subset)
        if not osp.isdir(folder):
            raise FileNotFoundError(f'FMBDataset: folder {folder} does not exist; arrange the '
                                    'release with tools/prepare_fmb.py (datasets/FMB/README.md)')
        if self.lists[subset] is None:
            return scan_dir(folder, '.png', recursive=False)
        list_path = self.resolve_path(self.lists[subset])
        names = read_list_file(list_path)
        for name in names:
            if not osp.isfile(osp.join(folder, name)):
                raise FileNotFoundError(f'{list_path} names {name}, which does not exist in '
                                        f'{folder}')
        return names

    def list_samples(self) -> List[dict]:
        entries = {}
        for subset in ([self.subset] if self.subset else FMB_SUBSETS):
            for name in self._names(subset):
                if name in entries:
                    raise ValueError(f'FMBDataset: {name} is listed twice (subsets '
                                     f'{entries[name]} and {subset}, split {self.split!r})')
                entries[name] = subset
        split_dir = self.root_path(self.split_dir)
        return [dict(img_path=osp.join(split_dir, 'Visible', subset, name),
                     seg_map_path=osp.join(split_dir, 'Label', name),
                     modality_paths={m: osp.join(split_dir, 'Infrared', name)
                                     for m in self.aux_modalities},
                     subset=subset)
                for name, subset in sorted(entries.items())]
