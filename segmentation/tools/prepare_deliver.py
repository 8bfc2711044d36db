"""Convert the raw DeLiVER release into the layout read by ``DeliverDataset``.

Example (from the repository root)::

    python segmentation/tools/prepare_deliver.py /path/to/DELIVER -o segmentation/data/DELIVER

See ``datasets/DELIVER/README.md`` and ``mmseg_custom.datasets.prepare.deliver``.
"""
import argparse
from typing import List, Optional

from mmseg_custom.datasets.prepare.deliver import RAW_MODALITIES, RAW_SPLITS, prepare_deliver


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('raw_root', help='raw release root (holds img/, hha/, lidar/, event/, '
                        'semantic/)')
    parser.add_argument('-o', '--out-dir', required=True,
                        help='output root (e.g. segmentation/data/DELIVER)')
    parser.add_argument('--splits', nargs='+', default=list(RAW_SPLITS), choices=list(RAW_SPLITS))
    parser.add_argument('--modalities', nargs='+', default=list(RAW_MODALITIES),
                        choices=list(RAW_MODALITIES))
    parser.add_argument('--workers', type=int, default=0, help='conversion processes (0 = serial)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    prepare_deliver(args.raw_root, args.out_dir, args.splits, args.modalities, args.workers)


if __name__ == '__main__':
    main()
