"""Write a small synthetic dataset tree in the real converted layout of DeLiVER, FMB or MUSES.

Example::

    python segmentation/tools/make_synthetic_dataset.py --format deliver \
        --out segmentation/data/DELIVER_synth --num 24 --seed 0

The scenes have learnable structure (objects whose class shows in RGB and in the auxiliary
map); the file names carry the real condition/case (DeLiVER) or weather/time (MUSES) parts,
and the easy/hard list files are written next to the tree (see ``mmseg_custom.datasets.synthetic``).
"""
import argparse
from typing import List, Optional

from mmengine.logging import print_log

from mmseg_custom.datasets.synthetic import DEFAULT_SIZES, make_synthetic


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--format', required=True, choices=sorted(DEFAULT_SIZES))
    parser.add_argument('--out', required=True, help='output root (created if missing)')
    parser.add_argument('--num', type=int, required=True, help='training samples')
    parser.add_argument('--num-val', type=int, default=None,
                        help='validation samples (default: --num)')
    parser.add_argument('--num-test', type=int, default=None,
                        help='test samples (default: --num)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--size', type=int, nargs='+', default=None, metavar='N',
                        help='image size: H [W] (default per format: deliver 128 128, '
                        'fmb 120 160, muses 108 192; real sizes: 1042, 600 800, 1080 1920)')
    parser.add_argument('--lists-dir', default=None,
                        help='fmb only: take ids and easy/hard membership from the split lists '
                        '<split>_{easy,hard}_files.txt in this folder')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    size = None
    if args.size is not None:
        if len(args.size) not in (1, 2):
            raise SystemExit('--size takes H or H W')
        size = (args.size[0], args.size[-1])
    nums = (args.num, args.num if args.num_val is None else args.num_val,
            args.num if args.num_test is None else args.num_test)
    make_synthetic(args.format, args.out, nums, args.seed, size, lists_dir=args.lists_dir)
    print_log(f'wrote synthetic {args.format} dataset to {args.out} '
              f'(train/val/test = {nums[0]}/{nums[1]}/{nums[2]})', logger='current')


if __name__ == '__main__':
    main()
