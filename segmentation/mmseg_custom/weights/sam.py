"""SAM checkpoints -> weights of :class:`~mmseg_custom.models.backbones.sam_vit.SAMImageEncoder`.

The official files (``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``,
``sam_vit_h_4b8939.pth``) are flat state dicts with ``image_encoder.*``,
``prompt_encoder.*`` and ``mask_decoder.*`` keys. Conversion keeps the image encoder,
drops its ``neck.*`` and removes the ``image_encoder.`` prefix, which gives exactly the
ViT keys of the backbone (``pos_embed``, ``patch_embed.proj.*``, ``blocks.*``;
configs_and_training.md §6.1). Loading is verbatim (quirk Q21: no position-embedding
interpolation at load time; the model resizes it in forward) and strict about the ViT
keys: a checkpoint of another size fails with the key and both shapes.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..compat.checkpoint import safe_torch_load

__all__ = ["SAMVariant", "VIT_KEY_PREFIXES", "is_vit_key", "read_local_checkpoint",
           "convert_sam_state_dict", "detect_sam_variant", "convert_sam_checkpoint",
           "load_sam_vit_weights", "load_sam_into_vit"]

#: first components of the ViT keys (everything else of an adapter model is not SAM's).
VIT_KEY_PREFIXES: Tuple[str, ...] = ("pos_embed", "patch_embed.", "blocks.")

#: (embed_dim, depth) -> (name, num_heads, global_attn_indexes) of the released SAM encoders.
_KNOWN = {
    (768, 12): ("vit_b", 12, (2, 5, 8, 11)),
    (1024, 24): ("vit_l", 16, (5, 11, 17, 23)),
    (1280, 32): ("vit_h", 16, (7, 15, 23, 31)),
}
_PREFIX = "image_encoder."
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")


def is_vit_key(key: str) -> bool:
    """True for the keys that come from the SAM image encoder."""
    return key == "pos_embed" or key.startswith(VIT_KEY_PREFIXES[1:])


@dataclass(frozen=True)
class SAMVariant:
    """Encoder hyper-parameters read from a (converted) SAM state dict."""

    name: str  # 'vit_b' | 'vit_l' | 'vit_h' | 'custom'
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    in_chans: int
    mlp_ratio: float
    pretrained_size: int
    window_size: int
    global_attn_indexes: Tuple[int, ...] = field(default=())

    def encoder_kwargs(self) -> Dict[str, object]:
        """Constructor arguments of a matching :class:`SAMImageEncoder`."""
        return dict(patch_size=self.patch_size, in_chans=self.in_chans,
                    embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
                    mlp_ratio=self.mlp_ratio, window_size=self.window_size,
                    global_attn_indexes=self.global_attn_indexes,
                    pretrained_size=self.pretrained_size)

    def __str__(self) -> str:
        return (f"SAM {self.name} (embed_dim {self.embed_dim}, depth {self.depth}, "
                f"{self.num_heads} heads, global blocks {list(self.global_attn_indexes)}, "
                f"window {self.window_size}, pretrained size {self.pretrained_size})")


def read_local_checkpoint(filename: str) -> Mapping[str, object]:
    """Read a local checkpoint file (weights_only). URLs are refused: nothing is downloaded."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", str(filename)):
        raise ValueError(f"'{filename}' is a URL; weights are only read from local files. "
                         "Download the file yourself and pass its local path.")
    filename = os.path.expanduser(str(filename))
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"checkpoint file '{filename}' does not exist")
    ckpt = safe_torch_load(filename, map_location="cpu")
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"'{filename}' does not hold a state dict (found {type(ckpt).__name__})")
    return ckpt


def convert_sam_state_dict(state_dict: Mapping[str, torch.Tensor],
                           source: str = "state dict") -> Dict[str, torch.Tensor]:
    """Official SAM state dict -> ViT weights (``image_encoder.`` removed, ``neck.*`` dropped).

    Raises ValueError if there is no ``image_encoder.*`` key or if an encoder key is not
    a ViT key of :class:`SAMImageEncoder`.
    """
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith(_PREFIX):
            continue
        key = key[len(_PREFIX):]
        if key.startswith("neck."):
            continue
        if not is_vit_key(key):
            raise ValueError(f"{source}: unexpected image-encoder key '{_PREFIX}{key}' (expected "
                             "pos_embed, patch_embed.*, blocks.* or neck.*)")
        out[key] = value
    if not out:
        raise ValueError(f"{source}: no '{_PREFIX}*' keys; this is not an official SAM checkpoint "
                         f"(first keys: {list(state_dict)[:5]})")
    return out


def _shape(sd: Mapping[str, torch.Tensor], key: str, source: str) -> Tuple[int, ...]:
    if key not in sd:
        raise ValueError(f"{source}: missing key '{key}' of a SAM image encoder")
    return tuple(sd[key].shape)


def detect_sam_variant(vit_state_dict: Mapping[str, torch.Tensor],
                       source: str = "state dict") -> SAMVariant:
    """Read the encoder hyper-parameters from converted ViT weights (shapes only)."""
    embed_dim, in_chans, patch_size, _ = _shape(vit_state_dict, "patch_embed.proj.weight", source)
    grid = _shape(vit_state_dict, "pos_embed", source)[1]
    indexes = sorted({int(m.group(1)) for k in vit_state_dict if (m := _BLOCK_RE.match(k))})
    depth = len(indexes)
    if indexes != list(range(depth)):
        raise ValueError(f"{source}: block indexes are not contiguous from 0: {indexes}")
    rows = [_shape(vit_state_dict, f"blocks.{i}.attn.rel_pos_h", source) for i in indexes]
    head_dim = rows[0][1]
    mlp_dim = _shape(vit_state_dict, "blocks.0.mlp.lin1.weight", source)[0]
    known = _KNOWN.get((embed_dim, depth))
    global_rows = 2 * grid - 1
    global_idx = tuple(i for i, r in zip(indexes, rows) if r[0] == global_rows)
    window_rows = {r[0] for r in rows if r[0] != global_rows}
    if len(window_rows) > 1:
        raise ValueError(f"{source}: windowed blocks have different rel-pos sizes {window_rows}")
    if window_rows:
        window = (window_rows.pop() + 1) // 2
    elif known is not None:  # window == grid: tables cannot tell the block kinds apart
        window, global_idx = 14, known[2]
    else:
        raise ValueError(f"{source}: cannot tell windowed from global blocks (every rel-pos "
                         f"table has {global_rows} rows)")
    return SAMVariant(name=known[0] if known else "custom", embed_dim=embed_dim, depth=depth,
                      num_heads=embed_dim // head_dim, patch_size=patch_size, in_chans=in_chans,
                      mlp_ratio=mlp_dim / embed_dim, pretrained_size=grid * patch_size,
                      window_size=window, global_attn_indexes=global_idx)


def convert_sam_checkpoint(src: str, dst: str) -> SAMVariant:
    """Convert an official SAM file ``src`` into ViT weights saved at ``dst`` (a flat state dict)."""
    sam = read_local_checkpoint(src)
    vit = convert_sam_state_dict(sam, source=src)
    variant = detect_sam_variant(vit, source=src)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save(vit, dst)
    print_log(f"converted {src} -> {dst}: {variant}; {len(vit)} tensors kept, "
              f"{len(sam) - len(vit)} dropped (neck, prompt encoder, mask decoder)",
              logger="current")
    return variant


def _model_summary(model: nn.Module) -> str:
    blocks = getattr(model, "blocks", [])
    return (f"embed_dim {getattr(model, 'embed_dim', '?')}, depth {len(blocks)}, "
            f"pretrained_size {getattr(model, 'pretrained_size', '?')}")


def load_sam_vit_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                         source: str = "state dict") -> SAMVariant:
    """Copy SAM ViT weights verbatim into ``model`` (a SAMImageEncoder or subclass).

    ``state_dict`` is either converted ViT weights or an official SAM state dict
    (``image_encoder.*``, converted on the fly). Every ViT key of the model must be
    present with the same shape and the weights must hold nothing else; keys of the
    model outside the ViT (adapter modules) are left untouched. Returns the variant.
    """
    if any(k.startswith(_PREFIX) for k in state_dict):
        print_log(f"{source}: official SAM layout, converting (neck dropped)", logger="current")
        state_dict = convert_sam_state_dict(state_dict, source)
    variant = detect_sam_variant(state_dict, source)
    own = {k: v for k, v in model.state_dict().items() if is_vit_key(k)}
    hint = f"the file is {variant}; the model has {_model_summary(model)}"
    for key, value in own.items():
        if key not in state_dict:
            raise ValueError(f"{source}: missing ViT key '{key}' (expected shape "
                             f"{tuple(value.shape)}); {hint}")
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise ValueError(f"{source}: key '{key}' has shape {tuple(state_dict[key].shape)}, "
                             f"the model expects {tuple(value.shape)}; {hint}")
    extra = sorted(set(state_dict) - set(own))
    if extra:
        raise ValueError(f"{source}: keys the model does not have: {extra[:8]}"
                         f"{' ...' if len(extra) > 8 else ''} ({len(extra)} in all); {hint}")
    model.load_state_dict(dict(state_dict), strict=False)
    print_log(f"loaded {len(own)} SAM tensors from {source}: {variant}", logger="current")
    return variant


def load_sam_into_vit(model: nn.Module, filename: str) -> SAMVariant:
    """Load a local SAM file (converted, or official) into ``model``; see :func:`load_sam_vit_weights`."""
    return load_sam_vit_weights(model, read_local_checkpoint(filename), source=str(filename))
