"""ConvNeXt checkpoint (official FB / timm / mmpretrain) -> mmpretrain layout, and a dry run
of the twin-stream initialisation.

``python segmentation/tools/convert_convnext_checkpoint.py convnext_small_22k_1k_384.pth
segmentation/pretrained/convnext_small_mmpretrain.pth --arch small``

With ``--arch`` the converted weights are also loaded into a TwinConvNeXt of that arch
and the keys that load / stay at their init (the 8 output norms, quirk Q20) / are
ignored (``norm3``, ``head``) are reported. Reads a local file only.
"""
from __future__ import annotations

import argparse
import sys

import mmseg_custom  # noqa: F401  (compat fix-ups: safe checkpoint loading)
from mmseg_custom.models.backbones.twin_convnext import CONVNEXT_ARCHS, TwinConvNeXt
from mmseg_custom.weights.convnext import convert_convnext_checkpoint, load_convnext_into_twin


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Convert a ConvNeXt checkpoint into the "
                                                 "mmpretrain layout used by the twin streams")
    parser.add_argument("src", help="official / timm / mmpretrain ConvNeXt file (local path)")
    parser.add_argument("dst", help="output file (mmpretrain layout)")
    parser.add_argument("--arch", choices=sorted(CONVNEXT_ARCHS),
                        help="also load the result into a TwinConvNeXt of this arch and report")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    layout, arch = convert_convnext_checkpoint(args.src, args.dst)
    result = dict(layout=layout, arch=arch)
    if args.arch:
        twin = TwinConvNeXt(arch=args.arch, with_cp=False)
        result["report"] = load_convnext_into_twin(twin, args.dst)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
