"""Official SAM checkpoint -> ViT weights of the MM SAM-Adapter backbone.

``python segmentation/tools/convert_sam_checkpoint.py sam_vit_l_0b3195.pth
segmentation/pretrained/sam_vit_l_image_encoder_no_neck.pth``

Keeps ``image_encoder.*`` without the neck and removes the prefix (ViT-B, -L and -H
files; the variant is read from the shapes and reported). Reads a local file only.
"""
from __future__ import annotations

import argparse
import sys

import mmseg_custom  # noqa: F401  (compat fix-ups: safe checkpoint loading)
from mmseg_custom.weights.sam import SAMVariant, convert_sam_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Convert an official SAM checkpoint into the "
                                                 "backbone's ViT weights (neck dropped)")
    parser.add_argument("src", help="official SAM file, e.g. sam_vit_l_0b3195.pth (local path)")
    parser.add_argument("dst", help="output file, e.g. sam_vit_l_image_encoder_no_neck.pth")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> SAMVariant:
    args = parse_args(argv)
    return convert_sam_checkpoint(args.src, args.dst)


if __name__ == "__main__":
    main(sys.argv[1:])
