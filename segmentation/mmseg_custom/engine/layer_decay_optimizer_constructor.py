"""Layer-wise learning-rate decay for the MM SAM-Adapter (the released grouping, quirk Q25)."""
from __future__ import annotations

import json
from typing import Any

import torch.nn as nn
from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper

# mmseg registers a different class under the same name; import it first so that the
# forced registration below is the one that stays (mmseg's lazy import would otherwise
# raise "already registered" when it loads its own module later).
import mmseg.engine.optimizers  # noqa: E402,F401  isort: skip
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS  # noqa: E402

#: names (without the ``backbone.`` prefix check) that sit with the patch embedding
_EMBED_NAMES = ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed",
                "backbone.visual_embed")
_HEAD_QUERY_PREFIXES = ("decode_head.mask_embed", "decode_head.cls_embed",
                        "decode_head.level_embed", "decode_head.query_embed",
                        "decode_head.query_feat")
#: the original compares unprefixed names, so this never matches a model parameter
_UNPREFIXED_NO_DECAY = ("pos_embed", "cls_token", "visual_embed")
_LORA_MARKERS = ("linear_a_q", "linear_b_q", "linear_a_v", "linear_b_v")


def layer_id(name: str, num_layers: int) -> int:
    """Layer id of a segmentor parameter for ``num_layers`` ViT blocks.

    Ids run from 0 (embeddings and the whole TwinConvNeXt) over ``i + 1`` for
    ``backbone.blocks.{i}`` to ``num_layers + 1`` (everything else: SPM projections,
    fusion neck, interactions, output norms, decode head).

    Args:
        name: parameter name relative to the segmentor (no ``module.`` prefix).
        num_layers: number of ViT blocks the decay spans.
    """
    if name in _EMBED_NAMES or name.startswith(_HEAD_QUERY_PREFIXES):
        return 0
    if name.startswith("backbone.patch_embed"):
        return 0
    if name.startswith("backbone.blocks"):
        return int(name.split(".")[2]) + 1
    if name.startswith("backbone.spm") and "twin_conv" in name:
        return 0
    return num_layers + 1


def is_decayed(name: str, ndim: int) -> bool:
    """Whether the released recipe applies weight decay to this parameter (Q25).

    Biases, 1-D parameters and LoRA factors are not decayed unless they belong to
    the TwinConvNeXt; nothing in the fusion neck (``spm`` + ``smart_fusion``) is.
    """
    exempt = (ndim == 1 or name.endswith(".bias") or name in _UNPREFIXED_NO_DECAY
              or any(marker in name for marker in _LORA_MARKERS))
    if exempt and "twin_conv" not in name:
        return False
    if "spm" in name and "smart_fusion" in name:
        return False
    return True


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
class LayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """One parameter group per (layer id, decay flag), lr = rate^(L-1-id) * base lr.

    ``paramwise_cfg``:
        num_layers: ViT blocks covered by the decay (24 in the released configs);
            None: the number of ``backbone.blocks.*`` in the model. With L =
            num_layers + 2 ids, a group's lr scale is ``layer_decay_rate ** (L - 1 - id)``.
        layer_decay_rate: decay per layer (0.9 released).

    Each group carries ``lr`` (already scaled), ``lr_scale``, ``weight_decay`` (the
    optimizer's, or 0), ``group_name`` and ``param_names``. Parameter names are those
    of the segmentor: a DDP wrapper is looked through. Frozen parameters are left out.
    The grouping is logged as JSON on the main process.
    """

    def _validate_cfg(self) -> None:
        unknown = set(self.paramwise_cfg) - {"num_layers", "layer_decay_rate"}
        if unknown:
            raise ValueError(f"LayerDecayOptimizerConstructor: unknown paramwise_cfg keys "
                             f"{sorted(unknown)}; expected num_layers, layer_decay_rate")
        if "layer_decay_rate" not in self.paramwise_cfg:
            raise ValueError("LayerDecayOptimizerConstructor: paramwise_cfg needs "
                             "'layer_decay_rate'")
        if self.base_lr is None or self.base_wd is None:
            raise ValueError("LayerDecayOptimizerConstructor: the optimizer config needs "
                             "'lr' and 'weight_decay'")

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if is_model_wrapper(model):
            model = model.module
        return super().__call__(model)

    def add_params(self, params: list[dict], module: nn.Module, **kwargs: Any) -> None:
        """Fill ``params`` with the layer-decay groups of ``module`` (the segmentor)."""
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        num_blocks = max((int(n.split(".")[2]) + 1 for n, _ in named
                          if n.startswith("backbone.blocks.")), default=0)
        num_layers = self.paramwise_cfg.get("num_layers")
        if num_layers is None:
            num_layers = num_blocks
        if num_blocks > num_layers:
            raise ValueError(f"LayerDecayOptimizerConstructor: paramwise_cfg.num_layers="
                             f"{num_layers} but the model has {num_blocks} backbone.blocks")
        total = num_layers + 2
        rate = self.paramwise_cfg["layer_decay_rate"]
        groups: dict[str, dict] = {}
        for name, param in named:
            decay = is_decayed(name, len(param.shape))
            lid = layer_id(name, num_layers)
            key = f"layer_{lid}_{'decay' if decay else 'no_decay'}"
            if key not in groups:
                scale = rate ** (total - lid - 1)
                groups[key] = dict(weight_decay=self.base_wd if decay else 0.0, params=[],
                                   param_names=[], lr_scale=scale, group_name=key,
                                   lr=scale * self.base_lr)
            groups[key]["params"].append(param)
            groups[key]["param_names"].append(name)
        params.extend(groups.values())
        if is_main_process():
            shown = {key: {k: v for k, v in group.items() if k != "params"}
                     for key, group in groups.items()}
            print_log(f"LayerDecayOptimizerConstructor: num_layers={num_layers}, "
                      f"layer_decay_rate={rate}, param groups = {json.dumps(shown, indent=2)}",
                      logger="current")
