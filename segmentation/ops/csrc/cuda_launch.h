// Host entry points of the CUDA kernels of ms_deform_attn (cuda_ops.cu checks and allocates;
// each .cu launches its kernels on the current stream). Shapes and dtypes as in common.h.
#pragma once

#include <ATen/core/Tensor.h>

#include "common.h"

namespace msda {

// out (N, Lq, M * D), allocated, uninitialised: every element is written. streaming: no backward
// will read loc and attn (cuda_forward.cu).
void launch_forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                    const at::Tensor& loc, const at::Tensor& attn, const at::Tensor& out, const Geometry& geo,
                    bool streaming);

// The backward variants: each returns grad_value and fills grad_loc and grad_attn (uninitialised on
// entry; every element is written).
//
// cuda_backward_tiled.cu, the default for 16-byte aligned fp16 / bf16 values of head dim 8, 16, 32 or
// 64 (tiled_supported): samples binned by 8 x 8 value tile, the tile's value gradient accumulated on
// the tensor cores and written once.
// saved_inputs: value, loc and the shapes were written before the forward ran (autograd's saved
// tensors); on sm_90 the binning and tile kernels then read them while the kernel before the
// backward drains, otherwise only once it has completed.
bool tiled_supported(const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& loc,
                     const Geometry& geo);
at::Tensor backward_tiled(const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
                          const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn,
                          const at::Tensor& grad_loc, const at::Tensor& grad_attn, const Geometry& geo,
                          bool saved_inputs);

// cuda_backward_query.cu, the default for fp32 / fp64: fp32 / fp64 atomics into a zeroed gradient.
at::Tensor backward_atomic(const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
                           const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn,
                           const at::Tensor& grad_loc, const at::Tensor& grad_attn, const Geometry& geo);

// cuda_backward_query.cu, deterministic (opt-in, and the fallback for other half-precision shapes):
// samples stably sorted by corner cell, each value row summed in that fixed order (bitwise
// reproducible).
at::Tensor backward_sorted(const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
                           const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn,
                           const at::Tensor& grad_loc, const at::Tensor& grad_attn, const Geometry& geo);

}  // namespace msda
