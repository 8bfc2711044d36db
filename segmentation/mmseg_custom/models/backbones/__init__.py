
from .mm_sam_adapter import MMSAMAdapter, MMSAMAdapterWithCP  # noqa: F401
