// Device helpers shared by the CUDA kernels of ms_deform_attn (one header, included by each .cu).
//
// Lane mapping used by the query-centric kernels: one group of G lanes per (batch, query, head);
// each lane owns 16 bytes of channels (8 bf16/fp16, 4 fp32, 2 fp64) and G = next power of two of
// D / (channels per lane), so a group reads each value row with 16-byte loads.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>
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
#ifndef MSDA_FWD_PDL  // the forward's launch on sm_90: 0 plain, 1 dependent, 2 dependent + early trigger
#define MSDA_FWD_PDL 2
#endif
#ifndef MSDA_FWD_FILL_BY_ENTRY  // the forward's slot tables filled in entry order (stores without bank conflicts)
#define MSDA_FWD_FILL_BY_ENTRY 1
#endif
#ifndef MSDA_FWD_MIN_BLOCKS  // the forward's compile-time kernels of more than one level (the injector's 3)
#define MSDA_FWD_MIN_BLOCKS 8
#endif
#ifndef MSDA_FWD_MIN_BLOCKS_L1  // the forward's one-level kernels (the extractor's): 40 registers
#define MSDA_FWD_MIN_BLOCKS_L1 12
#endif
#ifndef MSDA_FWD_TILE_LOOP  // forward kernels whose blocks loop over tiles (fwd_tile_loop)
#define MSDA_FWD_TILE_LOOP 1
#endif
#ifndef MSDA_FWD_MEMORY_ORDER  // the forward's one-level kernels take their groups in memory order
#define MSDA_FWD_MEMORY_ORDER 1
#endif
constexpr int min_blocks(int levels) { return levels == 1 ? MSDA_MIN_BLOCKS_L1 : kMinBlocks; }
constexpr int forward_min_blocks(int levels) {
  return levels > 1 ? MSDA_FWD_MIN_BLOCKS : levels == 1 ? MSDA_FWD_MIN_BLOCKS_L1 : kMinBlocks;
}

template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };
template <typename T> using acc_t = typename AccOf<T>::type;
template <typename T> constexpr int kVec = 16 / static_cast<int>(sizeof(T));

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float fma_acc(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ __forceinline__ double fma_acc(double a, double b, double c) { return __fma_rn(a, b, c); }

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
// row_stride: elements per row (int64_t), or ByteOffset where idx is already the row's byte offset
// from base (the address is then one 32 + 64-bit add).
struct ByteOffset {};
template <typename T, bool ALIGNED, typename Stride>
__device__ __forceinline__ void gather_row(LaneData<T, ALIGNED>& d, const T* base, int idx, Stride row_stride,
                                           int valid) {
  const T* row;
  if constexpr (std::is_same_v<Stride, ByteOffset>) {
    row = reinterpret_cast<const T*>(reinterpret_cast<const char*>(base) + idx);
  } else {
    row = base + static_cast<int64_t>(idx) * row_stride;
  }
  const T* p = idx >= 0 ? row : reinterpret_cast<const T*>(&kZeroRow);
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

struct LevelTable {
  int height[kMaxLevels], width[kMaxLevels], start[kMaxLevels];
  int cell_start[kMaxLevels];  // offset of each level's (H + 1) x (W + 1) corner grid
  int cells;                   // corner-grid cells per (batch, head)
};

// Each level's height, width and start into t (threads below `levels`); the caller synchronizes.
__device__ __forceinline__ void load_level_sizes(LevelTable& t, const int64_t* shapes, const int64_t* starts,
                                                 int levels) {
  if (threadIdx.x < levels) {
    t.height[threadIdx.x] = static_cast<int>(shapes[2 * threadIdx.x]);
    t.width[threadIdx.x] = static_cast<int>(shapes[2 * threadIdx.x + 1]);
    t.start[threadIdx.x] = static_cast<int>(starts[threadIdx.x]);
  }
}

// The level table with the corner-grid offsets; ends with a barrier.
__device__ __forceinline__ void load_levels(LevelTable& t, const int64_t* shapes, const int64_t* starts, int levels) {
  load_level_sizes(t, shapes, starts, levels);
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

// Division of ints in [0, 2^31) by a fixed divisor d >= 1: a multiply-high, an add and a shift
// (Granlund-Montgomery, round-up variant; the magic number computed once, on the host or per block)
// instead of the ~20-instruction integer division: the work coordinates of the query-centric kernels,
// the per-sample and per-tile quotients of the binning and tile kernels.
struct FastDiv {
  unsigned magic, shift;
  __host__ __device__ static FastDiv of(int d) {
    d = d < 1 ? 1 : d;  // (a size of 0: nothing is divided)
    FastDiv f{0, 0};
    while ((1u << f.shift) < static_cast<unsigned>(d)) ++f.shift;
    const uint64_t divisor = static_cast<uint64_t>(d);
    f.magic = static_cast<unsigned>((((uint64_t{1} << f.shift) - divisor) << 32) / divisor + 1);
    return f;
  }
  __device__ __forceinline__ int operator()(int n) const {
    return static_cast<int>((__umulhi(static_cast<unsigned>(n), magic) + static_cast<unsigned>(n)) >> shift);
  }
};

struct Dims {
  int64_t groups;  // N * Lq * M
  int s, m, d, lq, levels, points, log2g;
  FastDiv by_m, by_lq, by_lq_m;  // x / M, x / Lq, x / (Lq x M) (used where groups <= INT_MAX)
};

Dims make_dims(const Geometry& geo, int log2g) {
  return Dims{geo.n * geo.lq * geo.m, static_cast<int>(geo.s), static_cast<int>(geo.m), static_cast<int>(geo.d),
              static_cast<int>(geo.lq), static_cast<int>(geo.levels), static_cast<int>(geo.points), log2g,
              FastDiv::of(static_cast<int>(geo.m)), FastDiv::of(static_cast<int>(geo.lq)),
              FastDiv::of(static_cast<int>(std::min<int64_t>(geo.lq * geo.m, INT_MAX)))};
}

// Work order of the (batch, query, head) groups: batch, head, query, so that a warp holds adjacent
// queries of one head (their samples hit nearby value rows and the same gradient buckets).
// Returns the group's index in memory order ((n * Lq + q) * M + m) and its n and m. INDEX32: the
// caller knows that dims.groups <= INT_MAX.
template <bool INDEX32 = false>
__device__ __forceinline__ int64_t memory_group(int64_t work, const Dims& dims, int64_t* n, int* m) {
  if (INDEX32 || dims.groups <= INT_MAX) {  // 32-bit (a 64-bit division is a long subroutine)
    const unsigned per_batch = static_cast<unsigned>(dims.lq) * static_cast<unsigned>(dims.m);
    const unsigned w = static_cast<unsigned>(work);
    const unsigned nn = dims.by_lq_m(static_cast<int>(w)), rest = w - nn * per_batch;
    const unsigned mm = dims.by_lq(static_cast<int>(rest));
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

// The batch n and head m of the group at memory index mem ((n * Lq + q) * M + m), for kernels that
// take the groups in memory order. INDEX32 as in memory_group.
template <bool INDEX32 = false>
__device__ __forceinline__ void batch_and_head(int64_t mem, const Dims& dims, int64_t* n, int* m) {
  if (INDEX32 || dims.groups <= INT_MAX) {  // 32-bit, as in memory_group
    const unsigned w = static_cast<unsigned>(mem);
    *n = dims.by_lq_m(static_cast<int>(w));
    *m = static_cast<int>(w - dims.by_m(static_cast<int>(w)) * static_cast<unsigned>(dims.m));
  } else {
    *n = mem / (static_cast<int64_t>(dims.lq) * dims.m);
    *m = static_cast<int>(mem % dims.m);
  }
}

// One binned sample of the value gradient: contributes a * bilinear weight * grad_out[group] to
// the four value rows around its cell.
template <typename A> struct alignas(16) Entry {
  A a, lh, lw;
  int group;
};

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

// Programmatic dependent launch (sm_90): the forward and the backward's kernels are launched to start
// while the kernel before them drains (launch_after); they run their set-up (only what reads no
// memory the kernels before may write), then wait for its results here.
__device__ __forceinline__ void wait_for_previous_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel of the stream (launched with launch_after) start its set-up.
__device__ __forceinline__ void start_next_kernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// Launches kernel on stream; with `dependent`, as a programmatic dependent launch (sm_90: it may
// start while the previous kernel drains and waits in wait_for_previous_kernel).
template <typename... Params, typename... Args>
void launch_after(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, bool dependent,
                  Args... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute;
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = dependent ? 1 : 0;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...));
}

// An attribute of the tensor's GPU (a driver lookup, no synchronisation).
inline int device_attribute(const at::Tensor& t, cudaDeviceAttr attr) {
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, t.get_device()));
  return value;
}

// Compute capability (major) of the tensor's GPU.
inline int capability_major(const at::Tensor& t) { return device_attribute(t, cudaDevAttrComputeCapabilityMajor); }

// Streaming multiprocessors of the tensor's GPU.
inline int sm_count(const at::Tensor& t) { return device_attribute(t, cudaDevAttrMultiProcessorCount); }

}  // namespace
}  // namespace msda
