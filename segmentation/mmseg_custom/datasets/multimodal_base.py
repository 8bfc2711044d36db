"""Shared base of the multimodal segmentation datasets (RGB + auxiliary modalities).

Every dataset lists samples from its real on-disk layout and produces one ``data_info`` dict
per sample with the keys consumed by ``LoadMultiModalImages`` / ``LoadMultiModalAnnotations``:

* ``img_path`` (str): the RGB image.
* ``seg_map_path`` (str | None): the label PNG (None only where a split has no labels).
* ``modality_paths`` (dict[str, str]): auxiliary modality name -> file, in config order.
* ``reduce_zero_label`` (bool), ``label_map`` (dict | None), ``seg_fields`` (list, empty).
* ``num_classes`` (int): number of classes; label values must be < num_classes or 255.
* dataset-specific keys (DeLiVER ``condition``/``case``/``subset``; FMB ``subset``;
  MUSES ``weather``/``time``).

Every listed file is checked for existence at listing time; a missing one raises
``FileNotFoundError`` naming it. Nothing is skipped silently.
"""
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from mmseg.datasets import BaseSegDataset


class MultiModalSegDataset(BaseSegDataset):
    """Base class: split/modality/subset validation, path checks and common data_info keys.

    Subclasses set ``AUX_MODALITIES`` (allowed auxiliary names), ``SPLITS`` (accepted split
    names -> on-disk split folder), ``SUBSETS`` (allowed ``subset`` values besides None),
    ``REDUCE_ZERO_LABEL``, and implement :meth:`list_samples`.

    Args:
        data_root (str): dataset root folder (e.g. ``data/DELIVER``).
        split (str): split name; see the subclass for the accepted values.
        modalities (Sequence[str]): ``'rgb'`` first, then the auxiliary modalities to load
            (distinct, each in ``AUX_MODALITIES``).
        subset (str | None): ``None`` (all samples), or a value of ``SUBSETS``.
        pipeline (list): data pipeline (configs of transforms or callables).
        metainfo (dict | None): mmseg metainfo override (e.g. a subset of ``classes``).
        test_mode, lazy_init, serialize_data, indices, max_refetch, ignore_index: as in
            mmengine ``BaseDataset`` / mmseg ``BaseSegDataset``.
    """

    AUX_MODALITIES: Tuple[str, ...] = ()
    SPLITS: Dict[str, str] = {}
    SUBSETS: Tuple[str, ...] = ()
    REDUCE_ZERO_LABEL: bool = False

    def __init__(self,
                 data_root: str,
                 split: str,
                 modalities: Sequence[str],
                 subset: Optional[str] = None,
                 pipeline: Sequence[Union[dict, Callable]] = (),
                 metainfo: Optional[dict] = None,
                 test_mode: bool = False,
                 lazy_init: bool = False,
                 serialize_data: bool = True,
                 indices: Optional[Union[int, Sequence[int]]] = None,
                 max_refetch: int = 1000,
                 ignore_index: int = 255) -> None:
        if not isinstance(data_root, (str, os.PathLike)):
            raise TypeError(f'{type(self).__name__}: data_root must be a path string, got '
                            f'{data_root!r} (a trailing comma in a config makes a tuple)')
        data_root = os.fspath(data_root)
        if split not in self.SPLITS:
            raise ValueError(f'{type(self).__name__}: unknown split {split!r}; expected one of '
                             f'{sorted(self.SPLITS)}')
        self.split = split
        self.split_dir = self.SPLITS[split]
        self.modalities = self._check_modalities(modalities)
        if subset is not None and subset not in self.SUBSETS:
            raise ValueError(f'{type(self).__name__}: unknown subset {subset!r}; expected None '
                             f'or one of {list(self.SUBSETS)}')
        self.subset = subset
        super().__init__(
            data_root=data_root,
            pipeline=list(pipeline),
            metainfo=metainfo,
            test_mode=test_mode,
            lazy_init=lazy_init,
            serialize_data=serialize_data,
            indices=indices,
            max_refetch=max_refetch,
            ignore_index=ignore_index,
            reduce_zero_label=self.REDUCE_ZERO_LABEL)

    @property
    def aux_modalities(self) -> List[str]:
        """Auxiliary modality names in config order (``modalities`` without ``'rgb'``)."""
        return self.modalities[1:]

    def _check_modalities(self, modalities: Sequence[str]) -> List[str]:
        mods = [modalities] if isinstance(modalities, str) else list(modalities)
        name = type(self).__name__
        if not mods or mods[0] != 'rgb':
            raise ValueError(f"{name}: modalities must start with 'rgb', got {mods}")
        aux = mods[1:]
        if len(set(aux)) != len(aux) or 'rgb' in aux:
            raise ValueError(f'{name}: modalities must be distinct, got {mods}')
        bad = [m for m in aux if m not in self.AUX_MODALITIES]
        if bad:
            raise ValueError(f'{name}: unsupported auxiliary modalities {bad}; allowed: '
                             f'{list(self.AUX_MODALITIES)}')
        return mods

    def root_path(self, *parts: str) -> str:
        """Join ``data_root`` with path components."""
        return osp.join(self.data_root, *parts)

    def resolve_path(self, path: str) -> str:
        """An absolute path as is; a relative one relative to ``data_root``."""
        return path if osp.isabs(path) else self.root_path(path)

    def list_samples(self) -> List[dict]:
        """Return per-sample dicts with ``img_path``, ``seg_map_path``, ``modality_paths`` and
        the dataset-specific keys, in a deterministic order."""
        raise NotImplementedError

    def load_data_list(self) -> List[dict]:
        """List the samples, check every file exists and add the common keys."""
        if not osp.isdir(self.data_root):
            raise FileNotFoundError(f'{type(self).__name__}: data_root {self.data_root!r} is '
                                    'not a directory')
        samples = self.list_samples()
        if not samples:
            raise ValueError(f'{type(self).__name__}: no samples found under {self.data_root!r} '
                             f'for split={self.split!r}, subset={self.subset!r}')
        num_classes = len(self._metainfo['classes'])
        for info in samples:
            paths = [info['img_path'], info['seg_map_path'], *info['modality_paths'].values()]
            for path in paths:
                if path is not None and not osp.isfile(path):
                    raise FileNotFoundError(f'{type(self).__name__}: missing file {path} '
                                            f'(sample {info["img_path"]})')
            info.update(label_map=self.label_map, reduce_zero_label=self.reduce_zero_label,
                        seg_fields=[], num_classes=num_classes)
        return samples


def read_list_file(path: str) -> List[str]:
    """Read a split list (one file name per line; blank lines ignored).

    Raises:
        FileNotFoundError: the list file does not exist.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'split list file {path} does not exist')
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def scan_dir(folder: str, suffix: str, recursive: bool = True) -> List[str]:
    """Sorted paths (relative to ``folder``) of the files ending with ``suffix``.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(f'folder {folder} does not exist')
    found = []
    if recursive:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            rel = osp.relpath(root, folder)
            found += [f if rel == '.' else osp.join(rel, f) for f in files if f.endswith(suffix)]
    else:
        found = [f for f in os.listdir(folder)
                 if f.endswith(suffix) and osp.isfile(osp.join(folder, f))]
    return sorted(found)
