"""Multi-scale deformable attention (MSDeformAttn) op: one function, several backends."""
from .reference import ms_deform_attn_reference

ms_deform_attn = ms_deform_attn_reference

__all__ = ["ms_deform_attn", "ms_deform_attn_reference"]
