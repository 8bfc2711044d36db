"""Arrange the raw FMB release into the prepared layout read by ``FMBDataset``.

Raw (the two zips of the FMB release unpacked into one folder)::

    <raw>/{train,test}/{Visible,Infrared,Label[,color]}/<id>.png

Split lists (six files ``{train,val,test}_{easy,hard}_files.txt``, one ``<id>.png`` per line;
the validation ids are part of the raw ``train`` folder). Output::

    <out>/<division>/Visible/{easy,hard}/<id>.png
    <out>/<division>/{Infrared,Label[,color]}/<id>.png
    <out>/splits/<division>_{easy,hard}_files.txt      (copies of the lists)

for division in train / val / test. Files are copied, moved (in place) or symlinked. A list
naming a file that is missing from the raw tree, or an id listed twice, raises an error naming
it; ids present in the raw tree but in no list are reported.
"""
import os
import os.path as osp
import shutil
from typing import Dict, List, Optional, Sequence

from mmengine.logging import print_log

from ..multimodal_base import read_list_file

DIVISIONS = ('train', 'val', 'test')
SOURCE = {'train': 'train', 'val': 'train', 'test': 'test'}  # val is carved out of train
SUBSETS = ('easy', 'hard')
MODES = ('copy', 'move', 'symlink')


def _place(src: str, dst: str, mode: str) -> None:
    if osp.abspath(src) == osp.abspath(dst):
        return
    os.makedirs(osp.dirname(dst), exist_ok=True)
    if mode == 'copy':
        shutil.copy2(src, dst)
    elif mode == 'move':
        shutil.move(src, dst)
    else:
        if osp.lexists(dst):
            os.remove(dst)
        os.symlink(osp.abspath(src), dst)


def load_lists(lists_dir: str) -> Dict[str, Dict[str, List[str]]]:
    """division -> subset -> names, with every id in exactly one list per source split.

    Raises:
        FileNotFoundError: a list file is missing (named).
        ValueError: an id appears in two lists of the same raw split (named).
    """
    lists = {d: {s: read_list_file(osp.join(lists_dir, f'{d}_{s}_files.txt')) for s in SUBSETS}
             for d in DIVISIONS}
    owner: Dict[tuple, str] = {}
    for d in DIVISIONS:
        for s in SUBSETS:
            for name in lists[d][s]:
                key = (SOURCE[d], name)
                if key in owner:
                    raise ValueError(f'{name} is listed in both {owner[key]} and '
                                     f'{d}_{s}_files.txt')
                owner[key] = f'{d}_{s}_files.txt'
    return lists


def prepare_fmb(raw_root: str, lists_dir: str, out_root: Optional[str] = None,
                mode: Optional[str] = None,
                folders: Sequence[str] = ('Infrared', 'Label', 'color')) -> Dict[str, int]:
    """Build the prepared tree; returns the number of samples per division.

    Args:
        raw_root: the unpacked release (``train/`` and ``test/``).
        lists_dir: folder with the six ``<division>_<subset>_files.txt`` lists.
        out_root: output root; None = ``raw_root`` (in place, files are moved).
        mode: 'copy' | 'move' | 'symlink'; default 'move' in place, else 'copy'. In place only
            'move' is allowed.
        folders: per-id folders besides ``Visible`` to carry over; ``Infrared`` and ``Label``
            are required, others (``color``) are carried where present in the raw split.

    A file already at its destination (a previous in-place run) counts as done.
    """
    out_root = raw_root if out_root is None else out_root
    in_place = osp.abspath(out_root) == osp.abspath(raw_root)
    mode = mode or ('move' if in_place else 'copy')
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    if in_place and mode != 'move':
        raise ValueError('preparing FMB in place (out_root == raw_root) needs mode="move"')
    lists = load_lists(lists_dir)
    for d in DIVISIONS:
        if not osp.isdir(osp.join(raw_root, SOURCE[d], 'Visible')) and not osp.isdir(
                osp.join(out_root, d, 'Visible')):
            raise FileNotFoundError(f'raw FMB folder {osp.join(raw_root, SOURCE[d], "Visible")} '
                                    'does not exist')
    plan = []  # (src, dst) pairs, all checked before anything is touched
    for d in DIVISIONS:
        src_split = osp.join(raw_root, SOURCE[d])
        extra = [f for f in folders if f not in ('Infrared', 'Label')
                 and osp.isdir(osp.join(src_split, f))]
        for s in SUBSETS:
            for name in lists[d][s]:
                pairs = [(osp.join(src_split, 'Visible', name),
                          osp.join(out_root, d, 'Visible', s, name))]
                pairs += [(osp.join(src_split, f, name), osp.join(out_root, d, f, name))
                          for f in ('Infrared', 'Label', *extra)]
                for src, dst in pairs:
                    if not osp.isfile(src) and not osp.isfile(dst):
                        raise FileNotFoundError(f'{d}_{s}_files.txt names {name}, but {src} '
                                                'does not exist')
                plan += [(src, dst) for src, dst in pairs if osp.isfile(src)]
    for src, dst in plan:
        _place(src, dst, mode)
    os.makedirs(osp.join(out_root, 'splits'), exist_ok=True)
    for d in DIVISIONS:
        for s in SUBSETS:
            src = osp.join(lists_dir, f'{d}_{s}_files.txt')
            dst = osp.join(out_root, 'splits', f'{d}_{s}_files.txt')
            if osp.abspath(src) != osp.abspath(dst):
                shutil.copyfile(src, dst)
    for split in ('train', 'test'):
        listed = {n for d in DIVISIONS if SOURCE[d] == split for s in SUBSETS for n in lists[d][s]}
        vis = osp.join(raw_root, split, 'Visible')
        unlisted = sorted(f for f in os.listdir(vis) if f.endswith('.png')
                          and f not in listed) if osp.isdir(vis) else []
        if unlisted:
            print_log(f'FMB: {len(unlisted)} images in {vis} are in no split list '
                      f'(e.g. {unlisted[0]}); they are not part of any division',
                      logger='current')
    counts = {d: sum(len(lists[d][s]) for s in SUBSETS) for d in DIVISIONS}
    print_log(f'FMB prepared under {out_root}: ' +
              ', '.join(f'{d} {n}' for d, n in counts.items()), logger='current')
    return counts
