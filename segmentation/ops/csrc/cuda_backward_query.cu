// Query-centric backward kernels of ms_deform_attn (the group-per-sample mapping of
// cuda_common.cuh): location and weight gradients from per-lane partial dot products reduced with
// warp shuffles, and the value gradient either
// * by fp32 / fp64 atomics into a zeroed gradient (backward_atomic: the default for fp32 / fp64;
//   16-byte `red.global.add.v4.f32` on sm_90), or
// * deterministically (backward_sorted: opt-in, and the fallback for half-precision shapes the tiled
//   backward does not take): every sample binned by its corner-grid cell, the bins stably sorted by
//   cell (at::sort), then one group per value row sums the samples of the four cells around it in
//   that fixed order (fp32 accumulation, one rounding to the value dtype; bitwise reproducible).
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros_like.h>

#include <tuple>

#include "cuda_common.cuh"
#include "cuda_launch.h"

namespace msda {
namespace {

template <typename A> struct BackwardSlot {
  int4 row;
  A lh, lw, a;
  int key;   // corner-grid cell of the sample (its value-gradient bucket), -1 = outside the window
};

template <typename A, int V, bool VEC4>
__device__ __forceinline__ void atomic_add_lane(A* dst, A coef, const A g[V], int valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if constexpr (VEC4 && std::is_same_v<A, float> && V % 4 == 0) {
#pragma unroll
    for (int v = 0; v < V; v += 4) {
      atomicAdd(reinterpret_cast<float4*>(dst + v),
                make_float4(coef * g[v], coef * g[v + 1], coef * g[v + 2], coef * g[v + 3]));
    }
    return;
  }
#endif
#pragma unroll
  for (int v = 0; v < V; ++v) if (v < valid) atomicAdd(dst + v, coef * g[v]);
}

enum ValueGradMode { kBinned = 0, kAtomic = 1 };

// Location and weight gradients, and the value gradient's raw material: either binned samples
// (kBinned: keys = corner-grid cell, INT_MAX outside the window, and entries, both indexed by sample
// in work order) or, in kAtomic mode, fp32/fp64 atomics into a zeroed buffer.
template <typename T, bool ALIGNED, int MODE, int LEVELS, int POINTS, int LOG2G>
__global__ void __launch_bounds__(kThreads, min_blocks(LEVELS)) backward_kernel(
    const T* __restrict__ grad_out, const T* __restrict__ value, const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts, const acc_t<T>* __restrict__ loc, const acc_t<T>* __restrict__ attn,
    acc_t<T>* __restrict__ grad_value_acc, int* __restrict__ keys, Entry<acc_t<T>>* __restrict__ entries,
    acc_t<T>* __restrict__ grad_loc, acc_t<T>* __restrict__ grad_attn, Dims dims) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  __shared__ LevelTable lv;
  __shared__ BackwardSlot<A> slots[kThreads * kBatch];
  load_levels(lv, shapes, starts, dims.levels);
  const int log2g = LOG2G >= 0 ? LOG2G : dims.log2g;
  const int points = POINTS > 0 ? POINTS : dims.points;
  const int G = 1 << log2g;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t group = thread >> log2g;
  const int lane = static_cast<int>(thread & (G - 1));
  const int c0 = lane * V;
  const bool active = group < dims.groups;
  int64_t n;
  int m;
  const int64_t mem_group = memory_group(active ? group : dims.groups - 1, dims, &n, &m);
  const bool has_ch = active && c0 < dims.d;
  const int valid = max(0, min(V, dims.d - c0));
  const int64_t row_stride = static_cast<int64_t>(dims.m) * dims.d;
  const T* vbase = value + (n * dims.s * dims.m + m) * dims.d + (has_ch ? c0 : 0);
  const int samples = LEVELS > 0 ? LEVELS * POINTS : dims.levels * dims.points;
  const A* lg = loc + mem_group * samples * 2;
  const A* ag = attn + mem_group * samples;
  const int chunk = max(G, kBatch);
  BackwardSlot<A>* table = slots + (threadIdx.x >> log2g) * chunk;
  const int key_base = static_cast<int>((n * dims.m + m) * lv.cells);

  A g[V];
  {
    LaneData<T, ALIGNED> d;
    if (has_ch) d.load(grad_out + mem_group * dims.d + c0, valid);
    else d.zero();
    d.get(g);
  }
#pragma unroll
  for (int j0 = 0; j0 < samples; j0 += chunk) {
#pragma unroll
    for (int i = lane; i < chunk; i += G) {
      const int j = min(j0 + i, samples - 1);
      const int l = j / points;
      const Corners<A> c = bilinear_corners<A>(__ldg(lg + 2 * j), __ldg(lg + 2 * j + 1), lv.height[l],
                                               lv.width[l], lv.start[l]);
      BackwardSlot<A> slot;
      slot.row = make_int4(c.s[0], c.s[1], c.s[2], c.s[3]);
      slot.lh = c.lh;
      slot.lw = c.lw;
      slot.a = j0 + i < samples ? __ldg(ag + j) : A(0);
      slot.key = c.valid ? key_base + lv.cell_start[l] + c.cell : -1;
      table[i] = slot;
      if constexpr (MODE == kBinned) {
        if (active && j0 + i < samples) {  // binned in work order
          const int64_t e = group * samples + j;
          keys[e] = slot.key >= 0 ? slot.key : INT_MAX;
          Entry<A> entry;
          entry.a = slot.a;
          entry.lh = c.lh;
          entry.lw = c.lw;
          entry.group = static_cast<int>(mem_group);
          entries[e] = entry;
        }
      }
    }
    __syncwarp();
    const int count = min(chunk, samples - j0);
#pragma unroll
    for (int i0 = 0; i0 < count; i0 += kBatch) {
      BackwardSlot<A> sl[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) sl[b] = table[min(i0 + b, count - 1)];
      LaneData<T, ALIGNED> data[kBatch][4];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const bool real = has_ch && i0 + b < count;
        const int rows[4] = {sl[b].row.x, sl[b].row.y, sl[b].row.z, sl[b].row.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) gather_row(data[b][k], vbase, real ? rows[k] : -1, row_stride, valid);
      }
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        A dot[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          A x[V];
          data[b][k].get(x);
          A sum = A(0);
#pragma unroll
          for (int v = 0; v < V; ++v) sum += g[v] * x[v];
          dot[k] = sum;
        }
        Corners<A> c;  // the parts bilinear_grads reads
        c.lh = sl[b].lh;
        c.lw = sl[b].lw;
        const A hh = A(1) - c.lh, hw = A(1) - c.lw;
        const A w[4] = {hh * hw, hh * c.lw, c.lh * hw, c.lh * c.lw};
        A grad_a = w[0] * dot[0] + w[1] * dot[1] + w[2] * dot[2] + w[3] * dot[3];
        A grad_h, grad_w;
        bilinear_grads(c, dot, &grad_h, &grad_w);
#pragma unroll
        for (int offset = G >> 1; offset > 0; offset >>= 1) {
          grad_a += __shfl_xor_sync(0xffffffffu, grad_a, offset);
          grad_h += __shfl_xor_sync(0xffffffffu, grad_h, offset);
          grad_w += __shfl_xor_sync(0xffffffffu, grad_w, offset);
        }
        const int i = i0 + b;
        if (active && i < count && ((i & (G - 1)) == lane)) {
          const int j = j0 + i;
          const int l = j / points;
          const int64_t e = mem_group * samples + j;
          const bool inside = sl[b].key >= 0;
          grad_attn[e] = grad_a;
          grad_loc[2 * e] = inside ? sl[b].a * grad_w * static_cast<A>(lv.width[l]) : A(0);
          grad_loc[2 * e + 1] = inside ? sl[b].a * grad_h * static_cast<A>(lv.height[l]) : A(0);
        }
        if constexpr (MODE == kAtomic) {
          const int rows[4] = {sl[b].row.x, sl[b].row.y, sl[b].row.z, sl[b].row.w};
          if (has_ch && i0 + b < count) {
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              if (rows[k] >= 0) {
                atomic_add_lane<A, V, ALIGNED>(grad_value_acc + ((n * dims.s + rows[k]) * dims.m + m) * dims.d + c0,
                                               sl[b].a * w[k], g, valid);
              }
            }
          }
        }
      }
    }
    __syncwarp();
  }
}

// Value gradient, one group per value row (n, s, m) at (y, x) of level l: sums the binned samples
// whose bilinear footprint covers the row. Those sit in four corner-grid cells, two pairs of
// adjacent cells, so two contiguous bucket ranges: cells (y0, x0) = (y-1, x-1), (y-1, x) (the row
// is their bottom-right / bottom-left corner) and (y, x-1), (y, x) (top-right / top-left). Every row
// is written once: no zero-fill, no atomics, fp32 accumulation, one rounding to T.
// Entries in sample order; perm lists them bucket by bucket, each bucket in sample order.
template <typename T, bool ALIGNED>
__global__ void __launch_bounds__(kThreads, 8) value_grad_kernel(
    const T* __restrict__ grad_out, const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
    const Entry<acc_t<T>>* __restrict__ entries, const int* __restrict__ perm, const int* __restrict__ offsets,
    T* __restrict__ grad_value, int64_t rows, Dims dims) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  constexpr int kUnroll = 4;
  __shared__ LevelTable lv;
  load_levels(lv, shapes, starts, dims.levels);
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t row = thread >> dims.log2g;
  const int c0 = static_cast<int>(thread & ((1 << dims.log2g) - 1)) * V;
  if (row >= rows || c0 >= dims.d) return;
  const int valid = min(V, dims.d - c0);
  // rows = N * S * M < 2^31 (check_args): 32-bit divisions
  const unsigned r = static_cast<unsigned>(row), ns = r / static_cast<unsigned>(dims.m);
  const int m = static_cast<int>(r - ns * static_cast<unsigned>(dims.m));
  const unsigned n = ns / static_cast<unsigned>(dims.s);
  const int s = static_cast<int>(ns - n * static_cast<unsigned>(dims.s));
  int l = 0;
  for (int k = 1; k < dims.levels; ++k) l = s >= lv.start[k] ? k : l;
  const int width = lv.width[l];
  const int local = s - lv.start[l];
  const int y = local / width, x = local - (local / width) * width;
  const int base = (static_cast<int>(n) * dims.m + m) * lv.cells + lv.cell_start[l] + x;
  A acc[V];
#pragma unroll
  for (int v = 0; v < V; ++v) acc[v] = A(0);
#pragma unroll
  for (int top = 0; top < 2; ++top) {  // top = 1: cells of row y0 = y (the row is a top corner)
    const int first = base + (y + top) * (width + 1);
    const int begin = __ldg(offsets + first), middle = __ldg(offsets + first + 1), end = __ldg(offsets + first + 2);
    for (int e = begin; e < end; e += kUnroll) {
      Entry<A> en[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int at = min(e + u, end - 1);
        en[u] = entries[__ldg(perm + at)];
      }
      LaneData<T, ALIGNED> gd[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) gd[u].load(grad_out + static_cast<int64_t>(en[u].group) * dims.d + c0, valid);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const A wy = top ? A(1) - en[u].lh : en[u].lh;
        const A wx = e + u < middle ? en[u].lw : A(1) - en[u].lw;  // first cell: x0 = x - 1
        const A coef = e + u < end ? en[u].a * wy * wx : A(0);
        A xg[V];
        gd[u].get(xg);
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] += coef * xg[v];
      }
    }
  }
  store_lane<T, ALIGNED>(grad_value + row * dims.d + c0, acc, valid);
}

}  // namespace

at::Tensor backward_atomic(const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
                           const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn,
                           const at::Tensor& grad_loc, const at::Tensor& grad_attn, const Geometry& geo) {
  TORCH_CHECK(value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble,
              "ms_deform_attn: the atomic backward takes fp32 / fp64 values");
  const int64_t groups = geo.n * geo.lq * geo.m;
  at::Tensor grad_value = at::zeros_like(value);
  dispatch_value_type(value.scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    using T = typename CudaType<S>::type;
    using A = acc_t<T>;
    if constexpr (std::is_same_v<T, A>) {
      const int log2g = log2_group(geo.d, kVec<T>);
      const Dims dims = make_dims(geo, log2g);
      const bool aligned = geo.d % kVec<T> == 0 && aligned16(value) && aligned16(grad_output);
      const auto stream = c10::cuda::getCurrentCUDAStream();
      dispatch_shape<T>(aligned, dims, [&](auto al, auto lv, auto pt, auto lg) {
        backward_kernel<T, decltype(al)::value, kAtomic, decltype(lv)::value, decltype(pt)::value, decltype(lg)::value>
            <<<blocks_for(groups << log2g), kThreads, 0, stream>>>(
                reinterpret_cast<const T*>(grad_output.data_ptr<S>()), reinterpret_cast<const T*>(value.data_ptr<S>()),
                spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(), loc.data_ptr<A>(),
                attn.data_ptr<A>(), reinterpret_cast<A*>(grad_value.data_ptr<S>()), nullptr, nullptr,
                grad_loc.data_ptr<A>(), grad_attn.data_ptr<A>(), dims);
      });
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return grad_value;
}

at::Tensor backward_sorted(const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
                           const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn,
                           const at::Tensor& grad_loc, const at::Tensor& grad_attn, const Geometry& geo) {
  const int64_t groups = geo.n * geo.lq * geo.m;
  const int64_t samples = groups * geo.levels * geo.points;
  // corner-grid cells: sum_l (H_l + 1)(W_l + 1) <= 2 S + 2 L per (batch, head) (no host sync)
  const int64_t cells = geo.n * geo.m * (2 * geo.s + 2 * geo.levels);
  TORCH_CHECK(samples < INT_MAX && cells < INT_MAX, "ms_deform_attn: too many samples for the CUDA backward");
  at::Tensor grad_value = at::empty_like(value);
  dispatch_value_type(value.scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    using T = typename CudaType<S>::type;
    using A = acc_t<T>;
    const int log2g = log2_group(geo.d, kVec<T>);
    const Dims dims = make_dims(geo, log2g);
    const bool aligned = geo.d % kVec<T> == 0 && aligned16(value) && aligned16(grad_output);
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const T* go = reinterpret_cast<const T*>(grad_output.data_ptr<S>());
    const T* val = reinterpret_cast<const T*>(value.data_ptr<S>());
    const int64_t* shp = spatial_shapes.data_ptr<int64_t>();
    const int64_t* st = level_start_index.data_ptr<int64_t>();
    const auto int_opts = value.options().dtype(at::kInt);
    at::Tensor keys = at::empty({samples}, int_opts);
    at::Tensor entries = at::empty({samples * static_cast<int64_t>(sizeof(Entry<A>))}, value.options().dtype(at::kByte));
    auto* ent = reinterpret_cast<Entry<A>*>(entries.data_ptr<uint8_t>());
    dispatch_shape<T>(aligned, dims, [&](auto al, auto lv, auto pt, auto lg) {
      backward_kernel<T, decltype(al)::value, kBinned, decltype(lv)::value, decltype(pt)::value, decltype(lg)::value>
          <<<blocks_for(groups << log2g), kThreads, 0, stream>>>(
              go, val, shp, st, loc.data_ptr<A>(), attn.data_ptr<A>(), nullptr, keys.data_ptr<int>(), ent,
              grad_loc.data_ptr<A>(), grad_attn.data_ptr<A>(), dims);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    const at::Tensor perm = std::get<1>(sorted).to(at::kInt);
    const at::Tensor offsets = at::searchsorted(std::get<0>(sorted), at::arange(cells + 1, int_opts)).to(at::kInt);
    const int64_t rows = geo.n * geo.s * geo.m;
    T* gv = reinterpret_cast<T*>(grad_value.data_ptr<S>());
    const auto launch = [&](auto al) {
      value_grad_kernel<T, decltype(al)::value><<<blocks_for(rows << log2g), kThreads, 0, stream>>>(
          go, shp, st, ent, perm.data_ptr<int>(), offsets.data_ptr<int>(), gv, rows, dims);
    };
    if (aligned) launch(std::true_type{});
    else launch(std::false_type{});
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_value;
}

}  // namespace msda
