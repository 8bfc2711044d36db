"""Synthetic datasets in the real converted on-disk layouts (used by tests and the demo)."""
from typing import Callable, Dict, Optional, Tuple

from .deliver import make_deliver
from .fmb import make_fmb
from .muses import make_muses

_WRITERS: Dict[str, Callable] = {'deliver': make_deliver, 'fmb': make_fmb, 'muses': make_muses}
# default (H, W) per format; the real sizes are 1042x1042, 600x800 and 1080x1920
DEFAULT_SIZES: Dict[str, Tuple[int, int]] = {'deliver': (128, 128), 'fmb': (120, 160),
                                             'muses': (108, 192)}


def make_synthetic(fmt: str, out: str, nums: Tuple[int, int, int], seed: int,
                   size: Optional[Tuple[int, int]] = None,
                   lists_dir: Optional[str] = None) -> Dict:
    """Write a synthetic tree of format ``fmt`` ('deliver' | 'fmb' | 'muses') under ``out``.

    Args:
        nums: number of samples in (train, val, test).
        seed: all content is a deterministic function of ``seed``.
        size: (H, W); default ``DEFAULT_SIZES[fmt]``.
        lists_dir: FMB only: take ids and easy/hard membership from the split lists there
            (``<split>_{easy,hard}_files.txt``), see :func:`make_fmb`.

    Returns:
        what the format's writer returns (split -> written names).
    """
    if fmt not in _WRITERS:
        raise ValueError(f'unknown synthetic format {fmt!r}; expected one of {sorted(_WRITERS)}')
    if len(nums) != 3 or min(nums) < 0:
        raise ValueError(f'nums must be 3 counts >= 0 (train, val, test), got {nums}')
    size = tuple(size or DEFAULT_SIZES[fmt])
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f'size must be (H, W) with H, W >= 16, got {size}')
    if lists_dir is not None:
        if fmt != 'fmb':
            raise ValueError('lists_dir is only used by the fmb format')
        return make_fmb(out, tuple(nums), seed, size, lists_dir=lists_dir)
    return _WRITERS[fmt](out, tuple(nums), seed, size)


__all__ = ['make_synthetic', 'make_deliver', 'make_fmb', 'make_muses', 'DEFAULT_SIZES']
