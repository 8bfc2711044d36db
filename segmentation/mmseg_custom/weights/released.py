"""Convert the original MM SAM-Adapter release checkpoints (mmcv 1.x) to this codebase.

A released file is a pickle of ``{'meta': {...}, 'state_dict': {...}, 'optimizer': {...}}``
written by mmcv 1.4 / torch 1.9. The state-dict keys are the keys of this codebase's
segmentor (backbone ``backbone.*``, SegFormer head ``decode_head.*``), so converting means:
drop the optimizer, strip a ``module.`` prefix if present, translate the meta
(``CLASSES``/``PALETTE`` -> mmengine's ``dataset_meta`` ``classes``/``palette``; a few
provenance fields are kept as plain Python values) and validate the keys and shapes
against the model a config builds.

Loading is ``weights_only=True``. The meta of mmcv 1.x checkpoints holds NumPy scalars
(e.g. ``hook_msgs.best_score``) pickled under NumPy 1.x module names
(``numpy.core.multiarray.scalar``); those names are allowed for the duration of the load
only. Any other class is refused with an error naming it; ``trust=True`` (the
converter's ``--trust``) then loads with ``weights_only=False``, which can run arbitrary
code from the file: only for files from a trusted source.
"""
from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch

_KEPT_META = ("mmseg_version", "mmcv_version", "epoch", "iter", "time", "seed", "exp_name",
              "config")


def _legacy_numpy_globals() -> list[tuple[Any, str]]:
    """NumPy objects under the module names NumPy 1.x pickles refer to."""
    core = getattr(np, "_core", None) or np.core
    return [(core.multiarray.scalar, "numpy.core.multiarray.scalar"),
            (core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            (np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype"),
            (core.multiarray.scalar, "numpy._core.multiarray.scalar"),
            (core.multiarray._reconstruct, "numpy._core.multiarray._reconstruct")]


_GLOBAL_RE = re.compile(r"GLOBAL\s+([\w.]+)")


def load_released_checkpoint(path: str, trust: bool = False) -> dict:
    """Read a released ``.pth`` (CPU tensors).

    Raises:
        pickle.UnpicklingError: the file needs a class outside the allow-list and
            ``trust`` is False (the message names the class and the ``--trust`` option).
    """
    if trust:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = _GLOBAL_RE.search(str(err))
        what = found.group(1) if found else "a class that is not a tensor or plain container"
        raise pickle.UnpicklingError(
            f"'{path}' contains {what}, which weights_only loading refuses. If the file comes "
            "from a source you trust, convert it with --trust (loads with weights_only=False, "
            "which can execute code stored in the file).") from err


def _plain(value: Any) -> Any:
    """NumPy values -> Python values (so the converted file loads with weights_only)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def convert_released(checkpoint: Mapping[str, Any]) -> dict:
    """Released checkpoint dict -> ``{'meta': ..., 'state_dict': ...}`` for mmengine.

    ``meta.dataset_meta`` = ``{'classes': (...), 'palette': [[r, g, b], ...]}`` when the
    original meta had ``CLASSES`` / ``PALETTE``; ``meta.converted_from`` keeps the
    provenance fields (versions, epoch, iter, time, seed, config text). The optimizer
    state is dropped. Tensors are kept as stored (no copies).
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a checkpoint dict, got {type(checkpoint).__name__}")
    if "state_dict" in checkpoint:
        state_dict = checkpoint["state_dict"]
    elif all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state_dict = checkpoint
    else:
        raise ValueError(f"no 'state_dict' in the checkpoint (top-level keys: "
                         f"{sorted(map(str, checkpoint))})")
    converted = OrderedDict()
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"state_dict entry '{key}' is a {type(value).__name__}, not a tensor")
        converted[key[len("module."):] if key.startswith("module.") else key] = value

    old_meta = checkpoint.get("meta") or {}
    meta: dict[str, Any] = {}
    if "CLASSES" in old_meta or "PALETTE" in old_meta:
        dataset_meta: dict[str, Any] = {}
        if old_meta.get("CLASSES") is not None:
            dataset_meta["classes"] = tuple(str(c) for c in old_meta["CLASSES"])
        if old_meta.get("PALETTE") is not None:
            dataset_meta["palette"] = [[int(v) for v in color] for color in old_meta["PALETTE"]]
        meta["dataset_meta"] = dataset_meta
    meta["converted_from"] = {k: _plain(old_meta[k]) for k in _KEPT_META if k in old_meta}
    return {"meta": meta, "state_dict": converted}


def expected_state_dict_shapes(model_cfg: Mapping[str, Any]) -> dict[str, torch.Size]:
    """Keys and shapes of the ``state_dict()`` of the model built from ``model_cfg``
    (built on the meta device: no memory, no weights read)."""
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    cfg = dict(model_cfg)
    cfg.pop("pretrained", None)
    if isinstance(cfg.get("backbone"), Mapping):
        cfg["backbone"] = {**cfg["backbone"], "pretrained": None}
    with DefaultScope.overwrite_default_scope("mmseg"), torch.device("meta"):
        model = MODELS.build(cfg)
    return {k: v.shape for k, v in model.state_dict().items()}


def check_state_dict(state_dict: Mapping[str, torch.Tensor],
                     expected: Mapping[str, torch.Size], source: str = "checkpoint") -> None:
    """Raise ValueError naming every missing, unexpected and shape-mismatched key."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(f"{k}: {list(state_dict[k].shape)} in {source}, model expects "
                        f"{list(expected[k])}"
                        for k in set(expected) & set(state_dict)
                        if tuple(state_dict[k].shape) != tuple(expected[k]))
    if missing or unexpected or mismatched:
        lines = [f"{source} does not match the model "
                 f"({len(missing)} missing, {len(unexpected)} unexpected, "
                 f"{len(mismatched)} with another shape):"]
        for title, keys in (("missing", missing), ("unexpected", unexpected),
                            ("shape mismatch", mismatched)):
            lines += [f"  {title}: {k}" for k in keys]
        raise ValueError("\n".join(lines))
