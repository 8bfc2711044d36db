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
#include <ATen/ops/cumsum.h>
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
#include <type_traits>

#include "common.h"

namespace msda {
namespace {

// Tuning knobs (compile-time; docs/ops.md records the measured choice).
#ifndef MSDA_THREADS
#define MSDA_THREADS 128
#endif
#ifndef MSDA_BATCH
#define MSDA_BATCH 2
#endif
#ifndef MSDA_MIN_BLOCKS  // register cap 65536 / (threads x blocks); measured on the H200 (docs/ops.md)
#define MSDA_MIN_BLOCKS 6
#endif
#ifndef MSDA_MIN_BLOCKS_L1  // the same for the one-level (L, P) = (1, 4) kernels (the extractor's)
#define MSDA_MIN_BLOCKS_L1 8
#endif
constexpr int kThreads = MSDA_THREADS;
constexpr int kBatch = MSDA_BATCH;  // samples whose gathers are in flight together
constexpr int kMinBlocks = MSDA_MIN_BLOCKS;
constexpr int min_blocks(int levels) { return levels == 1 ? MSDA_MIN_BLOCKS_L1 : kMinBlocks; }

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
  int cell_start[kMaxLevels];  // offset of each level's (H + 1) x (W + 1) corner grid
  int cells;                   // corner-grid cells per (batch, head)
};

__device__ __forceinline__ void load_levels(LevelTable& t, const int64_t* shapes, const int64_t* starts, int levels) {
  if (threadIdx.x < levels) {
    t.height[threadIdx.x] = static_cast<int>(shapes[2 * threadIdx.x]);
    t.width[threadIdx.x] = static_cast<int>(shapes[2 * threadIdx.x + 1]);
    t.start[threadIdx.x] = static_cast<int>(starts[threadIdx.x]);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int cells = 0;
    for (int l = 0; l < levels; ++l) {
      t.cell_start[l] = cells;
      cells += (t.height[l] + 1) * (t.width[l] + 1);
    }
    t.cells = cells;
  }
  __syncthreads();
}

struct Dims {
  int64_t groups;  // N * Lq * M
  int s, m, d, lq, levels, points, log2g;
};

// Work order of the (batch, query, head) groups: batch, head, query, so that a warp holds adjacent
// queries of one head (their samples hit nearby value rows and the same gradient buckets).
// Returns the group's index in memory order ((n * Lq + q) * M + m) and its n and m.
__device__ __forceinline__ int64_t memory_group(int64_t work, const Dims& dims, int64_t* n, int* m) {
  if (dims.groups <= INT_MAX) {  // 32-bit divisions (a 64-bit one is a long subroutine)
    const unsigned per_batch = static_cast<unsigned>(dims.lq) * static_cast<unsigned>(dims.m);
    const unsigned w = static_cast<unsigned>(work);
    const unsigned nn = w / per_batch, rest = w - nn * per_batch;
    const unsigned mm = rest / static_cast<unsigned>(dims.lq);
    const unsigned q = rest - mm * static_cast<unsigned>(dims.lq);
    *n = nn;
    *m = static_cast<int>(mm);
    return (static_cast<int64_t>(nn) * dims.lq + q) * dims.m + mm;
  }
  const int64_t per_batch = static_cast<int64_t>(dims.lq) * dims.m;
  *n = work / per_batch;
  const int64_t rest = work - *n * per_batch;
  *m = static_cast<int>(rest / dims.lq);
  const int64_t q = rest - static_cast<int64_t>(*m) * dims.lq;
  return (*n * dims.lq + q) * dims.m + *m;
}

// Per-group tables in shared memory: one slot per sample of the current chunk. A chunk has
// max(G, kBatch) samples; each lane of the group computes the bilinear corners of chunk samples
// lane, lane + G, ... once, and every lane of the group reads them back (broadcast reads).
template <typename A> struct ForwardSlot {
  int4 row;  // spatial index of the four corners, -1 = zero
  A w[4];    // attention weight x bilinear weight
};
template <typename A> struct BackwardSlot {
  int4 row;
  A lh, lw, a;
  int key;   // corner-grid cell of the sample (its value-gradient bucket), -1 = outside the window
};

// One binned sample of the value gradient: contributes a * bilinear weight * grad_out[group] to
// the four value rows around its cell.
template <typename A> struct alignas(16) Entry {
  A a, lh, lw;
  int group;
};

// LEVELS, POINTS, LOG2G: compile-time levels, points and log2 of the group size for the model's
// shapes (all loops over samples unroll), or 0, 0, -1: taken from dims at run time.
template <typename T, bool ALIGNED, int LEVELS, int POINTS, int LOG2G>
__global__ void __launch_bounds__(kThreads, min_blocks(LEVELS)) forward_kernel(
    const T* __restrict__ value, const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
    const acc_t<T>* __restrict__ loc, const acc_t<T>* __restrict__ attn, T* __restrict__ out, Dims dims) {
  using A = acc_t<T>;
  constexpr int V = kVec<T>;
  __shared__ LevelTable lv;
  __shared__ ForwardSlot<A> slots[kThreads * kBatch];
  load_levels(lv, shapes, starts, dims.levels);
  const int log2g = LOG2G >= 0 ? LOG2G : dims.log2g;
  const int points = POINTS > 0 ? POINTS : dims.points;
  const int G = 1 << log2g;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t group = thread >> log2g;
  const int lane = static_cast<int>(thread & (G - 1));
  const int c0 = lane * V;
  // Lanes past the end stay to the end (warp-synchronous shared-memory tables): they read the
  // last group's inputs and write nothing.
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
  ForwardSlot<A>* table = slots + (threadIdx.x >> log2g) * chunk;

  A acc[V];
#pragma unroll
  for (int v = 0; v < V; ++v) acc[v] = A(0);
#pragma unroll
  for (int j0 = 0; j0 < samples; j0 += chunk) {
#pragma unroll
    for (int i = lane; i < chunk; i += G) {
      const int j = min(j0 + i, samples - 1);
      const int l = j / points;
      const Corners<A> c = bilinear_corners<A>(__ldg(lg + 2 * j), __ldg(lg + 2 * j + 1), lv.height[l],
                                               lv.width[l], lv.start[l]);
      const A a = j0 + i < samples ? __ldg(ag + j) : A(0);
      ForwardSlot<A> slot;
      slot.row = make_int4(c.s[0], c.s[1], c.s[2], c.s[3]);
#pragma unroll
      for (int k = 0; k < 4; ++k) slot.w[k] = a * c.w[k];
      table[i] = slot;
    }
    __syncwarp();
    const int count = min(chunk, samples - j0);
#pragma unroll
    for (int i0 = 0; i0 < count; i0 += kBatch) {
      int idx[kBatch][4];
      A wgt[kBatch][4];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const ForwardSlot<A> slot = table[min(i0 + b, count - 1)];
        const bool real = has_ch && i0 + b < count;
        idx[b][0] = real ? slot.row.x : -1;
        idx[b][1] = real ? slot.row.y : -1;
        idx[b][2] = real ? slot.row.z : -1;
        idx[b][3] = real ? slot.row.w : -1;
#pragma unroll
        for (int k = 0; k < 4; ++k) wgt[b][k] = real ? slot.w[k] : A(0);
      }
      LaneData<T, ALIGNED> data[kBatch][4];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
#pragma unroll
        for (int k = 0; k < 4; ++k) gather_row(data[b][k], vbase, idx[b][k], row_stride, valid);
      }
      // all gathers of the batch are in flight; sum each sample's corners, then the samples
      A part[kBatch][V];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        A x[4][V];
#pragma unroll
        for (int k = 0; k < 4; ++k) data[b][k].get(x[k]);
#pragma unroll
        for (int v = 0; v < V; ++v) {
          part[b][v] = wgt[b][0] * x[0][v] + wgt[b][1] * x[1][v] + wgt[b][2] * x[2][v] + wgt[b][3] * x[3][v];
        }
      }
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] += part[b][v];
      }
    }
    __syncwarp();
  }
  if (has_ch) store_lane<T, ALIGNED>(out + mem_group * dims.d + c0, acc, valid);
}

enum ValueGradMode { kBinned = 0, kAtomic = 1 };

// Location and weight gradients, and the value gradient's raw material: either binned samples
// (keys + entries indexed by sample, and the bucket sizes in counts[key + 1] when counts is given)
// or, in kAtomic mode, fp32/fp64 atomics into a zeroed buffer.
template <typename T, bool ALIGNED, int MODE, int LEVELS, int POINTS, int LOG2G>
__global__ void __launch_bounds__(kThreads, min_blocks(LEVELS)) backward_kernel(
    const T* __restrict__ grad_out, const T* __restrict__ value, const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts, const acc_t<T>* __restrict__ loc, const acc_t<T>* __restrict__ attn,
    acc_t<T>* __restrict__ grad_value_acc, int* __restrict__ keys, Entry<acc_t<T>>* __restrict__ entries,
    int* __restrict__ counts, acc_t<T>* __restrict__ grad_loc, acc_t<T>* __restrict__ grad_attn, Dims dims) {
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
        const bool real = active && j0 + i < samples;
        if (real) {  // binned in work order
          const int64_t e = group * samples + j;
          keys[e] = slot.key >= 0 ? slot.key : INT_MAX;
          Entry<A> entry;
          entry.a = slot.a;
          entry.lh = c.lh;
          entry.lw = c.lw;
          entry.group = static_cast<int>(mem_group);
          entries[e] = entry;
        }
        if (counts != nullptr) {  // bucket sizes, one atomic per distinct key in the warp
          const int key = real && slot.key >= 0 ? slot.key : -1;
          const unsigned same = __match_any_sync(0xffffffffu, key);
          if (key >= 0 && (threadIdx.x & 31) == __ffs(same) - 1) atomicAdd(counts + key + 1, __popc(same));
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

// Counting sort of the binned samples by cell (bucket order within a cell is not deterministic):
// counts[key + 1] holds the bucket sizes, offsets their exclusive prefix sum; each sample takes a
// slot by decrementing its count (which leaves counts zeroed).
template <typename A>
__global__ void fill_buckets_kernel(const int* __restrict__ keys, const Entry<A>* __restrict__ entries,
                                    const int* __restrict__ offsets, int* __restrict__ counts,
                                    Entry<A>* __restrict__ sorted, int64_t num) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int key = e < num ? keys[e] : INT_MAX;
  // lanes with the same key take consecutive slots with one atomic
  const unsigned same = __match_any_sync(0xffffffffu, key);
  const int lane = threadIdx.x & 31, leader = __ffs(same) - 1;
  int last = 0;
  if (lane == leader && key != INT_MAX) last = atomicSub(counts + key + 1, __popc(same));
  last = __shfl_sync(0xffffffffu, last, leader);
  if (key != INT_MAX) sorted[offsets[key] + last - 1 - __popc(same & ((1u << lane) - 1))] = entries[e];
}

// Value gradient, one group per value row (n, s, m) at (y, x) of level l: sums the binned samples
// whose bilinear footprint covers the row. Those sit in four corner-grid cells, two pairs of
// adjacent cells, so two contiguous bucket ranges: cells (y0, x0) = (y-1, x-1), (y-1, x) (the row
// is their bottom-right / bottom-left corner) and (y, x-1), (y, x) (top-right / top-left). Every row
// is written once: no zero-fill, no atomics, fp32 accumulation, one rounding to T.
// INDIRECT: entries in sample order and perm lists them bucket by bucket (deterministic mode).
template <typename T, bool ALIGNED, bool INDIRECT>
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
        en[u] = entries[INDIRECT ? __ldg(perm + at) : at];
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

template <int X> using Int = std::integral_constant<int, X>;

// Calls f(aligned, levels, points, log2g) with compile-time constants: the model's shapes (16-byte
// aligned, (L, P) = (3, 4) or (1, 4), head dim 32 in fp32 / fp16 / bf16) get kernels whose loops
// over samples unroll; every other shape gets the run-time variant (levels 0, points 0, log2g -1).
template <typename T, typename F>
void dispatch_shape(bool aligned, const Dims& dims, F&& f) {
  if constexpr (!std::is_same_v<T, double>) {
    constexpr int kModelLog2g = kVec<T> == 8 ? 2 : 3;  // 32 channels: 4 lanes (16-bit) or 8 (fp32)
    if (aligned && dims.log2g == kModelLog2g && dims.points == 4) {
      if (dims.levels == 3) return f(std::true_type{}, Int<3>{}, Int<4>{}, Int<kModelLog2g>{});
      if (dims.levels == 1) return f(std::true_type{}, Int<1>{}, Int<4>{}, Int<kModelLog2g>{});
    }
  }
  if (aligned) return f(std::true_type{}, Int<0>{}, Int<0>{}, Int<-1>{});
  f(std::false_type{}, Int<0>{}, Int<0>{}, Int<-1>{});
}

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
    dispatch_shape<T>(aligned, dims, [&](auto al, auto lv, auto pt, auto lg) {
      forward_kernel<T, decltype(al)::value, decltype(lv)::value, decltype(pt)::value, decltype(lg)::value>
          <<<blocks, kThreads, 0, stream>>>(val, shp, st, loc.data_ptr<A>(), attn.data_ptr<A>(), o, dims);
    });
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
  const int64_t groups = geo.n * geo.lq * geo.m;
  if (groups == 0 || geo.s == 0) {
    grad_loc.zero_();
    grad_attn.zero_();
    return {at::zeros_like(value), grad_loc, grad_attn};
  }
  const int64_t samples = groups * geo.levels * geo.points;
  // corner-grid cells: sum_l (H_l + 1)(W_l + 1) <= 2 S + 2 L per (batch, head) (no host sync)
  const int64_t cells = geo.n * geo.m * (2 * geo.s + 2 * geo.levels);
  TORCH_CHECK(samples < INT_MAX && cells < INT_MAX, "ms_deform_attn: too many samples for the CUDA backward");
  at::Tensor grad_value;
  dispatch_value_type(value.scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    using T = typename CudaType<S>::type;
    using A = acc_t<T>;
    const int log2g = log2_group(geo.d, kVec<T>);
    const Dims dims{groups, static_cast<int>(geo.s), static_cast<int>(geo.m), static_cast<int>(geo.d),
                    static_cast<int>(geo.lq), static_cast<int>(geo.levels), static_cast<int>(geo.points), log2g};
    const bool aligned = geo.d % kVec<T> == 0 && aligned16(value) && aligned16(grad_output);
    const auto stream = c10::cuda::getCurrentCUDAStream();
    const auto blocks = blocks_for(groups << log2g);
    const T* go = reinterpret_cast<const T*>(grad_output.data_ptr<S>());
    const T* val = reinterpret_cast<const T*>(value.data_ptr<S>());
    const int64_t* shp = spatial_shapes.data_ptr<int64_t>();
    const int64_t* st = level_start_index.data_ptr<int64_t>();
    const A* lp = loc.data_ptr<A>();
    const A* ap = attn.data_ptr<A>();
    A* glp = grad_loc.data_ptr<A>();
    A* gap = grad_attn.data_ptr<A>();
    // Value gradient: fp32/fp64 atomics for fp32/fp64 values, binned samples gathered per row for
    // fp16/bf16 (faster there, and written in T directly), binned + stably sorted when deterministic.
    if (!deterministic && (value.scalar_type() == at::kFloat || value.scalar_type() == at::kDouble)) {
      grad_value = at::zeros_like(value);
      A* buf = reinterpret_cast<A*>(grad_value.data_ptr<S>());
      if constexpr (std::is_same_v<T, A>) dispatch_shape<T>(aligned, dims, [&](auto al, auto lv, auto pt, auto lg) {
        backward_kernel<T, decltype(al)::value, kAtomic, decltype(lv)::value, decltype(pt)::value,
                        decltype(lg)::value>
            <<<blocks, kThreads, 0, stream>>>(go, val, shp, st, lp, ap, buf, nullptr, nullptr, nullptr, glp, gap, dims);
      });
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const auto int_opts = value.options().dtype(at::kInt);
    const auto entry_bytes = samples * static_cast<int64_t>(sizeof(Entry<A>));
    at::Tensor keys = at::empty({samples}, int_opts);
    at::Tensor entries = at::empty({entry_bytes}, value.options().dtype(at::kByte));
    at::Tensor counts = deterministic ? at::Tensor() : at::zeros({cells + 1}, int_opts);
    auto* ent = reinterpret_cast<Entry<A>*>(entries.data_ptr<uint8_t>());
    int* cnt = deterministic ? nullptr : counts.data_ptr<int>();
    dispatch_shape<T>(aligned, dims, [&](auto al, auto lv, auto pt, auto lg) {
      backward_kernel<T, decltype(al)::value, kBinned, decltype(lv)::value, decltype(pt)::value, decltype(lg)::value>
          <<<blocks, kThreads, 0, stream>>>(go, val, shp, st, lp, ap, nullptr, keys.data_ptr<int>(), ent, cnt, glp,
                                            gap, dims);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    grad_value = at::empty_like(value);
    const int64_t rows = geo.n * geo.s * geo.m;
    const auto row_blocks = blocks_for(rows << log2g);
    T* gv = reinterpret_cast<T*>(grad_value.data_ptr<S>());
    if (deterministic) {  // buckets in sample order: stable sort by cell, then read through perm
      const auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
      const at::Tensor perm = std::get<1>(sorted).to(at::kInt);
      const at::Tensor offsets = at::searchsorted(std::get<0>(sorted), at::arange(cells + 1, int_opts)).to(at::kInt);
      if (aligned) {
        value_grad_kernel<T, true, true><<<row_blocks, kThreads, 0, stream>>>(
            go, shp, st, ent, perm.data_ptr<int>(), offsets.data_ptr<int>(), gv, rows, dims);
      } else {
        value_grad_kernel<T, false, true><<<row_blocks, kThreads, 0, stream>>>(
            go, shp, st, ent, perm.data_ptr<int>(), offsets.data_ptr<int>(), gv, rows, dims);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const at::Tensor offsets = at::cumsum(counts, 0, at::kInt);
    at::Tensor bucketed = at::empty({entry_bytes}, value.options().dtype(at::kByte));
    auto* sorted_ent = reinterpret_cast<Entry<A>*>(bucketed.data_ptr<uint8_t>());
    fill_buckets_kernel<A><<<blocks_for(samples), kThreads, 0, stream>>>(
        keys.data_ptr<int>(), ent, offsets.data_ptr<int>(), cnt, sorted_ent, samples);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (aligned) {
      value_grad_kernel<T, true, false><<<row_blocks, kThreads, 0, stream>>>(
          go, shp, st, sorted_ent, nullptr, offsets.data_ptr<int>(), gv, rows, dims);
    } else {
      value_grad_kernel<T, false, false><<<row_blocks, kThreads, 0, stream>>>(
          go, shp, st, sorted_ent, nullptr, offsets.data_ptr<int>(), gv, rows, dims);
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
