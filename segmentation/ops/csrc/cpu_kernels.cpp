// CPU kernels of ms_deform_attn::forward / ms_deform_attn::backward.
//
// Forward: parallel over (batch, query, head) groups. Backward: parallel over (batch, head) pairs;
// each pair owns the rows value[n, :, m, :] of the value gradient, so it is accumulated without
// atomics and in a fixed order (deterministic for any thread count). fp16/bf16 accumulate in fp32.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "common.h"

namespace msda {
namespace {

struct Levels {
  std::vector<int> height, width, start;
};

Levels read_levels(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index) {
  Levels lv;
  const int64_t* shapes = spatial_shapes.data_ptr<int64_t>();
  const int64_t* starts = level_start_index.data_ptr<int64_t>();
  for (int64_t l = 0; l < spatial_shapes.size(0); ++l) {
    lv.height.push_back(static_cast<int>(shapes[2 * l]));
    lv.width.push_back(static_cast<int>(shapes[2 * l + 1]));
    lv.start.push_back(static_cast<int>(starts[l]));
  }
  return lv;
}

template <typename T, typename A>
void forward_impl(const T* value, const A* loc, const A* attn, T* out, const Geometry& g, const Levels& lv) {
  const int64_t samples = g.levels * g.points;
  at::parallel_for(0, g.n * g.lq * g.m, 16, [&](int64_t begin, int64_t end) {
    std::vector<A> acc(g.d);
    for (int64_t group = begin; group < end; ++group) {
      const int64_t m = group % g.m;
      const int64_t n = group / (g.lq * g.m);
      std::fill(acc.begin(), acc.end(), static_cast<A>(0));
      for (int64_t j = 0; j < samples; ++j) {
        const int64_t l = j / g.points;
        const A* xy = loc + (group * samples + j) * 2;
        const Corners<A> c = bilinear_corners<A>(xy[0], xy[1], lv.height[l], lv.width[l], lv.start[l]);
        if (!c.valid) continue;
        const A a = attn[group * samples + j];
        for (int k = 0; k < 4; ++k) {
          if (c.s[k] < 0) continue;
          const T* v = value + ((n * g.s + c.s[k]) * g.m + m) * g.d;
          const A wk = a * c.w[k];
          for (int64_t d = 0; d < g.d; ++d) acc[d] += wk * static_cast<A>(v[d]);
        }
      }
      T* o = out + group * g.d;
      for (int64_t d = 0; d < g.d; ++d) o[d] = static_cast<T>(acc[d]);
    }
  });
}

template <typename T, typename A>
void backward_impl(const T* grad_out, const T* value, const A* loc, const A* attn, A* grad_value,
                   A* grad_loc, A* grad_attn, const Geometry& g, const Levels& lv) {
  const int64_t samples = g.levels * g.points;
  at::parallel_for(0, g.n * g.m, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> go(g.d);
    for (int64_t nm = begin; nm < end; ++nm) {
      const int64_t n = nm / g.m;
      const int64_t m = nm % g.m;
      for (int64_t q = 0; q < g.lq; ++q) {
        const int64_t group = (n * g.lq + q) * g.m + m;
        for (int64_t d = 0; d < g.d; ++d) go[d] = static_cast<A>(grad_out[group * g.d + d]);
        for (int64_t j = 0; j < samples; ++j) {
          const int64_t l = j / g.points;
          const int64_t e = group * samples + j;
          const Corners<A> c = bilinear_corners<A>(loc[2 * e], loc[2 * e + 1], lv.height[l], lv.width[l], lv.start[l]);
          A dot[4] = {0, 0, 0, 0};
          const A a = attn[e];
          for (int k = 0; k < 4; ++k) {
            if (c.s[k] < 0) continue;
            const int64_t row = ((n * g.s + c.s[k]) * g.m + m) * g.d;
            const T* v = value + row;
            A* gv = grad_value + row;
            const A coef = a * c.w[k];
            A sum = 0;
            for (int64_t d = 0; d < g.d; ++d) {
              sum += go[d] * static_cast<A>(v[d]);
              gv[d] += coef * go[d];
            }
            dot[k] = sum;
          }
          A grad_h, grad_w;
          bilinear_grads(c, dot, &grad_h, &grad_w);
          grad_attn[e] = c.w[0] * dot[0] + c.w[1] * dot[1] + c.w[2] * dot[2] + c.w[3] * dot[3];
          grad_loc[2 * e] = c.valid ? a * grad_w * static_cast<A>(lv.width[l]) : static_cast<A>(0);
          grad_loc[2 * e + 1] = c.valid ? a * grad_h * static_cast<A>(lv.height[l]) : static_cast<A>(0);
        }
      }
    }
  });
}

template <typename F>
void dispatch_value_type(at::ScalarType type, F&& f) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, type, "ms_deform_attn_cpu", [&] {
    using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    f(scalar_t{}, A{});
  });
}

at::Tensor forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                       const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn,
                       bool /*streaming*/) {
  const Geometry g = check_args(value, spatial_shapes, level_start_index, loc, attn);
  const Levels lv = read_levels(spatial_shapes, level_start_index);
  at::Tensor out = at::empty({g.n, g.lq, g.m * g.d}, value.options());
  dispatch_value_type(value.scalar_type(), [&](auto t, auto a) {
    using T = decltype(t);
    using A = decltype(a);
    forward_impl<T, A>(value.data_ptr<T>(), loc.data_ptr<A>(), attn.data_ptr<A>(), out.data_ptr<T>(), g, lv);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn, bool /*deterministic*/,
    bool /*saved_inputs*/) {
  const Geometry g = check_args(value, spatial_shapes, level_start_index, loc, attn);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.numel() == g.n * g.lq * g.m * g.d,
              "ms_deform_attn: grad_output must be a contiguous (N, Lq, M * D) tensor of value's dtype");
  const Levels lv = read_levels(spatial_shapes, level_start_index);
  at::Tensor grad_loc = at::empty_like(loc);
  at::Tensor grad_attn = at::empty_like(attn);
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(loc.scalar_type()));
  dispatch_value_type(value.scalar_type(), [&](auto t, auto a) {
    using T = decltype(t);
    using A = decltype(a);
    backward_impl<T, A>(grad_output.data_ptr<T>(), value.data_ptr<T>(), loc.data_ptr<A>(), attn.data_ptr<A>(),
                        grad_value.data_ptr<A>(), grad_loc.data_ptr<A>(), grad_attn.data_ptr<A>(), g, lv);
  });
  return {grad_value.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(ms_deform_attn, CPU, m) {
  m.impl("forward", &forward_cpu);
  m.impl("backward", &backward_cpu);
}

}  // namespace msda
