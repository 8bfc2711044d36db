"""Arrange the raw FMB release (train/, test/) into the layout read by ``FMBDataset``: carve the
validation division out of train and split every division into Visible/easy and Visible/hard.

Example (from the repository root)::

    python segmentation/tools/prepare_fmb.py /path/to/FMB --lists-dir /path/to/fmb_lists \
        --out segmentation/data/FMB

See ``datasets/FMB/README.md`` and ``mmseg_custom.datasets.prepare.fmb``.
"""
import argparse
from typing import List, Optional

from mmseg_custom.datasets.prepare.fmb import MODES, prepare_fmb


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('raw_root', help='unpacked FMB release (holds train/ and test/)')
    parser.add_argument('--lists-dir', required=True,
                        help='folder with {train,val,test}_{easy,hard}_files.txt')
    parser.add_argument('--out', default=None,
                        help='output root (default: raw_root, in place, files are moved)')
    parser.add_argument('--mode', choices=MODES, default=None,
                        help='copy | move | symlink (default: move in place, else copy)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    prepare_fmb(args.raw_root, args.lists_dir, args.out, args.mode)


if __name__ == '__main__':
    main()
