"""Process-wide settings: forced backend and deterministic value gradient.

Environment: ``MS_DEFORM_ATTN_BACKEND`` (reference | native; unset = native where built or buildable),
``MS_DEFORM_ATTN_DETERMINISTIC=1``. ``torch.use_deterministic_algorithms(True)`` also turns the
deterministic value gradient on.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

BACKENDS = ("reference", "native")


def _validated(name: str | None) -> str | None:
    if name not in (None, *BACKENDS):
        raise ValueError(f"ms_deform_attn: unknown backend {name!r}; expected one of {BACKENDS} or None")
    return name


_SETTINGS: dict[str, object] = {
    "backend": _validated(os.environ.get("MS_DEFORM_ATTN_BACKEND") or None),
    "deterministic": os.environ.get("MS_DEFORM_ATTN_DETERMINISTIC", "0") == "1",
}


def set_backend(name: str | None) -> None:
    """Force a backend for every call (None = choose the fastest available per device)."""
    _SETTINGS["backend"] = _validated(name)


def get_backend() -> str | None:
    return _SETTINGS["backend"]  # type: ignore[return-value]


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Context manager form of :func:`set_backend`."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def set_deterministic(enabled: bool) -> None:
    """Deterministic (sort-and-gather, no atomics) value gradient in the CUDA backward."""
    _SETTINGS["deterministic"] = bool(enabled)


def deterministic_enabled() -> bool:
    return bool(_SETTINGS["deterministic"]) or torch.are_deterministic_algorithms_enabled()
