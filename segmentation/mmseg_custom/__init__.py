"""MM SAM-Adapter: an MMSegmentation 1.x plugin for multimodal semantic segmentation.

Importing this package applies the compatibility fix-ups (``compat``) and registers
every model, dataset, transform and metric in mmseg's registries.
"""
from .compat import install as _install_compat

_install_compat()

from . import datasets, engine, evaluation, models  # noqa: E402,F401  (registration)

__version__ = "0.1.0"
