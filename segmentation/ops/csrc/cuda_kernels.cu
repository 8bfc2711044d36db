// CUDA kernels of ms_deform_attn::forward / ms_deform_attn::backward.
//
// Work split: one group of G lanes per (batch, query, head); each lane owns 16 bytes of channels
// (8 bf16/fp16, 4 fp32, 2 fp64) and G = next power of two of D / (channels per lane), so a
// group reads each value row with 16-byte loads. Per batch of kBatch samples a lane first computes
// all corner indices and weights, then issues all 4 * kBatch gathers, then does the math.
// Locations, weights and accumulation are fp32 (fp64 for fp64). Every output element is written
// by exactly one lane: no zero-fill pass for the output or the location / weight gradients.
//
// Backward: the same mapping. Location and weight gradients: per-lane partial dot products reduced
// over the group with warp shuffles. Value gradient: fp32 atomics into a zeroed buffer (16-byte
// vector atomics on sm_90), or, in deterministic mode, (row, coefficient) pairs per corner that are
// stably sorted by row and summed in that fixed order by one group per value row.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/searchsorted.h>
#include <ATen/ops/sort.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/library.h>

#include <climits>
#include <tuple>

#include "common.h"

namespace msda {
namespace {

// Tuning knobs (compile-time; docs/ops.md records the measured choice).
#ifndef MSDA_THREADS
#define MSDA_THREADS 128
#endif
#ifndef MSDA_BATCH
#define MSDA_BATCH 4
#endif
constexpr int kThreads = MSDA_THREADS;
constexpr int kBatch = MSDA_BATCH;  // samples whose gathers are in flight together

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> using acc_t = typename AccOf<T>::type;
template <typename T> constexpr int kVec = 16 / static_cast<int>(sizeof(T));

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_acc(acc_t<T> x);
template <> __device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <> __device__ __forceinline__ double from_acc<double>(double x) { return x; }
template <> __device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// 16 bytes <-> kVec<T> accumulator values.
__device__ __forceinline__ void unpack(const uint4& r, float out[4]) {
  out[0] = __uint_as_float(r.x); out[1] = __uint_as_float(r.y);
  out[2] = __uint_as_float(r.z); out[3] = __uint_as_float(r.w);
}
__device__ __forceinline__ void unpack(const uint4& r, double out[2]) {
  out[0] = __hiloint2double(static_cast<int>(r.y), static_cast<int>(r.x));
  out[1] = __hiloint2double(static_cast<int>(r.w), static_cast<int>(r.z));
}
template <typename T>
__device__ __forceinline__ void unpack_half_words(const uint4& r, float out[8]) {
  const unsigned words[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      out[2 * i] = __uint_as_float(words[i] << 16);
      out[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    } else {
      out[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(words[i] & 0xffffu)));
      out[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(words[i] >> 16)));
    }
  }
}
template <typename T>
__device__ __forceinline__ void unpack_vec(const uint4& r, acc_t<T> out[kVec<T>]) {
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
    unpack_half_words<T>(r, out);
  } else {
    unpack(r, out);
  }
}

template <typename T>
__device__ __forceinline__ unsigned short bits16(T x) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat16_as_ushort(x);
  else return __half_as_ushort(x);
}

template <typename T>
__device__ __forceinline__ uint4 pack_vec(const acc_t<T> in[kVec<T>]) {
  uint4 r;
  if constexpr (std::is_same_v<T, float>) {
    r = make_uint4(__float_as_uint(in[0]), __float_as_uint(in[1]), __float_as_uint(in[2]), __float_as_uint(in[3]));
  } else if constexpr (std::is_same_v<T, double>) {
    r = make_uint4(static_cast<unsigned>(__double2loint(in[0])), static_cast<unsigned>(__double2hiint(in[0])),
                   static_cast<unsigned>(__double2loint(in[1])), static_cast<unsigned>(__double2hiint(in[1])));
  } else {
    unsigned words[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      words[i] = static_cast<unsigned>(bits16(from_acc<T>(in[2 * i]))) |
                 (static_cast<unsigned>(bits16(from_acc<T>(in[2 * i + 1]))) << 16);
    }
    r = make_uint4(words[0], words[1], words[2], words[3]);
  }
  return r;
}

// The kVec<T> channels of one lane: one 16-byte load (ALIGNED) or element loads with a bound.
template <typename T, bool ALIGNED> struct LaneData;

template <typename T> struct LaneData<T, true> {
  uint4 raw;
  __device__ __forceinline__ void load(const T* p, int) { raw = __ldg(reinterpret_cast<const uint4*>(p)); }
  __device__ __forceinline__ void zero() { raw = make_uint4(0u, 0u, 0u, 0u); }
  __device__ __forceinline__ void get(acc_t<T> out[kVec<T>]) const { unpack_vec<T>(raw, out); }
};

template <typename T> struct LaneData<T, false> {
  acc_t<T> vals[kVec<T>];
  __device__ __forceinline__ void load(const T* p, int valid) {
#pragma unroll
    for (int v = 0; v < kVec<T>; ++v) vals[v] = v < valid ? to_acc(p[v]) : acc_t<T>(0);
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int v = 0; v < kVec<T>; ++v) vals[v] = acc_t<T>(0);
  }
  __device__ __forceinline__ void get(acc_t<T> out[kVec<T>]) const {
#pragma unroll
    for (int v = 0; v < kVec<T>; ++v) out[v] = vals[v];
  }
};

// 16 zero bytes: the stand-in row for corners outside the map.
__device__ uint4 kZeroRow;

// Reads row `idx` of a lane's channels, or zeros for idx < 0. The load is unconditional (from
// kZeroRow for idx < 0, chosen by address, not by a select after the load) so that the compiler
// issues a whole batch of gathers before the first use.
template <typename T, bool ALIGNED>
__device__ __forceinline__ void gather_row(LaneData<T, ALIGNED>& d, const T* base, int idx, int64_t row_stride,
                                           int valid) {
  const T* p = idx >= 0 ? base + static_cast<int64_t>(idx) * row_stride : reinterpret_cast<const T*>(&kZeroRow);
  d.load(p, valid);
}

template <typename T, bool ALIGNED>
__device__ __forceinline__ void store_lane(T* p, const acc_t<T> in[kVec<T>], int valid) {
  if constexpr (ALIGNED) {
    *reinterpret_cast<uint4*>(p) = pack_vec<T>(in);
  } else {
#pragma unroll
    for (int v = 0; v < kVec<T>; ++v) if (v < valid) p[v] = from_acc<T>(in[v]);
  }
}

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

struct LevelTable {
  int height[kMaxLevels], width[kMaxLevels], start[kMaxLevels];
};

__device__ __forceinline__ void load_levels(LevelTable& t, const int64_t* shapes, const int64_t* starts, int levels) {
  if (threadIdx.x < levels) {
    t.height[threadIdx.x] = static_cast<int>(shapes[2 * threadIdx.x]);
    t.width[threadIdx.x] = static_cast<int>(shapes[2 * threadIdx.x + 1]);
    t.start[threadIdx.x] = static_cast<int>(starts[threadIdx.x]);
  }
  __syncthreads();
}

struct Dims {
  int64_t groups;  // N * Lq * M
  int s, m, d, lq, levels, points, log2g;
};

template <typename T, bool ALIGNED>
__global__ void __launch_bounds__(kThreads) forward_kernel(
    const T* __restrict__ value, const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
    const acc_t<T>* __restrict__ loc, const acc_t<T>* __restrict__ attn, T* __restrict__ out, Dims dims) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  __shared__ LevelTable lv;
  load_levels(lv, shapes, starts, dims.levels);
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t group = thread >> dims.log2g;
  const int c0 = static_cast<int>(thread & ((1 << dims.log2g) - 1)) * V;
  if (group >= dims.groups || c0 >= dims.d) return;
  const int m = static_cast<int>(group % dims.m);
  const int64_t n = group / (static_cast<int64_t>(dims.lq) * dims.m);
  const int valid = min(V, dims.d - c0);
  const int64_t row_stride = static_cast<int64_t>(dims.m) * dims.d;
  const T* vbase = value + (n * dims.s * dims.m + m) * dims.d + c0;
  const int samples = dims.levels * dims.points;
  const A* lg = loc + group * samples * 2;
  const A* ag = attn + group * samples;

  A acc[V];
#pragma unroll
  for (int v = 0; v < V; ++v) acc[v] = A(0);
  for (int j0 = 0; j0 < samples; j0 += kBatch) {
    int idx[kBatch][4];
    A wgt[kBatch][4];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      // past the last sample: repeat it with weight 0 (keeps this phase branch-free)
      const int j = min(j0 + i, samples - 1);
      const int l = j / dims.points;
      const Corners<A> c = bilinear_corners<A>(__ldg(lg + 2 * j), __ldg(lg + 2 * j + 1), lv.height[l],
                                               lv.width[l], lv.start[l]);
      const A a = j0 + i < samples ? __ldg(ag + j) : A(0);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        idx[i][k] = c.s[k];
        wgt[i][k] = a * c.w[k];
      }
    }
    LaneData<T, ALIGNED> data[kBatch][4];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
#pragma unroll
      for (int k = 0; k < 4; ++k) gather_row(data[i][k], vbase, idx[i][k], row_stride, valid);
    }
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        A x[V];
        data[i][k].get(x);
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] += wgt[i][k] * x[v];
      }
    }
  }
  store_lane<T, ALIGNED>(out + group * dims.d + c0, acc, valid);
}

template <typename T, bool ALIGNED, bool DET>
__global__ void __launch_bounds__(kThreads) backward_kernel(
    const T* __restrict__ grad_out, const T* __restrict__ value, const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts, const acc_t<T>* __restrict__ loc, const acc_t<T>* __restrict__ attn,
    acc_t<T>* __restrict__ grad_value, int* __restrict__ keys, acc_t<T>* __restrict__ coefs,
    acc_t<T>* __restrict__ grad_loc, acc_t<T>* __restrict__ grad_attn, Dims dims) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  __shared__ LevelTable lv;
  load_levels(lv, shapes, starts, dims.levels);
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t group = thread >> dims.log2g;
  const int G = 1 << dims.log2g;
  const int lane = static_cast<int>(thread & (G - 1));
  const int c0 = lane * V;
  // Lanes past the end stay in the loop (the group reductions use full-warp shuffles): they read
  // the last group's inputs and write nothing.
  const bool active = group < dims.groups;
  const int64_t read_group = active ? group : dims.groups - 1;
  const bool has_ch = active && c0 < dims.d;
  const int m = static_cast<int>(read_group % dims.m);
  const int64_t n = read_group / (static_cast<int64_t>(dims.lq) * dims.m);
  const int valid = max(0, min(V, dims.d - c0));
  const int64_t row_stride = static_cast<int64_t>(dims.m) * dims.d;
  const T* vbase = value + (n * dims.s * dims.m + m) * dims.d + (has_ch ? c0 : 0);
  const int samples = dims.levels * dims.points;
  const A* lg = loc + read_group * samples * 2;
  const A* ag = attn + read_group * samples;

  A g[V];
  {
    LaneData<T, ALIGNED> d;
    if (has_ch) d.load(grad_out + group * dims.d + c0, valid);
    else d.zero();
    d.get(g);
  }
  for (int j0 = 0; j0 < samples; j0 += kBatch) {
    Corners<A> c[kBatch];
    A a[kBatch];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int j = min(j0 + i, samples - 1);
      const int l = j / dims.points;
      c[i] = bilinear_corners<A>(__ldg(lg + 2 * j), __ldg(lg + 2 * j + 1), lv.height[l], lv.width[l], lv.start[l]);
      a[i] = j0 + i < samples ? __ldg(ag + j) : A(0);
    }
    LaneData<T, ALIGNED> data[kBatch][4];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
#pragma unroll
      for (int k = 0; k < 4; ++k) gather_row(data[i][k], vbase, has_ch ? c[i].s[k] : -1, row_stride, valid);
    }
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int j = j0 + i;
      A dot[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        A x[V];
        data[i][k].get(x);
        A sum = A(0);
#pragma unroll
        for (int v = 0; v < V; ++v) sum += g[v] * x[v];
        dot[k] = sum;
      }
      A grad_a = c[i].w[0] * dot[0] + c[i].w[1] * dot[1] + c[i].w[2] * dot[2] + c[i].w[3] * dot[3];
      A grad_h, grad_w;
      bilinear_grads(c[i], dot, &grad_h, &grad_w);
      for (int offset = G >> 1; offset > 0; offset >>= 1) {
        grad_a += __shfl_xor_sync(0xffffffffu, grad_a, offset);
        grad_h += __shfl_xor_sync(0xffffffffu, grad_h, offset);
        grad_w += __shfl_xor_sync(0xffffffffu, grad_w, offset);
      }
      if (active && j < samples) {
        const int64_t e = group * samples + j;
        if (lane == (j & (G - 1))) {
          const int l = j / dims.points;
          grad_attn[e] = grad_a;
          grad_loc[2 * e] = c[i].valid ? a[i] * grad_w * static_cast<A>(lv.width[l]) : A(0);
          grad_loc[2 * e + 1] = c[i].valid ? a[i] * grad_h * static_cast<A>(lv.height[l]) : A(0);
        }
        if constexpr (DET) {
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if ((k & (G - 1)) == lane) {
              const int s = c[i].s[k];
              keys[4 * e + k] = s >= 0 ? static_cast<int>((n * dims.s + s) * dims.m + m) : INT_MAX;
              coefs[4 * e + k] = a[i] * c[i].w[k];
            }
          }
        } else if (has_ch) {
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const int s = c[i].s[k];
            if (s >= 0) {
              atomic_add_lane<A, V, ALIGNED>(grad_value + ((n * dims.s + s) * dims.m + m) * dims.d + c0,
                                             a[i] * c[i].w[k], g, valid);
            }
          }
        }
      }
    }
  }
}

// Deterministic value gradient: one group per value row sums its (sorted) contributions in order.
template <typename T, bool ALIGNED>
__global__ void __launch_bounds__(kThreads) gather_value_grad_kernel(
    const T* __restrict__ grad_out, const int64_t* __restrict__ perm, const int64_t* __restrict__ row_ptr,
    const acc_t<T>* __restrict__ coefs, T* __restrict__ grad_value, int64_t rows, int d, int entries_per_group,
    int log2g) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t row = thread >> log2g;
  const int c0 = static_cast<int>(thread & ((1 << log2g) - 1)) * V;
  if (row >= rows || c0 >= d) return;
  const int valid = min(V, d - c0);
  A acc[V];
#pragma unroll
  for (int v = 0; v < V; ++v) acc[v] = A(0);
  const int64_t end = row_ptr[row + 1];
  for (int64_t e = row_ptr[row]; e < end; ++e) {
    const int64_t src = perm[e];
    const A coef = coefs[src];
    LaneData<T, ALIGNED> data;
    data.load(grad_out + (src / entries_per_group) * d + c0, valid);
    A x[V];
    data.get(x);
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] += coef * x[v];
  }
  store_lane<T, ALIGNED>(grad_value + row * d + c0, acc, valid);
}

template <typename T> struct CudaType { using type = T; };
template <> struct CudaType<at::Half> { using type = __half; };
template <> struct CudaType<at::BFloat16> { using type = __nv_bfloat16; };

template <typename F>
void dispatch_value_type(at::ScalarType type, F&& f) {
  switch (type) {
    case at::kFloat: f(float{}); break;
    case at::kDouble: f(double{}); break;
    case at::kHalf: f(at::Half{}); break;
    case at::kBFloat16: f(at::BFloat16{}); break;
    default: TORCH_CHECK(false, "ms_deform_attn: unsupported value dtype ", type);
  }
}

int log2_group(int64_t d, int vec) {
  int lanes = static_cast<int>((d + vec - 1) / vec);
  int log2g = 0;
  while ((1 << log2g) < lanes) ++log2g;
  TORCH_CHECK(log2g <= 5, "ms_deform_attn: head dim ", d, " exceeds 32 x ", vec, " channels");
  return log2g;
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

int64_t blocks_for(int64_t threads) { return (threads + kThreads - 1) / kThreads; }

at::Tensor forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn) {
  const Geometry geo = check_args(value, spatial_shapes, level_start_index, loc, attn);
  const c10::cuda::CUDAGuard guard(value.device());
  if (geo.s == 0) return at::zeros({geo.n, geo.lq, geo.m * geo.d}, value.options());
  at::Tensor out = at::empty({geo.n, geo.lq, geo.m * geo.d}, value.options());
  if (out.numel() == 0) return out;
  dispatch_value_type(value.scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    using T = typename CudaType<S>::type;
    using A = acc_t<T>;
    const int log2g = log2_group(geo.d, kVec<T>);
    const Dims dims{geo.n * geo.lq * geo.m, static_cast<int>(geo.s), static_cast<int>(geo.m),
                    static_cast<int>(geo.d), static_cast<int>(geo.lq), static_cast<int>(geo.levels),
                    static_cast<int>(geo.points), log2g};
    const bool aligned = geo.d % kVec<T> == 0 && aligned16(value);
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const auto blocks = blocks_for(dims.groups << log2g);
    const T* val = reinterpret_cast<const T*>(value.data_ptr<S>());
    T* o = reinterpret_cast<T*>(out.data_ptr<S>());
    const int64_t* shp = spatial_shapes.data_ptr<int64_t>();
    const int64_t* st = level_start_index.data_ptr<int64_t>();
    if (aligned) {
      forward_kernel<T, true><<<blocks, kThreads, 0, stream>>>(val, shp, st, loc.data_ptr<A>(), attn.data_ptr<A>(), o, dims);
    } else {
      forward_kernel<T, false><<<blocks, kThreads, 0, stream>>>(val, shp, st, loc.data_ptr<A>(), attn.data_ptr<A>(), o, dims);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn, bool deterministic) {
  const Geometry geo = check_args(value, spatial_shapes, level_start_index, loc, attn);
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.numel() == geo.n * geo.lq * geo.m * geo.d && grad_output.device() == value.device(),
              "ms_deform_attn: grad_output must be a contiguous (N, Lq, M * D) tensor like value");
  const c10::cuda::CUDAGuard guard(value.device());
  at::Tensor grad_loc = at::empty_like(loc);
  at::Tensor grad_attn = at::empty_like(attn);
  at::Tensor grad_value;
  dispatch_value_type(value.scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    using T = typename CudaType<S>::type;
    using A = acc_t<T>;
    const int log2g = log2_group(geo.d, kVec<T>);
    const Dims dims{geo.n * geo.lq * geo.m, static_cast<int>(geo.s), static_cast<int>(geo.m),
                    static_cast<int>(geo.d), static_cast<int>(geo.lq), static_cast<int>(geo.levels),
                    static_cast<int>(geo.points), log2g};
    const bool aligned = geo.d % kVec<T> == 0 && aligned16(value) && aligned16(grad_output);
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const auto blocks = blocks_for(dims.groups << log2g);
    const T* go = reinterpret_cast<const T*>(grad_output.data_ptr<S>());
    const T* val = reinterpret_cast<const T*>(value.data_ptr<S>());
    const int64_t* shp = spatial_shapes.data_ptr<int64_t>();
    const int64_t* st = level_start_index.data_ptr<int64_t>();
    const A* lp = loc.data_ptr<A>();
    const A* ap = attn.data_ptr<A>();
    A* glp = grad_loc.data_ptr<A>();
    A* gap = grad_attn.data_ptr<A>();
    if (dims.groups == 0 || geo.s == 0) {
      grad_loc.zero_();
      grad_attn.zero_();
      grad_value = at::zeros_like(value);
      return;
    }
    if (!deterministic) {
      at::Tensor buffer = at::zeros(value.sizes(), value.options().dtype(loc.scalar_type()));
      A* buf = buffer.data_ptr<A>();
      if (aligned) {
        backward_kernel<T, true, false><<<blocks, kThreads, 0, stream>>>(go, val, shp, st, lp, ap, buf, nullptr,
                                                                         nullptr, glp, gap, dims);
      } else {
        backward_kernel<T, false, false><<<blocks, kThreads, 0, stream>>>(go, val, shp, st, lp, ap, buf, nullptr,
                                                                          nullptr, glp, gap, dims);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      grad_value = buffer.to(value.scalar_type());
      return;
    }
    const int64_t entries = dims.groups * dims.levels * dims.points * 4;
    const int64_t rows = geo.n * geo.s * geo.m;
    at::Tensor keys = at::empty({entries}, value.options().dtype(at::kInt));
    at::Tensor coefs = at::empty({entries}, loc.options());
    if (aligned) {
      backward_kernel<T, true, true><<<blocks, kThreads, 0, stream>>>(go, val, shp, st, lp, ap, nullptr,
                                                                      keys.data_ptr<int>(), coefs.data_ptr<A>(),
                                                                      glp, gap, dims);
    } else {
      backward_kernel<T, false, true><<<blocks, kThreads, 0, stream>>>(go, val, shp, st, lp, ap, nullptr,
                                                                       keys.data_ptr<int>(), coefs.data_ptr<A>(),
                                                                       glp, gap, dims);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
    const at::Tensor& sorted_keys = std::get<0>(sorted);
    const at::Tensor& perm = std::get<1>(sorted);
    const at::Tensor row_ptr = at::searchsorted(sorted_keys, at::arange(rows + 1, keys.options()));
    grad_value = at::empty_like(value);
    const auto gather_blocks = blocks_for(rows << log2g);
    const int per_group = dims.levels * dims.points * 4;
    T* gv = reinterpret_cast<T*>(grad_value.data_ptr<S>());
    if (aligned) {
      gather_value_grad_kernel<T, true><<<gather_blocks, kThreads, 0, stream>>>(
          go, perm.data_ptr<int64_t>(), row_ptr.data_ptr<int64_t>(), coefs.data_ptr<A>(), gv, rows,
          dims.d, per_group, log2g);
    } else {
      gather_value_grad_kernel<T, false><<<gather_blocks, kThreads, 0, stream>>>(
          go, perm.data_ptr<int64_t>(), row_ptr.data_ptr<int64_t>(), coefs.data_ptr<A>(), gv, rows,
          dims.d, per_group, log2g);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(ms_deform_attn, CUDA, m) {
  m.impl("forward", &forward_cuda);
  m.impl("backward", &backward_cuda);
}

}  // namespace msda
