from . import transforms  # noqa: F401
from .deliver import DeliverDataset  # noqa: F401
