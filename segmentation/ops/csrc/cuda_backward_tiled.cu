// Default backward of ms_deform_attn on CUDA for fp16 / bf16 values (head dim 8, 16, 32 or 64,
// 16-byte aligned): the value gradient by 8 x 8 tiles of the value maps, accumulated on the tensor
// cores.
//
// A sample inside the window (-1 < h < H, -1 < w < W) has its bilinear corners at rows
// {y0, y0 + 1} x {x0, x0 + 1}, (y0, x0) = floor(h, w). Each level of each (batch, head) is cut into
// 8 x 8 tiles of value rows; a sample's home is the tile of (max(y0, 0), max(x0, 0)); when its other
// corners reach into the next tile row / column it is also binned there (a "dup").
//
// 1. tile_bin_kernel<false>: bin sizes. A block takes kBinRounds x kBinThreads (query, point) pairs of
//    one (batch, head, level), adds them up per tile in a shared-memory histogram (the home tile once
//    per warp and tile), and makes one global atomic per tile. Samples outside the window get their
//    zero location and weight gradients here. An exclusive scan (at::cumsum) gives each bin's start;
//    tile_bin_kernel<true> claims a range of each bin per block and writes every sample's index.
// 2. tile_grad_kernel: persistent blocks of 4 warps take tiles from an atomic counter (levels from
//    the last, usually coarsest and densest, to the first). Per tile the value rows (and a one-row
//    halo) go to shared memory; the bin is read in chunks of 128 samples, one per thread, each loaded
//    one chunk ahead (Fetched): the thread stages the sample's grad_out row, writes its (at most 4) coefficients attention weight x bilinear
//    weight into its column of a 64-row coefficient matrix (rounded to T), and, for a home sample,
//    computes the location and weight gradients from the staged row and the shared value rows. Then
//    value_grad[tile rows] += coefficients (64 x 128) @ staged rows (128 x D): mma.m16n8k16 with fp32
//    accumulators, one 16-row band per warp. After the last chunk every row of the tile is written
//    once, in T.
// No zero fill, no floating-point atomics, no fp32 copy of the value gradient. The coefficient's
// rounding to T (2^-9 relative for bf16, 2^-11 for fp16) is of the order of the gradient's final
// rounding to T; the summation order within a row follows the bin order (not deterministic: see
// cuda_backward_query.cu for the deterministic backward).
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAFunctions.h>

#include <algorithm>

#include "cuda_common.cuh"
#include "cuda_launch.h"

namespace msda {
namespace {

constexpr int kBinThreads = 256;
constexpr int kBinRounds = 4;                     // samples per thread of the bin kernels
constexpr int kMaxHist = 4096;                    // tiles per level counted in shared memory
constexpr int kLog2Side = 3, kSide = 8;           // tiles of 8 x 8 value rows
constexpr int kRows = kSide * kSide;
constexpr int kHaloX = kSide + 1, kHaloRows = kHaloX * kHaloX;  // the tile's rows plus bottom / right halo
constexpr int kTileThreads = 128;                 // 4 warps: one 16-row band of the tile each
constexpr int kChunk = kTileThreads;              // samples per chunk, one per thread
constexpr int kCoefPitch = kChunk + 8;            // coefficient row, in T (16 bytes of padding)
#ifndef MSDA_TILE_MIN_BLOCKS  // register cap: 4 blocks per SM (128 registers; ptxas takes ~106); docs/ops.md
#define MSDA_TILE_MIN_BLOCKS 4
#endif
#ifndef MSDA_TILE_GRID_PER_SM  // persistent blocks launched per SM (at most what fits); docs/ops.md
#define MSDA_TILE_GRID_PER_SM 4
#endif

struct TileTable {
  int height[kMaxLevels], width[kMaxLevels], start[kMaxLevels];
  int tiles_x[kMaxLevels], tiles[kMaxLevels];
  int tile_start[kMaxLevels + 1];  // first tile of each level within one (batch, head); [levels] = all
};

struct TileDims {
  int n, s, m, lq, levels, points;
};

// One thread per level, then a prefix over the levels.
__device__ __forceinline__ void build_tiles(TileTable& t, const int64_t* shapes, const int64_t* starts,
                                            const TileDims& d) {
  const int l = threadIdx.x;
  if (l < d.levels) {
    const int h = static_cast<int>(shapes[2 * l]), w = static_cast<int>(shapes[2 * l + 1]);
    t.height[l] = h;
    t.width[l] = w;
    t.start[l] = static_cast<int>(starts[l]);
    t.tiles_x[l] = (w + kSide - 1) >> kLog2Side;
    t.tiles[l] = t.tiles_x[l] * ((h + kSide - 1) >> kLog2Side);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int total = 0;
    for (int k = 0; k < d.levels; ++k) {
      t.tile_start[k] = total;
      total += t.tiles[k];
    }
    t.tile_start[d.levels] = total;
  }
  __syncthreads();
}

// Pixel coordinates of a location; fused multiply-add spelled out so that the binning and the tile
// kernels round identically (a sample's tile must be the same in both).
__device__ __forceinline__ float pixel(float u, int size) { return __fmaf_rn(u, static_cast<float>(size), -0.5f); }

// The tiles (within its level) a sample is binned in: [0] home, [1-3] the tiles below, right and
// below-right when its corners reach them; -1 for none (all -1 outside the window).
struct SampleTiles {
  int e;        // sample index in memory order
  bool inside;  // inside the window
  int tile[4];
};

__device__ __forceinline__ SampleTiles sample_tiles(int e, bool active, float x, float y, int height, int width,
                                                    int tiles_x) {
  SampleTiles s;
  s.e = e;
  const float h = active ? pixel(y, height) : -2.f, w = active ? pixel(x, width) : -2.f;
  s.inside = h > -1.f && w > -1.f && h < static_cast<float>(height) && w < static_cast<float>(width);
  const int y0 = s.inside ? static_cast<int>(floorf(h)) : 0, x0 = s.inside ? static_cast<int>(floorf(w)) : 0;
  const bool dup_y = s.inside && y0 >= 0 && y0 + 1 < height && ((y0 + 1) & (kSide - 1)) == 0;
  const bool dup_x = s.inside && x0 >= 0 && x0 + 1 < width && ((x0 + 1) & (kSide - 1)) == 0;
  const int home = s.inside ? (max(y0, 0) >> kLog2Side) * tiles_x + (max(x0, 0) >> kLog2Side) : -1;
  s.tile[0] = home;
  s.tile[1] = dup_y ? home + tiles_x : -1;
  s.tile[2] = dup_x ? home + 1 : -1;
  s.tile[3] = dup_y && dup_x ? home + tiles_x + 1 : -1;
  return s;
}

// COUNT (FILL = false): counts[1 + bin] = samples in bin. FILL: bins[offsets[bin] + k] = sample for
// k in [0, size): the block claims a range of each bin by decrementing counts (leaving them at zero),
// then hands out its slots. Grid: x = chunks of kBinRounds x kBinThreads (query, point) pairs,
// y = (batch, head, level) (strided beyond gridDim.y). Dynamic shared memory: 2 x hist_size ints;
// a level with more tiles than that takes global atomics instead (per warp and tile).
template <bool FILL>
__global__ void __launch_bounds__(kBinThreads) tile_bin_kernel(
    const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts, const float* __restrict__ loc,
    int* __restrict__ counts, const int* __restrict__ offsets, int* __restrict__ bins, float* __restrict__ grad_loc,
    float* __restrict__ grad_attn, TileDims d, int hist_size) {
  extern __shared__ int hist_smem[];
  int* const hist = hist_smem;
  int* const base = hist_smem + hist_size;
  __shared__ TileTable tt;
  build_tiles(tt, shapes, starts, d);
  const int lane = threadIdx.x & 31;
  const int per_level = d.lq * d.points;
  for (int nml = blockIdx.y; nml < d.n * d.m * d.levels; nml += gridDim.y) {
    const int nm = nml / d.levels, l = nml - nm * d.levels;
    const int n = nm / d.m, m = nm - n * d.m;
    const int height = tt.height[l], width = tt.width[l], tiles_x = tt.tiles_x[l], tiles = tt.tiles[l];
    const int bin0 = nm * tt.tile_start[d.levels] + tt.tile_start[l];  // bin of the level's tile 0
    const bool shared_hist = tiles <= hist_size;
    for (int k = threadIdx.x; k < tiles && shared_hist; k += kBinThreads) hist[k] = 0;
    __syncthreads();
    // all locations of the block's samples first (their loads in flight together)
    float2 xy[kBinRounds];
    int e[kBinRounds];
#pragma unroll
    for (int r = 0; r < kBinRounds; ++r) {
      const int i = (blockIdx.x * kBinRounds + r) * kBinThreads + threadIdx.x;
      const int q = i / d.points, p = i - q * d.points;
      e[r] = ((n * d.lq + q) * d.m + m) * (d.levels * d.points) + l * d.points + p;
      xy[r] = i < per_level ? reinterpret_cast<const float2*>(loc)[e[r]] : make_float2(-1.f, -1.f);
    }
#pragma unroll
    for (int r = 0; r < kBinRounds; ++r) {
      const int i = (blockIdx.x * kBinRounds + r) * kBinThreads + threadIdx.x;
      const SampleTiles s = sample_tiles(e[r], i < per_level, xy[r].x, xy[r].y, height, width, tiles_x);
      const unsigned same = __match_any_sync(0xffffffffu, s.tile[0]);
      const int leader = __ffs(same) - 1, size = __popc(same), rank = __popc(same & ((1u << lane) - 1));
#pragma unroll
      for (int k = 0; k < 4; ++k) {  // FILL without the shared histogram: slots claimed in pass 2
        if (s.tile[k] < 0 || (k == 0 && lane != leader)) continue;
        const int amount = k == 0 ? size : 1;
        if (shared_hist) atomicAdd(hist + s.tile[k], amount);
        else if (!FILL) atomicAdd(counts + 1 + bin0 + s.tile[k], amount);
      }
      if (!FILL && i < per_level && !s.inside) {  // never binned: zero location / weight gradients
        reinterpret_cast<float2*>(grad_loc)[s.e] = make_float2(0.f, 0.f);
        grad_attn[s.e] = 0.f;
      }
    }
    __syncthreads();
    for (int k = threadIdx.x; k < tiles && shared_hist; k += kBinThreads) {
      const int amount = hist[k];
      if (amount == 0) continue;
      if constexpr (FILL) {
        base[k] = atomicSub(counts + 1 + bin0 + k, amount) - amount;
        hist[k] = 0;  // from here on: slots handed out
      } else {
        atomicAdd(counts + 1 + bin0 + k, amount);
      }
    }
    if constexpr (FILL) {
      __syncthreads();
#pragma unroll
      for (int r = 0; r < kBinRounds; ++r) {
        const int i = (blockIdx.x * kBinRounds + r) * kBinThreads + threadIdx.x;
        const SampleTiles s = sample_tiles(e[r], i < per_level, xy[r].x, xy[r].y, height, width, tiles_x);
        const unsigned same = __match_any_sync(0xffffffffu, s.tile[0]);
        const int leader = __ffs(same) - 1, size = __popc(same), rank = __popc(same & ((1u << lane) - 1));
        int first = 0;
        if (s.tile[0] >= 0 && lane == leader) {
          first = shared_hist ? base[s.tile[0]] + atomicAdd(hist + s.tile[0], size)
                              : atomicSub(counts + 1 + bin0 + s.tile[0], size) - size;
        }
        first = __shfl_sync(0xffffffffu, first, leader) + rank;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (s.tile[k] < 0) continue;
          int at = first;
          if (k > 0) {
            at = shared_hist ? base[s.tile[k]] + atomicAdd(hist + s.tile[k], 1)
                             : atomicSub(counts + 1 + bin0 + s.tile[k], 1) - 1;
          }
          bins[offsets[bin0 + s.tile[k]] + at] = s.e;
        }
      }
    }
    __syncthreads();  // the histogram is reset for the next (batch, head, level)
  }
}

// Work item w (levels from the last to the first, then (batch, head), then tile) -> level, (batch,
// head) and tile within the level; w < heads x tiles per head.
struct TileWork {
  int level, nm, tile, bin;
};

__device__ __forceinline__ TileWork tile_work(int w, const TileTable& tt, int heads, int levels) {
  int l = levels - 1;
  while (w >= heads * tt.tiles[l]) {
    w -= heads * tt.tiles[l];
    --l;
  }
  TileWork t;
  t.level = l;
  t.nm = w / tt.tiles[l];
  t.tile = w - t.nm * tt.tiles[l];
  t.bin = t.nm * tt.tile_start[levels] + tt.tile_start[l] + t.tile;
  return t;
}

// A sample's inputs to the tile kernel, loaded ahead of their use.
template <int LANES>
struct Fetched {
  int e;
  uint4 g[LANES];  // grad_out row of the sample's (batch, query, head)
  float2 xy;
  float a;
  template <typename T>
  __device__ __forceinline__ void load(int sample, const T* grad_out, const float* loc, const float* attn,
                                       int samples_per_group, int d) {
    e = sample;
    const uint4* go = reinterpret_cast<const uint4*>(grad_out + static_cast<int64_t>(sample / samples_per_group) * d);
#pragma unroll
    for (int k = 0; k < LANES; ++k) g[k] = __ldg(go + k);
    xy = reinterpret_cast<const float2*>(loc)[sample];
    a = attn[sample];
  }
};

__device__ __forceinline__ unsigned smem_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

template <typename T>
__device__ __forceinline__ void mma_16x8x16(float c[4], const unsigned a[4], unsigned b0, unsigned b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ void ldmatrix_x4(unsigned r[4], unsigned address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned r[4], unsigned address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}

// Dynamic shared memory: value rows (kHaloRows x (D + 8) T), staged grad_out rows (kChunk x (D + 8) T),
// coefficients (kRows x kCoefPitch T). Rows padded by 16 bytes against bank conflicts.
template <typename T, int D>
__global__ void __launch_bounds__(kTileThreads, MSDA_TILE_MIN_BLOCKS) tile_grad_kernel(
    const T* __restrict__ grad_out, const T* __restrict__ value, const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts, const float* __restrict__ loc, const float* __restrict__ attn,
    const int* __restrict__ bins, const int* __restrict__ offsets, int* __restrict__ work_counter,
    T* __restrict__ grad_value, float* __restrict__ grad_loc, float* __restrict__ grad_attn, TileDims d) {
  constexpr int V = kVec<T>;                 // 8 channels per 16 bytes
  constexpr int kLanes = D / V;              // 16-byte pieces of a row
  constexpr int kPitch = D + 8;              // row of the value / staging areas, in T
  constexpr int kNTiles = D / 8;             // mma n-tiles of 8 channels
  extern __shared__ uint4 dynamic_smem[];
  T* const value_rows = reinterpret_cast<T*>(dynamic_smem);
  T* const staged = value_rows + kHaloRows * kPitch;
  T* const coef = staged + kChunk * kPitch;
  __shared__ TileTable tt;
  __shared__ int work_item, work_begin, work_end;  // the tile to do and its bin's range
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  for (int k = tid; k < kRows * kCoefPitch / 8; k += kTileThreads) reinterpret_cast<uint4*>(coef)[k] = make_uint4(0, 0, 0, 0);
  build_tiles(tt, shapes, starts, d);
  const int samples_per_group = d.levels * d.points;
  const int64_t row_stride = static_cast<int64_t>(d.m) * D;
  const int heads = d.n * d.m;
  const int total = heads * tt.tile_start[d.levels];
  if (tid == 0) {  // the first tile; later ones from the counter, fetched one tile ahead
    work_item = blockIdx.x;
    if (work_item < total) {
      const TileWork t = tile_work(work_item, tt, heads, d.levels);
      work_begin = offsets[t.bin];
      work_end = offsets[t.bin + 1];
    }
  }
  __syncthreads();
  int written[4] = {-1, -1, -1, -1};  // coefficient rows of this thread's column from the last chunk

  for (;;) {
    if (work_item >= total) break;
    int next = 0, next_begin = 0, next_end = 0;
    if (tid == 0) next = gridDim.x + atomicAdd(work_counter, 1);  // in flight during this tile
    const TileWork t = tile_work(work_item, tt, heads, d.levels);
    const int l = t.level, nm = t.nm, ti = t.tile;
    const int n = nm / d.m, m = nm - n * d.m;
    const int height = tt.height[l], width = tt.width[l];
    const int ty = ti / tt.tiles_x[l], tx = ti - ty * tt.tiles_x[l];
    const int y_first = ty << kLog2Side, x_first = tx << kLog2Side;
    const T* value_level = value + (static_cast<int64_t>(n) * d.s + tt.start[l]) * row_stride + static_cast<int64_t>(m) * D;
    const int rows_y = min(kSide + 1, height - y_first), rows_x = min(kSide + 1, width - x_first);

    float acc[kNTiles][4];
#pragma unroll
    for (int j = 0; j < kNTiles; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
    const int begin = work_begin, end = work_end;
    // this thread's sample of the current chunk, loaded during the previous chunk (software pipeline:
    // bin entry during phase 1, then grad_out row, location and weight during the MMA)
    Fetched<kLanes> cur;
    if (tid < min(kChunk, end - begin)) cur.load(bins[begin + tid], grad_out, loc, attn, samples_per_group, D);
    for (int chunk = begin;; chunk += kChunk) {
      const int count = min(kChunk, end - chunk);
#pragma unroll
      for (int k = 0; k < 4; ++k) {  // this thread's coefficients of the last chunk back to zero
        if (written[k] >= 0) coef[written[k] * kCoefPitch + tid] = T();
        written[k] = -1;
      }
      const int next_count = min(kChunk, end - chunk - kChunk);
      const int next_e = tid < next_count ? bins[chunk + kChunk + tid] : -1;  // in flight during phase 1
      int e = 0;
      float lh = 0.f, lw = 0.f, a = 0.f;
      int y0 = 0, x0 = 0;
      if (tid < count) {  // one sample per thread: stage its grad_out row, write its coefficients
        e = cur.e;
        const uint4* g = cur.g;
        const float2 xy = cur.xy;
        a = cur.a;
        const float h = pixel(xy.y, height), wp = pixel(xy.x, width);
        const float h_floor = floorf(h), w_floor = floorf(wp);
        y0 = static_cast<int>(h_floor);
        x0 = static_cast<int>(w_floor);
        lh = h - h_floor;
        lw = wp - w_floor;
        const float weight[4] = {(1.f - lh) * (1.f - lw), (1.f - lh) * lw, lh * (1.f - lw), lh * lw};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int y = y0 + (k >> 1) - y_first, x = x0 + (k & 1) - x_first;  // within the tile?
          if (y < 0 || y >= kSide || x < 0 || x >= kSide || y_first + y >= height || x_first + x >= width) continue;
          written[k] = y * kSide + x;
          coef[written[k] * kCoefPitch + tid] = from_acc<T>(a * weight[k]);
        }
#pragma unroll
        for (int k = 0; k < kLanes; ++k) reinterpret_cast<uint4*>(staged + tid * kPitch)[k] = g[k];
      } else if (tid < ((count + 15) & ~15)) {  // a padding column of the last k-step: finite zeros
#pragma unroll
        for (int k = 0; k < kLanes; ++k) reinterpret_cast<uint4*>(staged + tid * kPitch)[k] = make_uint4(0, 0, 0, 0);
      }
      if (chunk == begin) {  // value rows of the tile and its halo (within the map)
        for (int k = tid; k < rows_y * rows_x * kLanes; k += kTileThreads) {
          const int piece = k % kLanes, r = k / kLanes;
          const int ry = r / rows_x, rx = r - ry * rows_x;
          reinterpret_cast<uint4*>(value_rows + (ry * kHaloX + rx) * kPitch)[piece] =
              __ldg(reinterpret_cast<const uint4*>(value_level + ((y_first + ry) * width + x_first + rx) * row_stride) + piece);
        }
      }
      if (tid == 0 && chunk == begin && next < total) {  // the next tile's bin range, in flight meanwhile
        const TileWork nt = tile_work(next, tt, heads, d.levels);
        next_begin = offsets[nt.bin];
        next_end = offsets[nt.bin + 1];
      }
      __syncthreads();
      if (next_e >= 0) cur.load(next_e, grad_out, loc, attn, samples_per_group, D);  // in flight during the MMA
      // a home sample (its anchor in this tile): location and weight gradients from the shared rows
      if (tid < count && (max(y0, 0) >> kLog2Side) == ty && (max(x0, 0) >> kLog2Side) == tx) {
        const bool top = y0 >= 0, bottom = y0 + 1 < height, left = x0 >= 0, right = x0 + 1 < width;
        const bool inside[4] = {top && left, top && right, bottom && left, bottom && right};
        const int corner0 = (y0 - y_first) * kHaloX + (x0 - x_first);  // < 0 only where unused
        const int corner[4] = {corner0, corner0 + 1, corner0 + kHaloX, corner0 + kHaloX + 1};
        float dot[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int piece = 0; piece < kLanes; ++piece) {
          float g[V];
          unpack_vec<T>(reinterpret_cast<const uint4*>(staged + tid * kPitch)[piece], g);
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (!inside[k]) continue;
            float x[V];
            unpack_vec<T>(reinterpret_cast<const uint4*>(value_rows + corner[k] * kPitch)[piece], x);
#pragma unroll
            for (int v = 0; v < V; ++v) dot[k] += g[v] * x[v];
          }
        }
        Corners<float> c;  // the parts bilinear_grads reads
        c.lh = lh;
        c.lw = lw;
        float grad_h, grad_w;
        bilinear_grads(c, dot, &grad_h, &grad_w);
        grad_attn[e] = (1.f - lh) * (1.f - lw) * dot[0] + (1.f - lh) * lw * dot[1] + lh * (1.f - lw) * dot[2] +
                       lh * lw * dot[3];
        reinterpret_cast<float2*>(grad_loc)[e] =
            make_float2(a * grad_w * static_cast<float>(width), a * grad_h * static_cast<float>(height));
      }
      // value_grad[16 rows of this warp] += coef[16 rows x count] @ staged[count x D]
      const int ksteps = (count + 15) >> 4;
      for (int ks = 0; ks < ksteps; ++ks) {
        unsigned af[4];
        ldmatrix_x4(af, smem_address(coef + (warp * 16 + (lane & 15)) * kCoefPitch + ks * 16 + (lane >> 4) * 8));
#pragma unroll
        for (int j = 0; j < kNTiles; j += 2) {
          unsigned bf[4];
          const int col = (j + (lane >> 4)) * 8;
          ldmatrix_x4_trans(bf, smem_address(staged + (ks * 16 + (lane & 15)) * kPitch + min(col, D - 8)));
          mma_16x8x16<T>(acc[j], af, bf[0], bf[1]);
          if (j + 1 < kNTiles) mma_16x8x16<T>(acc[j + 1], af, bf[2], bf[3]);
        }
      }
      if (chunk + kChunk >= end) break;
      __syncthreads();  // the next chunk rewrites the coefficients and the staging rows
    }

    // every row of the tile, once: rows g and g + 8 of this warp's band, channels 2t, 2t + 1
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = warp * 16 + (lane >> 2) + half * 8;
      const int y = y_first + (r >> kLog2Side), x = x_first + (r & (kSide - 1));
      if (y >= height || x >= width) continue;
      T* dst = grad_value + (static_cast<int64_t>(n) * d.s + tt.start[l] + y * width + x) * row_stride +
               static_cast<int64_t>(m) * D + 2 * (lane & 3);
#pragma unroll
      for (int j = 0; j < kNTiles; ++j) {
        const T lo = from_acc<T>(acc[j][2 * half]), hi = from_acc<T>(acc[j][2 * half + 1]);
        *reinterpret_cast<unsigned*>(dst + 8 * j) =
            static_cast<unsigned>(bits16(lo)) | (static_cast<unsigned>(bits16(hi)) << 16);
      }
    }
    __syncthreads();  // everyone has read work_item, the value rows, the coefficients and the staging rows
    if (tid == 0) {
      work_item = next;
      work_begin = next_begin;
      work_end = next_end;
    }
    __syncthreads();
  }
}

template <int X> using IntC = std::integral_constant<int, X>;

}  // namespace

bool tiled_supported(const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& loc,
                     const Geometry& geo) {
  const auto type = value.scalar_type();
  return (type == at::kHalf || type == at::kBFloat16) && (geo.d == 8 || geo.d == 16 || geo.d == 32 || geo.d == 64) &&
         aligned16(value) && aligned16(grad_output) && reinterpret_cast<uintptr_t>(loc.data_ptr()) % 8 == 0;
}

at::Tensor backward_tiled(const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
                          const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn,
                          const at::Tensor& grad_loc, const at::Tensor& grad_attn, const Geometry& geo) {
  TORCH_CHECK(tiled_supported(grad_output, value, loc, geo), "ms_deform_attn: the tiled backward takes 16-byte aligned "
              "fp16 / bf16 values of head dim 8, 16, 32 or 64");
  const int64_t samples = geo.n * geo.lq * geo.m * geo.levels * geo.points;
  // tiles per (batch, head): sum_l ceil(H_l / 8) ceil(W_l / 8) <= S / 8 + L (no host sync)
  const int64_t bins = geo.n * geo.m * (geo.s / 8 + geo.levels);
  TORCH_CHECK(samples < INT_MAX / 4 && bins < INT_MAX / 2,
              "ms_deform_attn: too many samples for the CUDA backward (", samples, ")");
  at::Tensor grad_value = at::empty_like(value);
  const TileDims dims{static_cast<int>(geo.n), static_cast<int>(geo.s), static_cast<int>(geo.m),
                      static_cast<int>(geo.lq), static_cast<int>(geo.levels), static_cast<int>(geo.points)};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t* shp = spatial_shapes.data_ptr<int64_t>();
  const int64_t* st = level_start_index.data_ptr<int64_t>();
  const float* lp = loc.data_ptr<float>();
  const float* ap = attn.data_ptr<float>();
  float* glp = grad_loc.data_ptr<float>();
  float* gap = grad_attn.data_ptr<float>();
  const auto int_opts = value.options().dtype(at::kInt);
  at::Tensor counts = at::zeros({bins + 2}, int_opts);  // [0] = 0, [1 + bin] = sizes, [bins + 1] = work counter
  at::Tensor entries = at::empty({std::max<int64_t>(samples * 4, 1)}, int_opts);  // home + at most 3 dups
  int* cnt = counts.data_ptr<int>();
  const int hist_size = static_cast<int>(std::min<int64_t>(kMaxHist, geo.s / 8 + geo.levels));
  const int64_t per_level = geo.lq * geo.points;
  const dim3 bin_grid((per_level + kBinRounds * kBinThreads - 1) / (kBinRounds * kBinThreads),
                      std::min<int64_t>(geo.n * geo.m * geo.levels, 65535));
  const size_t hist_bytes = 2 * hist_size * sizeof(int);
  if (samples > 0) {
    tile_bin_kernel<false><<<bin_grid, kBinThreads, hist_bytes, stream>>>(shp, st, lp, cnt, nullptr, nullptr, glp,
                                                                           gap, dims, hist_size);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const at::Tensor offsets = at::cumsum(counts.narrow(0, 0, bins + 1), 0, at::kInt);
  const int* off = offsets.data_ptr<int>();
  if (samples > 0) {
    tile_bin_kernel<true><<<bin_grid, kBinThreads, hist_bytes, stream>>>(shp, st, lp, cnt, off,
                                                                          entries.data_ptr<int>(), glp, gap, dims,
                                                                          hist_size);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  const auto launch = [&](auto tag, auto dim) {
    using S = decltype(tag);
    using T = typename CudaType<S>::type;
    constexpr int D = decltype(dim)::value;
    auto kernel = tile_grad_kernel<T, D>;
    const int smem = static_cast<int>(((kHaloRows + kChunk) * (D + 8) + kRows * kCoefPitch) * sizeof(T));
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    int per_sm = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kTileThreads, smem));
    const int64_t grid = std::min<int64_t>(bins, static_cast<int64_t>(std::clamp(per_sm, 1, MSDA_TILE_GRID_PER_SM)) * sms);
    kernel<<<grid, kTileThreads, smem, stream>>>(
        reinterpret_cast<const T*>(grad_output.data_ptr<S>()), reinterpret_cast<const T*>(value.data_ptr<S>()), shp,
        st, lp, ap, entries.data_ptr<int>(), off, cnt + bins + 1, reinterpret_cast<T*>(grad_value.data_ptr<S>()), glp,
        gap, dims);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  const auto with_dim = [&](auto tag) {
    switch (geo.d) {
      case 8: launch(tag, IntC<8>{}); break;
      case 16: launch(tag, IntC<16>{}); break;
      case 32: launch(tag, IntC<32>{}); break;
      default: launch(tag, IntC<64>{}); break;
    }
  };
  if (value.scalar_type() == at::kBFloat16) with_dim(at::BFloat16{});
  else with_dim(at::Half{});
  return grad_value;
}

}  // namespace msda
