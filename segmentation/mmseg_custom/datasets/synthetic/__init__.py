"""Synthetic datasets in the real converted on-disk layouts (used by tests and the demo)."""
from typing import Callable, Dict, Optional, Tuple

from .deliver import make_deliver

# format -> (writer, default (H, W))
_WRITERS: Dict[str, Callable] = {'deliver': make_deliver}
DEFAULT_SIZES: Dict[str, Tuple[int, int]] = {'deliver': (128, 128)}


def make_synthetic(fmt: str, out: str, nums: Tuple[int, int, int], seed: int,
                   size: Optional[Tuple[int, int]] = None) -> Dict:
    """Write a synthetic tree of format ``fmt`` ('deliver' | 'fmb' | 'muses') under ``out``.

    Args:
        nums: number of samples in (train, val, test).
        seed: all content is a deterministic function of ``seed``.
        size: (H, W); default ``DEFAULT_SIZES[fmt]``.

    Returns:
        what the format's writer returns (split -> written names).
    """
    if fmt not in _WRITERS:
        raise ValueError(f'unknown synthetic format {fmt!r}; expected one of {sorted(_WRITERS)}')
    if min(nums) < 0:
        raise ValueError(f'sample counts must be >= 0, got {nums}')
    return _WRITERS[fmt](out, tuple(nums), seed, size or DEFAULT_SIZES[fmt])


__all__ = ['make_synthetic', 'make_deliver', 'DEFAULT_SIZES']
