"""A stand-in for ``mmcv.ops`` when mmcv was installed without compiled ops.

mmsegmentation 1.2.2 imports ``mmcv.ops`` unguarded in four modules
(``models/losses/focal_loss.py``, ``models/utils/point_sample.py``,
``models/decode_heads/san_head.py``, ``utils/mask_classification.py``), so
``import mmseg.models`` fails with mmcv-lite. The stand-in provides the pieces
that have an exact pure-PyTorch form (``point_sample``) and, for every other op,
an object that raises a clear error when used. It is installed only when the
real ``mmcv.ops`` cannot be imported, and never replaces it.
"""
from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import Any

import torch
import torch.nn.functional as F

_STANDIN_FLAG = "__mmsam_standin__"
_HINT = ("mmcv was installed without compiled ops (mmcv-lite). MM SAM-Adapter does not need "
         "them; install mmcv (full) built for your torch/CUDA if you need this op.")


def point_sample(input: torch.Tensor, points: torch.Tensor, align_corners: bool = False,
                 **kwargs: Any) -> torch.Tensor:
    """Sample ``input`` (N, C, H, W) at normalised ``points`` (N, P, 2) or (N, Hp, Wp, 2)
    in [0, 1] x [0, 1]; returns (N, C, P) or (N, C, Hp, Wp). Same contract as mmcv's."""
    add_dim = points.dim() == 3
    grid = points.unsqueeze(2) if add_dim else points
    out = F.grid_sample(input, 2.0 * grid - 1.0, align_corners=align_corners, **kwargs)
    return out.squeeze(3) if add_dim else out


class _MissingOp:
    """Placeholder for a compiled op: importable, fails clearly when used."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"mmcv.ops.{self._name} is not available: {_HINT}")

    def __repr__(self) -> str:
        return f"<missing mmcv op {self._name}>"


# Names imported unguarded by mmseg 1.2.2 that have no pure-PyTorch stand-in here.
_PLACEHOLDERS = ("sigmoid_focal_loss",)


def _module_getattr(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    # ModuleNotFoundError so that mmseg's ``try: from mmcv.ops import X
    # except ModuleNotFoundError`` guards keep working.
    raise ModuleNotFoundError(f"mmcv.ops.{name} is not available: {_HINT}")


def real_mmcv_ops_available() -> bool:
    """True when ``mmcv.ops`` imports with its compiled extension."""
    module = sys.modules.get("mmcv.ops")
    if module is not None:
        return not getattr(module, _STANDIN_FLAG, False)
    try:
        importlib.import_module("mmcv.ops")
    except ImportError:
        sys.modules.pop("mmcv.ops", None)
        return False
    return True


def install_mmcv_ops_standin() -> bool:
    """Register the stand-in as ``mmcv.ops`` if the real one cannot be imported.

    Returns True when the stand-in is (now) active.
    """
    if real_mmcv_ops_available():
        return False
    # mmcv.cnn.bricks.transformer warns on import that its deformable attention needs the
    # compiled ops; this project has its own (package ``ms_deform_attn``).
    warnings.filterwarnings("ignore", message="Fail to import ``MultiScaleDeformableAttention``")
    if "mmcv.ops" in sys.modules:
        return True
    import mmcv

    module = types.ModuleType("mmcv.ops", __doc__)
    setattr(module, _STANDIN_FLAG, True)
    module.point_sample = point_sample
    for name in _PLACEHOLDERS:
        setattr(module, name, _MissingOp(name))
    module.__getattr__ = _module_getattr
    sys.modules["mmcv.ops"] = module
    mmcv.ops = module
    return True
