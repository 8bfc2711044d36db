// Shared by the CPU and CUDA kernels of ms_deform_attn: argument checks and the bilinear sample.
//
// Conventions (spec model.md section 7): value (N, S, M, D); spatial_shapes (L, 2) int64 (H, W);
// level_start_index (L,) int64; sampling_locations (N, Lq, M, L, P, 2) with (x, y) in [0, 1];
// attention_weights (N, Lq, M, L, P); output (N, Lq, M * D). Locations and weights arrive in the
// accumulation type A (fp32, or fp64 for fp64 values). A sample at pixel coordinates
// (h, w) = (y * H - 0.5, x * W - 0.5) is read only when -1 < h < H and -1 < w < W; each of its four
// bilinear corners outside [0, H-1] x [0, W-1] reads 0.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define MSDA_HD __host__ __device__ __forceinline__
#else
#define MSDA_HD inline
#endif

namespace msda {

constexpr int kMaxLevels = 16;

MSDA_HD float floor_of(float x) { return floorf(x); }
MSDA_HD double floor_of(double x) { return floor(x); }

// The four bilinear corners of one sample: (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1).
template <typename A>
struct Corners {
  int s[4];   // spatial index in the flattened levels (start + y * W + x); -1 = reads zero
  A w[4];     // bilinear weights (attention weight not included); 0 where s == -1
  A lh, lw;   // fractional parts of h and w (for the location gradient)
  bool valid; // inside the window -1 < h < H, -1 < w < W
  int cell;   // (y0 + 1) * (W + 1) + (x0 + 1) in the level's (H + 1) x (W + 1) corner grid; -1 if invalid
};

// Branch-free (the GPU kernels issue all gathers of a batch of samples at once): coordinates of an
// invalid sample are replaced by -2 before the floor, so NaN / huge locations never reach the
// integer conversion, and every corner of an invalid sample is marked outside.
template <typename A>
MSDA_HD Corners<A> bilinear_corners(A x, A y, int height, int width, int start) {
  Corners<A> c;
  const A w_im = x * static_cast<A>(width) - static_cast<A>(0.5);
  const A h_im = y * static_cast<A>(height) - static_cast<A>(0.5);
  c.valid = h_im > static_cast<A>(-1) && w_im > static_cast<A>(-1) &&
            h_im < static_cast<A>(height) && w_im < static_cast<A>(width);
  const A h_floor = floor_of(c.valid ? h_im : static_cast<A>(-2));
  const A w_floor = floor_of(c.valid ? w_im : static_cast<A>(-2));
  const int h0 = static_cast<int>(h_floor);
  const int w0 = static_cast<int>(w_floor);
  c.lh = c.valid ? h_im - h_floor : static_cast<A>(0);
  c.lw = c.valid ? w_im - w_floor : static_cast<A>(0);
  const A hh = static_cast<A>(1) - c.lh;
  const A hw = static_cast<A>(1) - c.lw;
  const bool top = c.valid && h0 >= 0, bottom = c.valid && h0 + 1 <= height - 1;
  const bool left = w0 >= 0, right = w0 + 1 <= width - 1;
  const int row0 = start + h0 * width + w0;
  c.cell = c.valid ? (h0 + 1) * (width + 1) + (w0 + 1) : -1;
  c.s[0] = top && left ? row0 : -1;
  c.s[1] = top && right ? row0 + 1 : -1;
  c.s[2] = bottom && left ? row0 + width : -1;
  c.s[3] = bottom && right ? row0 + width + 1 : -1;
  c.w[0] = top && left ? hh * hw : static_cast<A>(0);
  c.w[1] = top && right ? hh * c.lw : static_cast<A>(0);
  c.w[2] = bottom && left ? c.lh * hw : static_cast<A>(0);
  c.w[3] = bottom && right ? c.lh * c.lw : static_cast<A>(0);
  return c;
}

// d(sample)/dh and d(sample)/dw from the dot products of the upstream gradient with the four
// corner values (dot[k] = 0 for corners outside): sample = sum_k w_k v_k.
template <typename A>
MSDA_HD void bilinear_grads(const Corners<A>& c, const A dot[4], A* grad_h, A* grad_w) {
  const A hh = static_cast<A>(1) - c.lh;
  const A hw = static_cast<A>(1) - c.lw;
  *grad_h = hw * (dot[2] - dot[0]) + c.lw * (dot[3] - dot[1]);
  *grad_w = hh * (dot[1] - dot[0]) + c.lh * (dot[3] - dot[2]);
}

struct Geometry {
  int64_t n, s, m, d, lq, levels, points;
};

// Validates the operator's arguments (the Python wrapper already normalises dtypes and layout).
inline Geometry check_args(const at::Tensor& value, const at::Tensor& spatial_shapes,
                           const at::Tensor& level_start_index, const at::Tensor& loc,
                           const at::Tensor& attn) {
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be (N, S, M, D)");
  TORCH_CHECK(loc.dim() == 6 && loc.size(5) == 2,
              "ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2)");
  Geometry g{value.size(0), value.size(1), value.size(2), value.size(3),
             loc.size(1), loc.size(3), loc.size(4)};
  TORCH_CHECK(loc.size(0) == g.n && loc.size(2) == g.m,
              "ms_deform_attn: sampling_locations does not match value in N or M");
  TORCH_CHECK(attn.dim() == 5 && attn.size(0) == g.n && attn.size(1) == g.lq && attn.size(2) == g.m &&
                  attn.size(3) == g.levels && attn.size(4) == g.points,
              "ms_deform_attn: attention_weights must be (N, Lq, M, L, P)");
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == g.levels && spatial_shapes.size(1) == 2,
              "ms_deform_attn: spatial_shapes must be (L, 2)");
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == g.levels,
              "ms_deform_attn: level_start_index must be (L,)");
  TORCH_CHECK(g.levels <= kMaxLevels, "ms_deform_attn: at most ", kMaxLevels, " levels, got ", g.levels);
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "ms_deform_attn: spatial_shapes and level_start_index must be int64");
  const auto acc = value.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(loc.scalar_type() == acc && attn.scalar_type() == acc,
              "ms_deform_attn: sampling_locations and attention_weights must be ", acc,
              " for value of dtype ", value.scalar_type());
  for (const at::Tensor* t : {&value, &spatial_shapes, &level_start_index, &loc, &attn}) {
    TORCH_CHECK(t->is_contiguous(), "ms_deform_attn: every argument must be contiguous");
    TORCH_CHECK(t->device() == value.device(), "ms_deform_attn: every argument must be on ", value.device());
  }
  TORCH_CHECK(g.n * g.s * g.m < (int64_t(1) << 31) && g.s < (int64_t(1) << 31),
              "ms_deform_attn: N * S * M must stay below 2^31");
  return g;
}

}  // namespace msda
