"""Convert an original MM SAM-Adapter release checkpoint (mmcv 1.x ``.pth``) into a
checkpoint this codebase loads with ``strict=True``.

    python segmentation/tools/convert_released_checkpoint.py SRC DST --config CONFIG [--trust]

The state dict is validated against the model that CONFIG builds (built on the meta
device, nothing is allocated); on any missing, unexpected or differently shaped key the
tool fails and names them. The optimizer state is dropped; CLASSES/PALETTE become
``meta.dataset_meta``. ``--trust`` loads SRC with ``weights_only=False`` (only needed if the
file holds classes outside the allow-list; it can run code stored in the file).
"""
from __future__ import annotations

import argparse
import os
import sys

import mmseg_custom  # noqa: F401  (registration)
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmseg_custom.weights.released import (check_state_dict, convert_released,
                                           expected_state_dict_shapes,
                                           load_released_checkpoint)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="released checkpoint (.pth)")
    parser.add_argument("dst", help="output checkpoint (.pth)")
    parser.add_argument("--config", required=True,
                        help="config of the model the checkpoint is for (validates keys/shapes)")
    parser.add_argument("--trust", action="store_true",
                        help="load SRC with weights_only=False (trusted files only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not os.path.isfile(args.src):
        raise FileNotFoundError(f"checkpoint '{args.src}' does not exist")
    converted = convert_released(load_released_checkpoint(args.src, trust=args.trust))
    expected = expected_state_dict_shapes(Config.fromfile(args.config).model)
    check_state_dict(converted["state_dict"], expected, source=f"'{args.src}'")
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    torch.save(converted, args.dst)
    print_log(f"converted '{args.src}' -> '{args.dst}': {len(converted['state_dict'])} tensors, "
              f"classes: {len(converted['meta'].get('dataset_meta', {}).get('classes', ()))}",
              logger="current")
    return converted


if __name__ == "__main__":
    main(sys.argv[1:])
