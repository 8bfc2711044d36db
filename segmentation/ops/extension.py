"""The compiled backend: ``torch.library`` operators, their fake and autograd rules, and loading.

Operators (schemas defined here, kernels registered by the compiled libraries for CPU and CUDA):

* ``ms_deform_attn::forward(value, spatial_shapes, level_start_index, sampling_locations,
  attention_weights, streaming=False) -> Tensor`` (N, Lq, M * D). ``streaming``: no backward will
  read the locations and weights (inference), so the CUDA kernels may load them past the caches;
  the values computed are the same;
* ``ms_deform_attn::backward(grad_output, value, spatial_shapes, level_start_index,
  sampling_locations, attention_weights, deterministic, saved_inputs=False) -> (grad_value,
  grad_locations, grad_weights)``. ``saved_inputs``: value, locations and shapes were written before
  the forward ran (autograd passes its saved tensors), so on sm_90 the backward's kernels may read
  them while the kernel before them drains; without it they wait for that kernel first.

Locations and weights must already be in the accumulation dtype (fp32; fp64 for fp64 values);
:func:`native_forward` does that cast, so autograd casts their gradients back. The fake
implementations let ``torch.compile`` trace through the operators without running them.

Where a library comes from, in this order: one built by ``pip`` into the package
(``_C_<flavour>*.so``, see setup.py), one built in place by make.sh / build.py
(``build/<flavour>/``), or a JIT build into that folder (once; a C++ compiler and ninja, plus nvcc for
CUDA; ~15 s of compiler time for CPU, ~1 min for CUDA). ``MS_DEFORM_ATTN_JIT=0`` disables the JIT build.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch

from . import build
from .checks import compute_dtype
from .config import deterministic_enabled

logger = logging.getLogger(__name__)

NAMESPACE = "ms_deform_attn"
BUILD_HINT = ("build it with `bash segmentation/ops/make.sh` (or `MS_DEFORM_ATTN_BUILD_EXT=1 pip install "
              "--no-build-isolation -e .`), see docs/ops.md")

_LIBRARY: torch.library.Library | None = None
_STATUS: dict[str, bool] = {}      # flavour -> loaded
_ERRORS: dict[str, str] = {}       # flavour -> why it is not loaded
_JIT_TRIED: set[str] = set()       # flavours whose JIT build was attempted


def _register_operators() -> None:
    """Define the schemas, fake kernels and autograd once per process (idempotent)."""
    global _LIBRARY
    if _LIBRARY is not None or hasattr(torch.ops, NAMESPACE) and hasattr(getattr(torch.ops, NAMESPACE), "forward"):
        return
    _LIBRARY = torch.library.Library(NAMESPACE, "DEF")
    _LIBRARY.define("forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
                    "Tensor sampling_locations, Tensor attention_weights, bool streaming=False) -> Tensor")
    _LIBRARY.define("backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
                    "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights, "
                    "bool deterministic, bool saved_inputs=False) -> (Tensor, Tensor, Tensor)")

    @torch.library.register_fake(f"{NAMESPACE}::forward", lib=_LIBRARY)
    def _forward_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                      streaming=False):
        n, _, m, d = value.shape
        return value.new_empty((n, sampling_locations.shape[1], m * d))

    @torch.library.register_fake(f"{NAMESPACE}::backward", lib=_LIBRARY)
    def _backward_fake(grad_output, value, spatial_shapes, level_start_index, sampling_locations,
                       attention_weights, deterministic, saved_inputs=False):
        return (torch.empty_like(value), torch.empty_like(sampling_locations),
                torch.empty_like(attention_weights))

    def _setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:5])
        ctx.deterministic = deterministic_enabled()

    def _backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, locations, weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = torch.ops.ms_deform_attn.backward(
            grad_output.contiguous(), value, spatial_shapes, level_start_index, locations, weights,
            ctx.deterministic, True)
        return grad_value, None, None, grad_locations, grad_weights, None

    torch.library.register_autograd(f"{NAMESPACE}::forward", _backward, setup_context=_setup_context,
                                    lib=_LIBRARY)


def _pip_built(flavour: str) -> Path | None:
    found = sorted(build.PKG_DIR.glob(f"_C_{flavour}*.so")) + sorted(build.PKG_DIR.glob(f"_C_{flavour}*.pyd"))
    return found[0] if found else None


def _jit_allowed() -> bool:
    return os.environ.get("MS_DEFORM_ATTN_JIT", "1") != "0"


def _missing_tools(flavour: str) -> str | None:
    """Why a JIT build cannot start here (checked up front, so that a failing build costs nothing)."""
    from torch.utils import cpp_extension

    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "no C++ compiler"
    if not cpp_extension.is_ninja_available():
        return "no ninja"
    if flavour == "cuda" and (cpp_extension.CUDA_HOME is None or torch.version.cuda is None):
        return "no CUDA toolkit (nvcc) or a CPU-only torch"
    return None


def _load(flavour: str, jit: bool) -> None:
    _register_operators()
    path = _pip_built(flavour) or build.fresh_library(flavour)
    if path is None:
        if not jit:
            raise RuntimeError(f"no compiled {flavour} library (JIT build disabled: MS_DEFORM_ATTN_JIT=0)")
        missing = _missing_tools(flavour)
        if missing:
            raise RuntimeError(f"no compiled {flavour} library and no JIT build possible ({missing})")
        logger.warning("ms_deform_attn: JIT-building the %s kernels into %s (once; takes a minute)",
                       flavour, build.BUILD_ROOT / flavour)
        path = build.build(flavour)
    torch.ops.load_library(str(path))


def native_available(device_type: str, jit: bool | None = None) -> bool:
    """Whether compiled kernels for ``device_type`` ('cpu' or 'cuda') are loaded, loading them once.

    ``jit``: whether a missing library may be built now (None: unless ``MS_DEFORM_ATTN_JIT=0``).
    A load that failed without JIT is retried when JIT is asked for later.
    """
    if device_type not in ("cpu", "cuda"):
        return False
    flavour = device_type
    jit = _jit_allowed() if jit is None else jit
    if not _STATUS.get(flavour) and (flavour not in _STATUS or (jit and flavour not in _JIT_TRIED)):
        if jit:
            _JIT_TRIED.add(flavour)
        try:
            _load(flavour, jit)
            _STATUS[flavour] = True
        except Exception as error:  # noqa: BLE001 (any build/load failure means: not available)
            _STATUS[flavour] = False
            _ERRORS[flavour] = f"{type(error).__name__}: {error}".strip()[:500]
            logger.info("ms_deform_attn: no %s kernels: %s", flavour, _ERRORS[flavour])
    return _STATUS[flavour]


def unavailable_reason(device_type: str) -> str:
    return _ERRORS.get("cuda" if device_type == "cuda" else "cpu", "not loaded")


def native_supports(value: torch.Tensor, num_levels: int) -> bool:
    """Shapes the compiled kernels take: at most 16 levels; on CUDA, D <= 32 x 16 bytes of channels."""
    if num_levels > 16:
        return False
    return value.device.type != "cuda" or value.shape[-1] <= 32 * (16 // value.element_size())


def native_forward(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> torch.Tensor:
    """Call the compiled operator (differentiable; kernels must be loaded for value's device).

    Without a gradient to compute (``torch.no_grad``, or no input requiring one) the operator
    streams its inputs: no backward will read them again.
    """
    dtype = compute_dtype(value.dtype)
    device = value.device
    training = torch.is_grad_enabled() and (
        value.requires_grad or sampling_locations.requires_grad or attention_weights.requires_grad)
    return torch.ops.ms_deform_attn.forward(
        value.contiguous(),
        spatial_shapes.to(device=device, dtype=torch.int64).contiguous(),
        level_start_index.to(device=device, dtype=torch.int64).contiguous(),
        sampling_locations.to(dtype).contiguous(),
        attention_weights.to(dtype).contiguous(),
        not training)
