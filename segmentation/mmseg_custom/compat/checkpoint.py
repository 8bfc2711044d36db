"""Safe checkpoint loading on torch >= 2.6, where ``torch.load`` defaults to
``weights_only=True``.

mmengine 0.10.7 calls ``torch.load(path)`` without ``weights_only``; its own
checkpoints carry a few non-tensor Python objects (``HistoryBuffer`` in the message
hub, NumPy arrays and scalars), so resuming fails on current torch. Instead of
switching the safety off, the classes mmengine writes are allow-listed with
``torch.serialization.add_safe_globals`` and local files are read through a loader
that keeps ``weights_only=True`` and turns a refused pickle into an error that
names the file, the class and how to proceed.

``HistoryBuffer`` also pickles its four default statistics methods as
``getattr(HistoryBuffer, name)``; allowing ``getattr`` would open the unpickler to
arbitrary attribute access, so those defaults (restored by ``__setstate__`` anyway)
are left out of the pickled state instead.

Checkpoints are written atomically: mmengine writes the final file in place, so an
interrupted save leaves a truncated ``epoch_N.pth``; here local files are written to a
temporary name in the same folder and renamed into place.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Any, Iterable

import mmengine.runner.checkpoint as mm_checkpoint
import mmengine.runner.runner as mm_runner
import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

_mmengine_save_checkpoint = mm_checkpoint.save_checkpoint


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint asks to unpickle a class outside the allow-list."""


def _numpy_globals() -> list[Any]:
    core = getattr(np, "_core", None) or np.core
    names = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    dtype_classes = {type(np.dtype(t)) for t in
                     (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                      np.uint32, np.uint64, np.float16, np.float32, np.float64)}
    return names + sorted(dtype_classes, key=lambda c: c.__name__)


def allow_checkpoint_classes(classes: Iterable[Any]) -> None:
    """Allow further classes in ``weights_only`` loading (only for files you trust)."""
    torch.serialization.add_safe_globals(list(classes))


_DEFAULT_STATISTICS = ("min", "max", "current", "mean")


def _history_buffer_state(self: HistoryBuffer) -> dict:
    """``HistoryBuffer.__getstate__`` without the default statistics methods."""
    state = {k: v for k, v in self.__dict__.items() if k != "statistics_methods"}
    custom = {name: method for name, method in self._statistics_methods.items()
              if name not in _DEFAULT_STATISTICS}
    if custom:
        state["statistics_methods"] = custom
    return state


def register_safe_globals() -> None:
    """Allow-list what mmengine and this codebase write into checkpoints."""
    allow_checkpoint_classes([HistoryBuffer, *_numpy_globals()])


_GLOBAL_RE = re.compile(r"(?:Unsupported global|unsupported global|GLOBAL)\W*:?\s*(?:GLOBAL\s+)?([\w.]+)")


def safe_torch_load(filename: str, map_location: Any = None) -> Any:
    """``torch.load(filename, weights_only=True)`` with a clear error on refusal."""
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = _GLOBAL_RE.search(str(err))
        what = found.group(1) if found else "an object that is not a tensor or plain container"
        raise UnsafeCheckpointError(
            f"Refusing to load checkpoint '{filename}': it contains {what}, which is not on "
            "the allow-list of classes that may be unpickled (weights_only=True). If the file "
            "comes from the original MM SAM-Adapter release, convert it with "
            "segmentation/tools/convert_released_checkpoint.py. If you trust the file and "
            "know the class, allow it with "
            "mmseg_custom.compat.checkpoint.allow_checkpoint_classes([<class>]) before loading."
        ) from err


def _load_from_local(filename: str, map_location: Any = None) -> Any:
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"checkpoint file '{filename}' does not exist")
    return safe_torch_load(filename, map_location=map_location)


def atomic_save_checkpoint(checkpoint: dict, filename: str, file_client_args: Any = None,
                           backend_args: Any = None) -> None:
    """mmengine's ``save_checkpoint``; local files appear only once completely written."""
    if "://" in str(filename) or file_client_args is not None or backend_args is not None:
        _mmengine_save_checkpoint(checkpoint, filename, file_client_args, backend_args)
        return
    filename = str(filename)
    folder = os.path.dirname(os.path.abspath(filename))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(filename)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filename)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def install_safe_checkpoint_loading() -> None:
    """Route mmengine's checkpoint loading through :func:`safe_torch_load` and its
    saving through :func:`atomic_save_checkpoint`."""
    register_safe_globals()
    HistoryBuffer.__getstate__ = _history_buffer_state
    CheckpointLoader.register_scheme(prefixes="", force=True)(_load_from_local)
    mm_runner.save_checkpoint = atomic_save_checkpoint
