"""ConvNeXt ImageNet checkpoints -> both streams of :class:`TwinConvNeXt` (quirk Q20).

Accepted layouts (read from a local file only, quirk Q14):

* mmpretrain (the released configs' ``convnext-small_in21k-pre_3rdparty_in1k-384px``):
  ``backbone.downsample_layers.{i}.{0,1}.*``, ``backbone.stages.{i}.{j}.{depthwise_conv,
  norm,pointwise_conv1,pointwise_conv2}.*``, ``backbone.stages.{i}.{j}.gamma``,
  ``backbone.norm3.*``, ``head.fc.*``;
* official facebookresearch/ConvNeXt (``{'model': ...}``): ``downsample_layers.*``,
  ``stages.{i}.{j}.{dwconv,norm,pwconv1,pwconv2,gamma}``, ``norm.*``, ``head.*``;
* timm: ``stem.{0,1}.*``, ``stages.{i}.downsample.{0,1}.*``, ``stages.{i}.blocks.{j}.
  {conv_dw,norm,mlp.fc1,mlp.fc2,gamma}``, ``head.norm.*``, ``head.fc.*`` (1x1-conv MLP
  weights of the ``conv_mlp`` variants are reshaped to Linear weights).

Official and timm names are first mapped to the mmpretrain names. Then, as the original
does: the state dict is taken from ``state_dict`` (else ``model``, else the file itself),
``module.`` and ``backbone.`` prefixes are stripped, ``_x`` / ``_y`` is inserted before the
first dot of every key (``stages.2.11.gamma`` -> ``stages_x.2.11.gamma``) and the two
dicts are loaded non-strictly. Consequently ``norm3`` (-> ``norm3_x``) and the classifier
(-> ``head_x.fc``) match nothing: the 8 output norms ``norm_x0..3`` / ``norm_y0..3`` keep
weight 1 / bias 0 and both streams get identical ImageNet weights.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from .sam import read_local_checkpoint

__all__ = ["ConvNeXtLoadReport", "unwrap_state_dict", "detect_convnext_layout",
           "to_mmpretrain_names", "detect_convnext_arch", "twin_state_dicts",
           "load_convnext_weights_into_twin", "load_convnext_into_twin",
           "convert_convnext_checkpoint"]

_OFFICIAL_BLOCK = {"dwconv": "depthwise_conv", "pwconv1": "pointwise_conv1",
                   "pwconv2": "pointwise_conv2"}
_TIMM_BLOCK = {"conv_dw": "depthwise_conv", "mlp.fc1": "pointwise_conv1",
               "mlp.fc2": "pointwise_conv2"}


@dataclass
class ConvNeXtLoadReport:
    """What :func:`load_convnext_into_twin` did (keys are the twin's / the file's)."""

    source: str
    layout: str  # 'mmpretrain' | 'official' | 'timm'
    arch: Dict[str, List[int]]
    loaded: List[str] = field(default_factory=list)  # twin keys set from the file
    ignored: List[str] = field(default_factory=list)  # renamed file keys matching nothing
    not_loaded: List[str] = field(default_factory=list)  # twin keys left at their init


def unwrap_state_dict(ckpt: Mapping[str, object]) -> Dict[str, torch.Tensor]:
    """``ckpt['state_dict']``, else ``ckpt['model']``, else ``ckpt``; ``module.`` (if the first
    key has it) and ``backbone.`` prefixes removed."""
    sd = ckpt.get("state_dict", ckpt.get("model", ckpt))
    if not isinstance(sd, Mapping) or not sd:
        raise ValueError("checkpoint holds no state dict")
    sd = dict(sd)
    if next(iter(sd)).startswith("module."):
        sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    return {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in sd.items()}


def detect_convnext_layout(sd: Mapping[str, torch.Tensor], source: str = "state dict") -> str:
    """'mmpretrain', 'official' or 'timm' from the key names (prefixes already stripped)."""
    keys = list(sd)
    if any(k.startswith("stem.") or ".blocks." in k for k in keys):
        layout = "timm"
    elif any(".depthwise_conv." in k for k in keys):
        layout = "mmpretrain"
    elif any(".dwconv." in k for k in keys):
        layout = "official"
    else:
        raise ValueError(f"{source}: not a ConvNeXt checkpoint of a known layout (mmpretrain, "
                         f"official or timm); first keys: {keys[:5]}")
    if any("grn" in k for k in keys):
        raise ValueError(f"{source}: ConvNeXt-V2 (GRN) weights are not supported: the twin "
                         "streams are ConvNeXt-V1 blocks")
    return layout


def _official_name(key: str) -> str:
    m = re.match(r"^stages\.(\d+)\.(\d+)\.(dwconv|pwconv1|pwconv2)\.(.*)$", key)
    if m:
        return f"stages.{m[1]}.{m[2]}.{_OFFICIAL_BLOCK[m[3]]}.{m[4]}"
    if key.startswith("norm."):
        return "norm3." + key[len("norm."):]
    if key.startswith("head.") and not key.startswith("head.fc."):
        return "head.fc." + key[len("head."):]
    return key


def _timm_name(key: str) -> str:
    if key.startswith("stem."):
        return "downsample_layers.0." + key[len("stem."):]
    m = re.match(r"^stages\.(\d+)\.downsample\.(.*)$", key)
    if m:
        return f"downsample_layers.{m[1]}.{m[2]}"
    m = re.match(r"^stages\.(\d+)\.blocks\.(\d+)\.(conv_dw|mlp\.fc1|mlp\.fc2)\.(.*)$", key)
    if m:
        return f"stages.{m[1]}.{m[2]}.{_TIMM_BLOCK[m[3]]}.{m[4]}"
    m = re.match(r"^stages\.(\d+)\.blocks\.(\d+)\.(.*)$", key)
    if m:
        return f"stages.{m[1]}.{m[2]}.{m[3]}"
    for final_norm in ("head.norm.", "norm_pre."):
        if key.startswith(final_norm):
            return "norm3." + key[len(final_norm):]
    return key


def to_mmpretrain_names(sd: Mapping[str, torch.Tensor], layout: str) -> Dict[str, torch.Tensor]:
    """Rename official / timm keys to mmpretrain names (mmpretrain: unchanged)."""
    rename: Optional[Callable[[str], str]] = {"official": _official_name, "timm": _timm_name,
                                              "mmpretrain": None}[layout]
    if rename is None:
        return dict(sd)
    out = {}
    for key, value in sd.items():
        new = rename(key)
        if re.match(r"^stages\.\d+\.\d+\.pointwise_conv[12]\.weight$", new) and value.dim() == 4:
            value = value.flatten(1)  # timm conv_mlp: 1x1 conv (O, I, 1, 1) -> Linear (O, I)
        out[new] = value
    return out


def detect_convnext_arch(sd: Mapping[str, torch.Tensor]) -> Dict[str, List[int]]:
    """depths / channels of mmpretrain-named ConvNeXt weights."""
    depths, channels = [], []
    for i in range(4):
        blocks = {int(m[1]) for k in sd if (m := re.match(rf"^stages\.{i}\.(\d+)\.", k))}
        depths.append(len(blocks))
        w = sd.get(f"stages.{i}.0.depthwise_conv.weight")
        channels.append(int(w.shape[0]) if w is not None else 0)
    return dict(depths=depths, channels=channels)


def _with_suffix(key: str, suffix: str) -> str:
    head, dot, rest = key.partition(".")
    return f"{head}{suffix}{dot}{rest}"


def twin_state_dicts(sd: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor],
                                                              Dict[str, torch.Tensor]]:
    """mmpretrain-named weights -> (x dict, y dict): ``_x`` / ``_y`` before the first dot."""
    return ({_with_suffix(k, "_x"): v for k, v in sd.items()},
            {_with_suffix(k, "_y"): v for k, v in sd.items()})


def load_convnext_weights_into_twin(twin: nn.Module, ckpt: Mapping[str, object],
                                    source: str = "state dict") -> ConvNeXtLoadReport:
    """Load ConvNeXt weights (any accepted layout, any wrapper) into both streams of ``twin``.

    Keys that exist in the twin must have the twin's shape (a ValueError names the key,
    both shapes and both archs otherwise); keys without a counterpart are ignored, as in
    the original's non-strict load. Returns and logs what was loaded and what was not.
    """
    sd = unwrap_state_dict(ckpt)
    layout = detect_convnext_layout(sd, source)
    sd = to_mmpretrain_names(sd, layout)
    arch = detect_convnext_arch(sd)
    own = twin.state_dict()
    report = ConvNeXtLoadReport(source=source, layout=layout, arch=arch)
    to_load: Dict[str, torch.Tensor] = {}
    for part in twin_state_dicts(sd):
        for key, value in part.items():
            if key not in own:
                report.ignored.append(key)
                continue
            if tuple(value.shape) != tuple(own[key].shape):
                twin_arch = dict(depths=list(getattr(twin, "depths", [])),
                                 channels=list(getattr(twin, "channels", [])))
                raise ValueError(f"{source}: '{key}' has shape {tuple(value.shape)}, the twin "
                                 f"ConvNeXt expects {tuple(own[key].shape)} (checkpoint arch "
                                 f"{arch}, twin arch {twin_arch})")
            to_load[key] = value
    twin.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.not_loaded = sorted(set(own) - set(to_load))
    print_log(f"ConvNeXt init from {source} ({layout} layout, arch {arch}): "
              f"{len(report.loaded)} of {len(own)} twin tensors loaded; left at init: "
              f"{report.not_loaded}; ignored checkpoint keys: {report.ignored}", logger="current")
    return report


def load_convnext_into_twin(twin: nn.Module, filename: str) -> ConvNeXtLoadReport:
    """Load a local ConvNeXt checkpoint file into both streams; see
    :func:`load_convnext_weights_into_twin`. URLs are refused (nothing is downloaded)."""
    return load_convnext_weights_into_twin(twin, read_local_checkpoint(filename),
                                           source=str(filename))


def convert_convnext_checkpoint(src: str, dst: str) -> Tuple[str, Dict[str, List[int]]]:
    """Rewrite an official / timm / mmpretrain ConvNeXt file in the mmpretrain layout
    (``{'state_dict': {'backbone.*': ..., 'head.fc.*': ...}}``). Returns (layout, arch)."""
    sd = unwrap_state_dict(read_local_checkpoint(src))
    layout = detect_convnext_layout(sd, src)
    sd = to_mmpretrain_names(sd, layout)
    arch = detect_convnext_arch(sd)
    out = {(k if k.startswith("head.") else "backbone." + k): v for k, v in sd.items()}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({"state_dict": out}, dst)
    print_log(f"converted {src} ({layout} layout, arch {arch}) -> {dst} (mmpretrain layout, "
              f"{len(out)} tensors)", logger="current")
    return layout, arch
