
from .ohem_cross_entropy import OhemCrossEntropy  # noqa: F401
