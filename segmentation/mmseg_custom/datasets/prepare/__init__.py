"""Preparation of the raw dataset releases into the layouts the dataset classes read."""
from .deliver import prepare_deliver
from .fmb import prepare_fmb

__all__ = ['prepare_deliver', 'prepare_fmb']
