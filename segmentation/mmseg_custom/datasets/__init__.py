from . import transforms  # noqa: F401
from .deliver import DeliverDataset  # noqa: F401
from .fmb import FMBDataset  # noqa: F401
from .muses import MUSESDataset  # noqa: F401
