// CUDA implementations of the operators ms_deform_attn::forward / ms_deform_attn::backward:
// argument checks, allocation and the choice between the backward variants (cuda_launch.h).
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "common.h"
#include "cuda_launch.h"

namespace msda {
namespace {

at::Tensor forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn,
                        bool streaming) {
  const Geometry geo = check_args(value, spatial_shapes, level_start_index, loc, attn);
  const c10::cuda::CUDAGuard guard(value.device());
  if (geo.s == 0) return at::zeros({geo.n, geo.lq, geo.m * geo.d}, value.options());
  at::Tensor out = at::empty({geo.n, geo.lq, geo.m * geo.d}, value.options());
  if (out.numel() > 0) launch_forward(value, spatial_shapes, level_start_index, loc, attn, out, geo, streaming);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn, bool deterministic,
    bool saved_inputs) {
  const Geometry geo = check_args(value, spatial_shapes, level_start_index, loc, attn);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.numel() == geo.n * geo.lq * geo.m * geo.d && grad_output.device() == value.device(),
              "ms_deform_attn: grad_output must be a contiguous (N, Lq, M * D) tensor like value");
  const c10::cuda::CUDAGuard guard(value.device());
  at::Tensor grad_loc = at::empty_like(loc);
  at::Tensor grad_attn = at::empty_like(attn);
  if (geo.n * geo.lq * geo.m == 0 || geo.s == 0) {
    grad_loc.zero_();
    grad_attn.zero_();
    return {at::zeros_like(value), grad_loc, grad_attn};
  }
  const bool full = value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble;
  at::Tensor grad_value;
  if (!deterministic && !full && tiled_supported(grad_output, value, loc, geo)) {
    grad_value = backward_tiled(grad_output, value, spatial_shapes, level_start_index, loc, attn, grad_loc, grad_attn,
                                geo, saved_inputs);
  } else {
    const auto backward = deterministic || !full ? backward_sorted : backward_atomic;
    grad_value = backward(grad_output, value, spatial_shapes, level_start_index, loc, attn, grad_loc, grad_attn, geo);
  }
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(ms_deform_attn, CUDA, m) {
  m.impl("forward", &forward_cuda);
  m.impl("backward", &backward_cuda);
}

}  // namespace msda
