// Default backward of ms_deform_attn on CUDA for fp16 / bf16 values (head dim 8, 16, 32 or 64,
// 16-byte aligned): the value gradient by 8 x 8 tiles of the value maps, accumulated on the tensor
// cores.
//
// A sample inside the window (-1 < h < H, -1 < w < W) has its bilinear corners at rows
// {y0, y0 + 1} x {x0, x0 + 1}, (y0, x0) = floor(h, w). Each level of each (batch, head) is cut into
// 8 x 8 tiles of value rows; a sample's home is the tile of (max(y0, 0), max(x0, 0)); when its other
// corners reach into the next tile row / column it is also binned there (a "dup").
//
// 0. zero_ints: the bookkeeping (bin sizes, cursors, counters, overflow flags) zeroed.
// 1. tile_bin_kernel, one pass: a block takes kBinRounds x kBinThreads (query, point) pairs of
//    one (batch, head, level), counts them per tile in a shared-memory histogram (the home tile once
//    per warp and tile), whose atomics give each entry its slot within the block's share; one global
//    atomic per tile claims the share within the bin, and every sample's index is written at its
//    bin's fixed start: each (batch, head, level) owns a fixed region of the entry array (4 entries
//    per sample at most) cut into equal bins (BinBuffers), 3.2 x the average bin for the model's
//    shapes. Samples outside the window get their zero location and weight gradients here. A bin that
//    outgrows its share flags its (batch, head, level), and the tile kernel's blocks bin the flagged
//    ones again the same way before their first tile (rebin_overflowed: work items claimed from a
//    counter, at bin starts from an exclusive scan of their sizes; one flag read when none is set).
//    On sm_90 all three kernels are dependent launches: a block starts while
//    the kernel before it drains (the one-pass kernel loads its locations and builds its histogram
//    then) and waits for that kernel before touching memory that kernel writes (or, for the zeroing,
//    may still read). The zeroing lets the binning start before its own wait only for autograd's
//    saved inputs (`saved_inputs`: written before the forward), which that set-up reads.
// 2. tile_grad_kernel: persistent blocks of 4 warps take tiles from an atomic counter (levels from
//    the last, usually coarsest and densest, to the first; two tiles ahead). Per tile the value rows
//    (and a one-row halo) are copied to shared memory with cp.async, during the previous tile's last
//    chunk (double buffer). The bin is read in chunks of 128 samples, one per thread, loaded a chunk
//    ahead (Fetched; the next tile's first chunk during the current tile's last; the first tile's value
//    rows while the binning drains): the warps stage
//    their samples' grad_out rows (adjacent lanes read a row: 64-byte requests) in a swizzled area;
//    each thread writes its sample's (at most 4) coefficients, attention weight x bilinear weight,
//    into its column of a 64-row coefficient matrix (rounded to T), and, for a home sample, computes
//    the location and weight gradients from the staged row and the shared value rows (all four corners
//    read, the dot of a corner outside the map then set to zero). Then
//    value_grad[tile rows] += coefficients (64 x 128) @ staged rows (128 x D): mma.m16n8k16 with fp32
//    accumulators, one 16-row band per warp (levels dense in samples: split-K, two bands per warp and
//    every other k-step, the halves summed per tile). After the last chunk every row of the tile is
//    written once, in T.
// No zero fill, no floating-point atomics, no fp32 copy of the value gradient. The coefficient's
// rounding to T (2^-9 relative for bf16, 2^-11 for fp16) is of the order of the gradient's final
// rounding to T; the summation order within a row follows the bin order (not deterministic: see
// cuda_backward_query.cu for the deterministic backward).
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAFunctions.h>

#include <algorithm>

#include "cuda_common.cuh"
#include "cuda_launch.h"

namespace msda {
namespace {

constexpr int kBinThreads = 256;
#ifndef MSDA_BIN_ROUNDS  // samples per thread of the bin kernels; docs/ops.md
#define MSDA_BIN_ROUNDS 3
#endif
constexpr int kBinRounds = MSDA_BIN_ROUNDS;
static_assert(kBinRounds * kBinThreads <= 1 << 16, "tile_bin_kernel keeps a block's slots in 16 bits");
constexpr int kMaxHist = 4096;                    // tiles per level counted in shared memory
constexpr int kLog2Side = 3, kSide = 8;           // tiles of 8 x 8 value rows
constexpr int kRows = kSide * kSide;
constexpr int kHaloX = kSide + 1, kHaloRows = kHaloX * kHaloX;  // the tile's rows plus bottom / right halo
constexpr int kTileThreads = 128;                 // 4 warps: one 16-row band of the tile each
constexpr int kChunk = kTileThreads;              // samples per chunk, one per thread
constexpr int kCoefPitch = kChunk + 8;            // coefficient row, in T (16 bytes of padding)
static_assert(kRows * kCoefPitch * 2 >= kMaxHist * 4, "rebin_overflowed's histogram lives in the coefficients");
#ifndef MSDA_BIN_MIN_BLOCKS  // register cap of the binning kernels (8 blocks per SM: 32 registers); docs/ops.md
#define MSDA_BIN_MIN_BLOCKS 8
#endif
#ifndef MSDA_TILE_MIN_BLOCKS  // register cap: 4 blocks per SM (128 registers; ptxas takes ~106); docs/ops.md
#define MSDA_TILE_MIN_BLOCKS 4
#endif
#ifndef MSDA_SPLIT_DENSITY  // samples per value row from which the tile kernel splits K (docs/ops.md)
#define MSDA_SPLIT_DENSITY 8
#endif
#ifndef MSDA_TILE_GRID_PER_SM  // persistent blocks launched per SM (at most what fits); docs/ops.md
#define MSDA_TILE_GRID_PER_SM 4
#endif

// Zeroes n ints (grid-stride, 4 per thread and step) once the kernel before it (which may use this
// memory) has completed. Lets the next kernel start at once with `early` (its set-up then reads the
// backward's inputs while that kernel drains: they must have been written before it, as autograd's
// saved tensors were), else after that wait (2.5 us later on the injector).
__global__ void __launch_bounds__(256) zero_ints(int* __restrict__ p, int64_t n, bool early) {
  if (early) start_next_kernel();
  wait_for_previous_kernel();
  if (!early) start_next_kernel();
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * 256 + threadIdx.x) * 4; i < n; i += static_cast<int64_t>(gridDim.x) * 1024) {
    if (i + 4 <= n && (reinterpret_cast<uintptr_t>(p + i) & 15) == 0) {
      *reinterpret_cast<int4*>(p + i) = make_int4(0, 0, 0, 0);
    } else {
      for (int64_t k = i; k < min(i + 4, n); ++k) p[k] = 0;
    }
  }
}

struct TileTable {
  int height[kMaxLevels], width[kMaxLevels], start[kMaxLevels];
  int tiles_x[kMaxLevels], tiles[kMaxLevels];
  int capacity[kMaxLevels];        // entries per bin at fixed starts (BinBuffers)
  FastDiv by_tiles[kMaxLevels], by_tiles_x[kMaxLevels];
  int tile_start[kMaxLevels + 1];  // first tile of each level within one (batch, head); [levels] = all
};

struct TileDims {
  int n, s, m, lq, levels, points;
  FastDiv by_m, by_levels, by_points, by_samples;  // x / m, x / levels, x / points, x / (levels x points)
};

// One thread per level, then a prefix over the levels. DIVIDERS: also the per-level quotients of
// tile_geom (the tile kernel's; two 64-bit divisions per level).
template <bool DIVIDERS>
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
    t.capacity[l] = t.tiles[l] > 0 ? 4 * d.lq * d.points / t.tiles[l] : 0;
    if constexpr (DIVIDERS) {
      t.by_tiles[l] = FastDiv::of(t.tiles[l]);
      t.by_tiles_x[l] = FastDiv::of(t.tiles_x[l]);
    }
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

// Where a sample is binned within its level: `tile`, its home (-1 outside the window), and `dups`:
// bit 0 when its corners reach into the next tile row, bit 1 the next tile column (entries k = 1, 2
// and, with both bits, 3 of entry_tile).
struct SampleHome {
  int tile, dups;
  bool inside;  // inside the window
};

__device__ __forceinline__ SampleHome sample_home(bool active, float x, float y, int height, int width, int tiles_x) {
  SampleHome s;
  const float h = active ? pixel(y, height) : -2.f, w = active ? pixel(x, width) : -2.f;
  s.inside = h > -1.f && w > -1.f && h < static_cast<float>(height) && w < static_cast<float>(width);
  const int y0 = s.inside ? static_cast<int>(floorf(h)) : 0, x0 = s.inside ? static_cast<int>(floorf(w)) : 0;
  const bool dup_y = s.inside && y0 >= 0 && y0 + 1 < height && ((y0 + 1) & (kSide - 1)) == 0;
  const bool dup_x = s.inside && x0 >= 0 && x0 + 1 < width && ((x0 + 1) & (kSide - 1)) == 0;
  s.tile = s.inside ? (max(y0, 0) >> kLog2Side) * tiles_x + (max(x0, 0) >> kLog2Side) : -1;
  s.dups = dup_y | (dup_x << 1);
  return s;
}

// Tile of a sample's entry k: 0 home, 1 below, 2 right, 3 below-right; -1 where it has none.
__device__ __forceinline__ int entry_tile(int home, int dups, int k, int tiles_x) {
  if (home < 0 || (dups & k) != k) return -1;
  return home + (k & 1 ? tiles_x : 0) + (k >> 1);
}

// Bin bookkeeping in one int buffer (BinBuffers::ints entries, the first BinBuffers::zeroed of them
// zeroed: starts[] is written before it is read). The entries of segment (batch, head, level) s lie
// in [s, s + 1) x region of the entry array, region = 4 x queries x points (at most 4 entries per
// sample): bin k of a level of T tiles holds its entries at s x region + k x (region / T) unless the
// segment overflowed (a bin with more than region / T entries), in which case the whole segment is
// binned again with bin starts from an exclusive scan of its sizes.
struct BinBuffers {
  int* sizes;         // [bins] entries per bin
  int* cursors;       // [bins] entries handed out per bin (REFILL)
  int* work;          // [1] the tile kernel's work counter
  int* any;           // [1] nonzero: some segment overflowed
  int* rebin_claims;  // [1] rebinning work items claimed (rebin_overflowed)
  int* rebinned;      // [1] rebinning work items done
  int* overflow;      // [segments] nonzero: the segment is binned again (REFILL)
  int* starts;        // [bins] each bin's first entry
  static int64_t zeroed(int64_t bins, int64_t segments) { return 2 * bins + 4 + segments; }
  static int64_t ints(int64_t bins, int64_t segments) { return 3 * bins + 4 + segments; }
  BinBuffers(int* p, int64_t bins, int64_t segments)
      : sizes(p), cursors(p + bins), work(p + 2 * bins), any(work + 1), rebin_claims(work + 2), rebinned(work + 3),
        overflow(work + 4), starts(overflow + segments) {}
};

// Exclusive prefix sum of one int per thread over a block of THREADS; *total = the block's sum.
// Ends with a barrier; `scratch` holds THREADS / 32 ints.
template <int THREADS>
__device__ __forceinline__ int block_exclusive_scan(int x, int* scratch, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int inclusive = x;
#pragma unroll
  for (int k = 1; k < 32; k <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, inclusive, k);
    if (lane >= k) inclusive += y;
  }
  if (lane == 31) scratch[warp] = inclusive;
  __syncthreads();
  int before = 0, sum = 0;
#pragma unroll
  for (int w = 0; w < THREADS / 32; ++w) {
    before += w < warp ? scratch[w] : 0;
    sum += scratch[w];
  }
  __syncthreads();
  *total = sum;
  return before + inclusive - x;
}

// The samples of a binning work item (chunk `chunk` of kBinRounds x THREADS (query, point) pairs of
// segment `nml`), kBinRounds per thread: memory index and location ((-1, -1), outside the window,
// past the level's pairs). Loaded first, so that the loads overlap the block's set-up.
struct BinSamples {
  float2 xy[kBinRounds];
  int e[kBinRounds];
};

template <int THREADS>
__device__ __forceinline__ BinSamples load_bin_samples(int nml, int chunk, const float* __restrict__ loc,
                                                       const TileDims& d) {
  const int nm = d.by_levels(nml), l = nml - nm * d.levels;
  const int n = d.by_m(nm), m = nm - n * d.m;
  BinSamples s;
#pragma unroll
  for (int r = 0; r < kBinRounds; ++r) {
    const int i = (chunk * kBinRounds + r) * THREADS + threadIdx.x;
    const int q = d.by_points(i), p = i - q * d.points;
    s.e[r] = ((n * d.lq + q) * d.m + m) * (d.levels * d.points) + l * d.points + p;
    s.xy[r] = i < d.lq * d.points ? reinterpret_cast<const float2*>(loc)[s.e[r]] : make_float2(-1.f, -1.f);
  }
  return s;
}

// Work items of the binning by blocks of THREADS: chunks of kBinRounds x THREADS (query, point)
// pairs per (batch, head, level) segment.
template <int THREADS>
__host__ __device__ __forceinline__ int bin_chunks(int pairs_per_level) {
  return (pairs_per_level + kBinRounds * THREADS - 1) / (kBinRounds * THREADS);
}

// Bins a work item of the samples: chunk `chunk` of kBinRounds x THREADS (query, point) pairs of
// (batch, head, level) segment `nml`, by a block of THREADS threads. One pass (REFILL = false): the
// block counts its samples per tile in a shared-memory histogram (the home tile once per warp and
// tile), whose atomics hand out each entry's slot within the block's share of the bin; then it
// claims its share with one global atomic per tile (sizes[bin]: the old value is where the share
// starts within the bin) and writes every sample's index at the bin's fixed start (BinBuffers) +
// its slot; a slot beyond the bin's capacity is not written but flags the segment (one flag store
// per block). REFILL (by the tile kernel's blocks, rebin_overflowed): the flagged segments binned
// again the same way, at bin starts from an exclusive scan of their sizes (starts[], also read by
// the tile kernel; `scanned`: the segment whose starts the block holds), shares claimed on
// cursors[]. `hist`: hist_size ints of shared memory; a level with more tiles than that takes
// global atomics (per warp and tile) instead of the shared histogram. `scratch`: THREADS / 32 ints;
// `overflowed`: a shared flag (one pass). `in`: the item's samples (load_bin_samples).
template <int THREADS, bool REFILL>
__device__ __forceinline__ void bin_item(int nml, int chunk, const BinSamples& in, int& scanned,
                                         const BinBuffers& buf, int* __restrict__ bins, float* __restrict__ grad_loc,
                                         float* __restrict__ grad_attn, const TileDims& d, int hist_size, int* hist,
                                         const TileTable& tt, int* scratch, int& overflowed) {
  const int lane = threadIdx.x & 31;
  const int per_level = d.lq * d.points;
  const int region = 4 * per_level;
  const int nm = d.by_levels(nml), l = nml - nm * d.levels;
  const int height = tt.height[l], width = tt.width[l], tiles_x = tt.tiles_x[l], tiles = tt.tiles[l];
  const int bin0 = nm * tt.tile_start[d.levels] + tt.tile_start[l];  // bin of the level's tile 0
  const int capacity = tt.capacity[l];
  int* const segment_bins = bins + static_cast<int64_t>(nml) * region;
  const bool shared_hist = tiles <= hist_size;
  const float2* const xy = in.xy;
  const int* const e = in.e;
  // claims a slot for each entry of a sample from counters[tile] (the home tile once per warp and
  // tile, lanes of one home ranked among themselves; the others one by one) and calls use(k, tile,
  // slot) for entry k
  const auto claim = [&](const SampleHome& s, int* counters, auto&& use) {
    const unsigned same = __match_any_sync(0xffffffffu, s.tile);
    const int leader = __ffs(same) - 1;
    int first = 0;
    if (s.tile >= 0 && lane == leader) first = atomicAdd(counters + s.tile, __popc(same));
    first = __shfl_sync(0xffffffffu, first, leader) + __popc(same & ((1u << lane) - 1));
    if (s.tile >= 0) use(0, s.tile, first);
#pragma unroll
    for (int k = 1; k < 4; ++k) {
      const int tile = entry_tile(s.tile, s.dups, k, tiles_x);
      if (tile >= 0) use(k, tile, atomicAdd(counters + tile, 1));
    }
  };
  // writes entry e of tile's bin: one pass at its fixed start + slot (or flags the segment);
  // REFILL at the scanned start + slot
  const auto put = [&](int tile, int slot, int e) {
    if constexpr (REFILL) {
      bins[buf.starts[bin0 + tile] + slot] = e;
    } else {
      if (slot < capacity) segment_bins[tile * capacity + slot] = e;
      else overflowed = 1;
    }
  };
  if (REFILL && nml != scanned) {  // the segment's bin starts (every block that bins it writes the same)
    int carry = nml * region;
    for (int k0 = 0; k0 < tiles; k0 += THREADS) {
      const int k = k0 + threadIdx.x;
      int sum = 0;
      const int start = carry + block_exclusive_scan<THREADS>(k < tiles ? buf.sizes[bin0 + k] : 0, scratch, &sum);
      if (k < tiles) buf.starts[bin0 + k] = start;
      carry += sum;
    }
    scanned = nml;
  }
  // with a shared histogram the block counts while the kernel before drains (dependent launch);
  // the global atomics wait for the zeroed bookkeeping
  if (shared_hist) {
    for (int k = threadIdx.x; k < tiles; k += THREADS) hist[k] = 0;
    __syncthreads();
  } else {
    wait_for_previous_kernel();
    __syncthreads();  // (REFILL: the bin starts, written by other threads)
  }
  // shared histogram: entry k's slot within the block's share (a sample enters a bin once: below
  // kBinRounds x THREADS) in 16 bits of slots[r][k / 2], written once the share's start is
  // known; global atomics: the slot within the bin, written at once. Each sample's home tile and
  // dup bits are kept for the writes (its location is not needed again).
  int* const counters = REFILL ? buf.cursors : buf.sizes;
  unsigned slots[kBinRounds][2] = {};
  int home[kBinRounds];  // home tile x 4 + dups (outside the window: -4)
  unsigned outside = 0;  // rounds whose sample lies outside the window (never binned)
  // (one copy of the rounds per kind of counter, so that the shared one takes shared-memory atomics)
  const auto count = [&](int* tile_counters, auto in_shared) {
#pragma unroll
    for (int r = 0; r < kBinRounds; ++r) {
      const int i = (chunk * kBinRounds + r) * THREADS + threadIdx.x;
      const SampleHome s = sample_home(i < per_level, xy[r].x, xy[r].y, height, width, tiles_x);
      claim(s, tile_counters, [&](int k, int tile, int slot) {
        if constexpr (decltype(in_shared)::value) slots[r][k >> 1] |= static_cast<unsigned>(slot) << (16 * (k & 1));
        else put(tile, slot, e[r]);
      });
      home[r] = s.tile * 4 + s.dups;
      outside |= static_cast<unsigned>(i < per_level && !s.inside) << r;
    }
  };
  if (shared_hist) count(hist, std::true_type{});
  else count(counters + bin0, std::false_type{});
  if constexpr (!REFILL) {
    // (outputs are written only after the wait: their memory may be a buffer that a kernel before
    // this one's predecessor read, freed in stream order)
    wait_for_previous_kernel();  // (no-op when done)
#pragma unroll
    for (int r = 0; r < kBinRounds; ++r) {
      if (outside >> r & 1) {  // never binned: zero location / weight gradients
        reinterpret_cast<float2*>(grad_loc)[e[r]] = make_float2(0.f, 0.f);
        grad_attn[e[r]] = 0.f;
      }
    }
  }
  __syncthreads();
  for (int k = threadIdx.x; k < tiles && shared_hist; k += THREADS) {
    const int amount = hist[k];
    if (amount > 0) hist[k] = atomicAdd(counters + bin0 + k, amount);
  }
  for (int k = threadIdx.x; !REFILL && k < tiles && chunk == 0; k += THREADS) {
    buf.starts[bin0 + k] = nml * region + k * capacity;
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < kBinRounds && shared_hist; ++r) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int tile = entry_tile(home[r] >> 2, home[r] & 3, k, tiles_x);
      if (tile >= 0) put(tile, hist[tile] + ((slots[r][k >> 1] >> (16 * (k & 1))) & 0xffff), e[r]);
    }
  }
  __syncthreads();  // the histogram is reset for the next item
  if (!REFILL && threadIdx.x == 0 && overflowed) {  // (one flag store per block, not per entry)
    buf.overflow[nml] = *buf.any = 1;
    overflowed = 0;
  }
}

// The one-pass binning: block (x, y) takes chunk x of segments y, y + gridDim.y, ... (bin_item).
// Dynamic shared memory: hist_size ints.
__global__ void __launch_bounds__(kBinThreads, MSDA_BIN_MIN_BLOCKS) tile_bin_kernel(
    const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts, const float* __restrict__ loc,
    BinBuffers buf, int* __restrict__ bins, float* __restrict__ grad_loc, float* __restrict__ grad_attn, TileDims d,
    int hist_size) {
  extern __shared__ int hist[];  // per tile: the block's entries, then its share's start
  __shared__ TileTable tt;
  __shared__ int scratch[kBinThreads / 32];
  __shared__ int overflowed;  // a bin of the current segment outgrew its capacity
  if (threadIdx.x == 0) overflowed = 0;
  start_next_kernel();
  BinSamples in = load_bin_samples<kBinThreads>(blockIdx.y, blockIdx.x, loc, d);  // (in flight during the set-up)
  build_tiles<false>(tt, shapes, starts, d);
  const int segments = d.n * d.m * d.levels;
  int scanned = -1;  // (REFILL only)
  for (int nml = blockIdx.y; nml < segments; nml += gridDim.y) {
    if (nml != static_cast<int>(blockIdx.y)) in = load_bin_samples<kBinThreads>(nml, blockIdx.x, loc, d);
    bin_item<kBinThreads, false>(nml, blockIdx.x, in, scanned, buf, bins, grad_loc, grad_attn, d, hist_size, hist, tt,
                                 scratch, overflowed);
  }
}

__device__ __forceinline__ int load_acquire(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Bins the segments that overflowed in the one pass again (bin_item<REFILL>), by the tile kernel's
// blocks before their first tile: each block claims work items (segment x chunk of kBinRounds x
// kTileThreads pairs) from a counter until none is left, then waits until every item is done. A block
// waits only once every item is claimed, so it never waits on a block that is not running. The
// histogram: hist_size ints of the tile kernel's dynamic shared memory from byte hist_offset.
__device__ __noinline__ void rebin_overflowed(const float* __restrict__ loc, BinBuffers buf, int* __restrict__ bins,
                                              TileDims d, int hist_size, int hist_offset, const TileTable& tt) {
  extern __shared__ uint4 dynamic_smem[];  // the tile kernel's
  int* const hist = reinterpret_cast<int*>(reinterpret_cast<char*>(dynamic_smem) + hist_offset);
  __shared__ int scratch[kTileThreads / 32];
  __shared__ int item;
  int overflowed = 0;  // (one pass only)
  const int chunks = bin_chunks<kTileThreads>(d.lq * d.points);
  const int items = d.n * d.m * d.levels * chunks;
  int scanned = -1, done = 0;
  for (;;) {
    if (threadIdx.x == 0) item = atomicAdd(buf.rebin_claims, 1);
    __syncthreads();
    const int claimed = item;
    __syncthreads();
    if (claimed >= items) break;
    const int nml = claimed / chunks, chunk = claimed - nml * chunks;
    if (buf.overflow[nml] != 0) {  // (the same for the whole block)
      bin_item<kTileThreads, true>(nml, chunk, load_bin_samples<kTileThreads>(nml, chunk, loc, d), scanned, buf, bins,
                                   nullptr, nullptr, d, hist_size, hist, tt, scratch, overflowed);
    }
    ++done;
  }
  __threadfence();  // this block's entries and bin starts before its count
  __syncthreads();
  if (threadIdx.x == 0) {
    atomicAdd(buf.rebinned, done);
    while (load_acquire(buf.rebinned) < items) __nanosleep(200);
  }
  __syncthreads();
}

// Work item w (levels from the last to the first, then (batch, head), then tile) -> the tile's
// geometry; w < heads x tiles per head.
struct TileGeom {
  int level, n, m, bin;
  int y_first, x_first;  // the tile's first value row / column
  int rows_y, rows_x;    // rows / columns of the tile plus halo that lie inside the map
};

__device__ __forceinline__ TileGeom tile_geom(int w, const TileTable& tt, const TileDims& d) {
  const int heads = d.n * d.m;
  int l = d.levels - 1;
  while (w >= heads * tt.tiles[l]) {
    w -= heads * tt.tiles[l];
    --l;
  }
  TileGeom g;
  g.level = l;
  const int nm = tt.by_tiles[l](w), tile = w - nm * tt.tiles[l];
  g.n = d.by_m(nm);
  g.m = nm - g.n * d.m;
  g.bin = nm * tt.tile_start[d.levels] + tt.tile_start[l] + tile;
  const int ty = tt.by_tiles_x[l](tile);
  g.y_first = ty << kLog2Side;
  g.x_first = (tile - ty * tt.tiles_x[l]) << kLog2Side;
  g.rows_y = min(kSide + 1, tt.height[l] - g.y_first);
  g.rows_x = min(kSide + 1, tt.width[l] - g.x_first);
  return g;
}

// A tile of the work list with its bin range, fetched by one thread two tiles ahead.
struct WorkSlot {
  int item, begin, end;  // work item (>= total: no more work); its bin's entries [begin, end)
  TileGeom geom;
  __device__ __forceinline__ void fetch(int w, int total, const TileTable& tt, const TileDims& d, const int* starts,
                                        const int* sizes) {
    item = w;
    if (w >= total) return;
    geom = tile_geom(w, tt, d);
    begin = starts[geom.bin];
    end = begin + sizes[geom.bin];
  }
};

__device__ __forceinline__ unsigned smem_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// Staged grad_out rows are D values without padding; the 16-byte pieces of a row are permuted
// (XOR with the row's position within its 128-byte line group) so that both the ldmatrix reads of
// 8 rows at one piece and the writes of whole rows are free of bank conflicts.
template <int LANES>
__device__ __forceinline__ int swizzle(int row, int piece) {
  constexpr int kShift = LANES >= 8 ? 0 : LANES == 4 ? 1 : LANES == 2 ? 2 : 3;  // log2(rows per 128 bytes)
  return piece ^ ((row >> kShift) & (LANES - 1));
}

// The inputs of one chunk, loaded a chunk ahead. Called by whole warps: each thread holds its own
// sample's location and weight, and piece (lane % LANES) of the grad_out rows of the warp's samples
// lane / LANES + k * 32 / LANES (a row's pieces are read by adjacent lanes: 64 bytes per request).
template <int LANES>
struct Fetched {
  int e;  // this thread's sample, -1 for none
  float2 xy;
  float a;
  uint4 g[LANES];
  template <typename T>
  __device__ __forceinline__ void load(int sample, const T* grad_out, const float* loc, const float* attn,
                                       const FastDiv& by_samples, int d, int lane) {
    e = sample;
    int row = -1;  // grad_out row (batch, query, head) of the sample
    if (sample >= 0) {
      row = by_samples(sample);
      xy = reinterpret_cast<const float2*>(loc)[sample];
      a = attn[sample];
    }
#pragma unroll
    for (int k = 0; k < LANES; ++k) {
      const int r = __shfl_sync(0xffffffffu, row, lane / LANES + k * (32 / LANES));
      g[k] = r >= 0 ? __ldg(reinterpret_cast<const uint4*>(grad_out + static_cast<int64_t>(r) * d) + lane % LANES)
                    : make_uint4(0, 0, 0, 0);
    }
  }
};

// The tile's first row (its top-left value row) of head m in a (N, S, M, D) tensor; the rows below
// and to the right are (y * width + x) * M * D elements further (32-bit products: a level's rows
// times M * D fit in an int: tiled_supported).
template <int D, typename T>
__device__ __forceinline__ T* tile_row0(T* base, const TileGeom& g, const TileTable& tt, const TileDims& d) {
  return base + (static_cast<int64_t>(g.n) * d.s + tt.start[g.level] + g.y_first * tt.width[g.level] + g.x_first) *
                    (d.m * D) + g.m * D;
}

// Copies the value rows of a tile and its halo (those inside the map) into `rows` (pitch D) with
// cp.async, as one commit group.
template <typename T, int D>
__device__ __forceinline__ void copy_value_rows(T* rows, const T* value, const TileGeom& g, const TileTable& tt,
                                                const TileDims& d) {
  constexpr int kLanes = D / kVec<T>;
  const int width = tt.width[g.level];
  const int64_t row_stride = static_cast<int64_t>(d.m) * D;
  const T* level = value + (static_cast<int64_t>(g.n) * d.s + tt.start[g.level]) * row_stride +
                   static_cast<int64_t>(g.m) * D;
  for (int k = threadIdx.x; k < kHaloRows * kLanes; k += kTileThreads) {
    const int piece = k % kLanes, r = k / kLanes;
    const int ry = r / kHaloX, rx = r - ry * kHaloX;
    if (ry >= g.rows_y || rx >= g.rows_x) continue;
    const T* src = level + ((g.y_first + ry) * width + g.x_first + rx) * row_stride + piece * kVec<T>;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_address(rows + r * D + piece * kVec<T>)),
                 "l"(src));
  }
  asm volatile("cp.async.commit_group;");
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

// 4 x 4 transpose of 32-bit words within each quad of lanes (t = lane % 4): lane t holds w[i] =
// word t of row i; returns words 0-3 of row t (word s from lane s). Round k exchanges with lane t ^ k.
__device__ __forceinline__ uint4 quad_transpose(const unsigned w[4], int t) {
  const auto select = [](const unsigned* v, int i) {
    return (i & 2) ? ((i & 1) ? v[3] : v[2]) : ((i & 1) ? v[1] : v[0]);
  };
  unsigned got[4];  // got[k]: word t ^ k of row t, from lane t ^ k
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const unsigned send = select(w, t ^ k);  // row t ^ k, for lane t ^ k
    got[k] = k == 0 ? send : __shfl_xor_sync(0xffffffffu, send, k);
  }
  return make_uint4(select(got, t), select(got, 1 ^ t), select(got, 2 ^ t), select(got, 3 ^ t));
}

// Dynamic shared memory: value rows of two tiles (2 x kHaloRows x D T: the current one and the next,
// copied during the current tile's last chunk), staged grad_out rows (kChunk x D T, swizzled),
// coefficients (kRows x kCoefPitch T). Needs sm_80 (cp.async, bf16 mma); tiled_supported checks.
// SPLIT (split-K, for levels dense in samples): warp w computes the 32 rows from 32 (w & 1) over the
// k-steps of parity w >> 1 (the staged rows are read by two warps instead of four), and after the
// tile's last chunk the odd-parity warps hand their fp32 sums to the even ones through the staging
// area; otherwise warp w computes the 16-row band w over every k-step. `buf`, `rebin_entries` (the
// entry array `bins`, writable) and `hist_size`: for rebin_overflowed, which writes the entries of
// overflowing segments before the first entry is read.
template <typename T, int D, bool SPLIT>
__global__ void __launch_bounds__(kTileThreads, MSDA_TILE_MIN_BLOCKS) tile_grad_kernel(
    const T* __restrict__ grad_out, const T* __restrict__ value, const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts, const float* __restrict__ loc, const float* __restrict__ attn,
    const int* __restrict__ bins, const int* __restrict__ bin_starts, const int* __restrict__ bin_sizes,
    int* __restrict__ work_counter, BinBuffers buf, int* rebin_entries, int hist_size,
    T* __restrict__ grad_value, float* __restrict__ grad_loc, float* __restrict__ grad_attn, TileDims d) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int V = kVec<T>;             // 8 channels per 16 bytes
  constexpr int kLanes = D / V;          // 16-byte pieces of a row
  constexpr int kNTiles = D / 8;         // mma n-tiles of 8 channels
  extern __shared__ uint4 dynamic_smem[];
  T* const rows_smem = reinterpret_cast<T*>(dynamic_smem);
  T* const staged = rows_smem + 2 * kHaloRows * D;
  T* const coef = staged + kChunk * D;
  __shared__ TileTable tt;
  __shared__ WorkSlot slots[3];  // a ring: this tile, the next, the one after (written during this one)
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  build_tiles<true>(tt, shapes, starts, d);
  const int total = d.n * d.m * tt.tile_start[d.levels];
  if (static_cast<int>(blockIdx.x) >= total) return;
  // the first tile's value rows need nothing from the previous kernel: copied while it drains
  copy_value_rows<T, D>(rows_smem, value, tile_geom(blockIdx.x, tt, d), tt, d);
  wait_for_previous_kernel();  // the bins
  // (rare) some bins outgrew their share: those segments binned again first (the histogram in the
  // coefficients' memory, zeroed after it)
  if (*buf.any != 0) {
    const int coef_offset = static_cast<int>(reinterpret_cast<char*>(coef) - reinterpret_cast<char*>(dynamic_smem));
    rebin_overflowed(loc, buf, rebin_entries, d, hist_size, coef_offset, tt);
  }
  for (int k = tid; k < kRows * kCoefPitch / 8; k += kTileThreads) reinterpret_cast<uint4*>(coef)[k] = make_uint4(0, 0, 0, 0);
  if (tid == 0) {  // later tiles come from the counter, two tiles ahead
    slots[0].fetch(blockIdx.x, total, tt, d, bin_starts, bin_sizes);
    slots[1].fetch(gridDim.x + atomicAdd(work_counter, 1), total, tt, d, bin_starts, bin_sizes);
  }
  __syncthreads();
  Fetched<kLanes> cur;  // this thread's sample of the current chunk, loaded a chunk ahead
  cur.load(tid < min(kChunk, slots[0].end - slots[0].begin) ? bins[slots[0].begin + tid] : -1, grad_out, loc,
           attn, d.by_samples, D, lane);
  int written[4] = {-1, -1, -1, -1};  // coefficient rows of this thread's column from the last chunk
  int buffer = 0;

  for (int slot = 0;; slot = slot == 2 ? 0 : slot + 1) {
    const WorkSlot& next = slots[slot == 2 ? 0 : slot + 1];
    const int begin = slots[slot].begin, end = slots[slot].end;
    const int next_item = next.item, next_begin = next.begin, next_end = next.end;
    int later = 0;  // thread 0: the tile after next
    if (tid == 0) later = gridDim.x + atomicAdd(work_counter, 1);
    const TileGeom tg = slots[slot].geom;
    const int height = tt.height[tg.level], width = tt.width[tg.level];
    const T* const value_rows = rows_smem + buffer * kHaloRows * D;

    constexpr int kBands = SPLIT ? 2 : 1;  // 16-row bands per warp
    float acc[kBands][kNTiles][4];
#pragma unroll
    for (int b = 0; b < kBands; ++b)
#pragma unroll
      for (int j = 0; j < kNTiles; ++j) acc[b][j][0] = acc[b][j][1] = acc[b][j][2] = acc[b][j][3] = 0.f;
    for (int chunk = begin;; chunk += kChunk) {
      const int count = min(kChunk, end - chunk);
      const bool last = chunk + kChunk >= end;
      const bool prefetch_tile = last && next_item < total;
#pragma unroll
      for (int k = 0; k < 4; ++k) {  // this thread's coefficients of the last chunk back to zero
        if (written[k] >= 0) coef[written[k] * kCoefPitch + tid] = T();
        written[k] = -1;
      }
      // the next chunk's bin entry (of this tile or the next), in flight during phase 1
      int next_e = -1;
      if (!last && tid < end - chunk - kChunk) next_e = bins[chunk + kChunk + tid];
      if (prefetch_tile && tid < next_end - next_begin) next_e = bins[next_begin + tid];
      if (prefetch_tile) copy_value_rows<T, D>(rows_smem + (buffer ^ 1) * kHaloRows * D, value, next.geom, tt, d);
      // this thread's sample: its coefficients; its anchor (is it a home sample?)
      float lh = 0.f, lw = 0.f;
      int info = 0;  // home sample: ((its top-left corner's row + 16) << 4) | the corners inside the map
      if (tid < count) {
        const float h = pixel(cur.xy.y, height), wp = pixel(cur.xy.x, width);
        const float h_floor = floorf(h), w_floor = floorf(wp);
        const int y0 = static_cast<int>(h_floor), x0 = static_cast<int>(w_floor);
        lh = h - h_floor;
        lw = wp - w_floor;
        const float weight[4] = {(1.f - lh) * (1.f - lw), (1.f - lh) * lw, lh * (1.f - lw), lh * lw};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int y = y0 + (k >> 1) - tg.y_first, x = x0 + (k & 1) - tg.x_first;  // within the tile?
          // (a corner in the tile's square but outside the map gets a coefficient too: its row is never written)
          if (static_cast<unsigned>(y) >= kSide || static_cast<unsigned>(x) >= kSide) continue;
          written[k] = y * kSide + x;
          coef[written[k] * kCoefPitch + tid] = from_acc<T>(cur.a * weight[k]);
        }
        if ((max(y0, 0) & ~(kSide - 1)) == tg.y_first && (max(x0, 0) & ~(kSide - 1)) == tg.x_first) {
          const bool top = y0 >= 0, bottom = y0 + 1 < height, left = x0 >= 0, right = x0 + 1 < width;
          const int corner0 = (y0 - tg.y_first) * kHaloX + (x0 - tg.x_first);  // < 0 only where unused
          info = ((corner0 + 16) << 4) | (top && left) | ((top && right) << 1) | ((bottom && left) << 2) |
                 ((bottom && right) << 3);  // corner0 >= -kHaloX - 1: info > 0
        }
      }
      // the warp's grad_out rows into the staging area (padding rows of the last k-step: zeros)
#pragma unroll
      for (int k = 0; k < kLanes; ++k) {
        const int row = warp * 32 + lane / kLanes + k * (32 / kLanes);
        if (row < ((count + 15) & ~15)) {
          reinterpret_cast<uint4*>(staged + row * D)[swizzle<kLanes>(row, lane % kLanes)] = cur.g[k];
        }
      }
      const int e = cur.e;
      const float a = cur.a;
      if (prefetch_tile) asm volatile("cp.async.wait_group 1;");  // this tile's rows are in
      else asm volatile("cp.async.wait_group 0;");
      __syncthreads();
      if (tid == 0 && chunk == begin) {  // the slot of the tile before this one is free: the tile after next
        slots[slot == 0 ? 2 : slot - 1].fetch(later, total, tt, d, bin_starts, bin_sizes);
      }
      cur.load(next_e, grad_out, loc, attn, d.by_samples, D, lane);  // in flight during the math
      // a home sample (anchored in this tile): location and weight gradients from the shared rows.
      // Lane t reads the 16-byte pieces in the order t, t + 1, ... (mod kLanes): of 8 lanes reading
      // rows at once, only those with equal pieces can meet in a bank (at most 2-way for D = 32).
      if (info != 0) {
        const int corner0 = (info >> 4) - 16;
        const int corner[4] = {corner0, corner0 + 1, corner0 + kHaloX, corner0 + kHaloX + 1};
        float sums[4][2] = {};  // two partial sums per corner (independent FMA chains)
#pragma unroll
        for (int step = 0; step < kLanes; ++step) {
          const int piece = (step + lane) & (kLanes - 1);
          float g[V];
          unpack_vec<T>(reinterpret_cast<const uint4*>(staged + tid * D)[swizzle<kLanes>(tid, piece)], g);
          uint4 raw[4];  // all four reads first (a corner outside the map reads row 0, then counts zero)
#pragma unroll
          for (int k = 0; k < 4; ++k) raw[k] = reinterpret_cast<const uint4*>(value_rows + max(corner[k], 0) * D)[piece];
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            float x[V];
            unpack_vec<T>(raw[k], x);
#pragma unroll
            for (int v = 0; v < V; ++v) sums[k][v & 1] += g[v] * x[v];
          }
        }
        // a corner outside the map read some row (row 0, or a stale or unwritten halo row): its dot is 0
        const float dot[4] = {info & 1 ? sums[0][0] + sums[0][1] : 0.f, info & 2 ? sums[1][0] + sums[1][1] : 0.f,
                              info & 4 ? sums[2][0] + sums[2][1] : 0.f, info & 8 ? sums[3][0] + sums[3][1] : 0.f};
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
      // value_grad[this warp's bands] += coef[band rows x count] @ staged[count x D]
      const int ksteps = (count + 15) >> 4;
      const int first_band = SPLIT ? (warp & 1) * 2 : warp;
      for (int ks = SPLIT ? warp >> 1 : 0; ks < ksteps; ks += SPLIT ? 2 : 1) {
        unsigned af[kBands][4];
#pragma unroll
        for (int b = 0; b < kBands; ++b) {
          ldmatrix_x4(af[b], smem_address(coef + ((first_band + b) * 16 + (lane & 15)) * kCoefPitch + ks * 16 +
                                          (lane >> 4) * 8));
        }
        const int row = ks * 16 + (lane & 15);
#pragma unroll
        for (int j = 0; j < kNTiles; j += 2) {
          unsigned bf[4];
          const int col_piece = min(j + (lane >> 4), kLanes - 1);
          ldmatrix_x4_trans(bf, smem_address(staged + row * D + swizzle<kLanes>(row, col_piece) * V));
#pragma unroll
          for (int b = 0; b < kBands; ++b) {
            mma_16x8x16<T>(acc[b][j], af[b], bf[0], bf[1]);
            if (j + 1 < kNTiles) mma_16x8x16<T>(acc[b][j + 1], af[b], bf[2], bf[3]);
          }
        }
      }
      if (last) break;
      __syncthreads();  // the next chunk rewrites the coefficients and the staging rows
    }

    if constexpr (SPLIT) {  // the odd-parity warps' sums (fp32, in the staging area) to the even ones
      float4* const reduce = reinterpret_cast<float4*>(staged);  // kRows x D floats <= kChunk x D T
      __syncthreads();  // every warp's MMA has read the staged rows
      if (warp >> 1) {
#pragma unroll
        for (int b = 0; b < kBands; ++b)
#pragma unroll
          for (int j = 0; j < kNTiles; ++j)
            reduce[((b * kNTiles + j) * 2 + (warp & 1)) * 32 + lane] =
                make_float4(acc[b][j][0], acc[b][j][1], acc[b][j][2], acc[b][j][3]);
      }
      __syncthreads();
      if (!(warp >> 1)) {
#pragma unroll
        for (int b = 0; b < kBands; ++b)
#pragma unroll
          for (int j = 0; j < kNTiles; ++j) {
            const float4 o = reduce[((b * kNTiles + j) * 2 + (warp & 1)) * 32 + lane];
            acc[b][j][0] += o.x;
            acc[b][j][1] += o.y;
            acc[b][j][2] += o.z;
            acc[b][j][3] += o.w;
          }
      }
    }
    // every row of the tile, once: rows g and g + 8 of each of this warp's bands. The four lanes t
    // of a row hold its channels 8j + 2t, 8j + 2t + 1 (n-tile j). Without split-K (head dims of 4k
    // n-tiles), the four first exchange them (quad_transpose) so that lane t stores the 16 bytes of
    // n-tile 4g + t: a warp's store writes 8 whole rows instead of 16-byte pieces of them, which
    // takes 1.7 us off the injector's tile kernel (4-byte stores occupy the L1 pipe that the shared
    // memory uses); the split-K kernel, at its register cap, lost 2.5 us with it (docs/ops.md).
    if (!SPLIT || !(warp >> 1)) {
      T* const first = tile_row0<D>(grad_value, tg, tt, d);
#pragma unroll
      for (int b = 0; b < kBands; ++b) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int r = ((SPLIT ? (warp & 1) * 2 : warp) + b) * 16 + (lane >> 2) + half * 8;
          const int ry = r >> kLog2Side, rx = r & (kSide - 1);
          const bool inside = tg.y_first + ry < height && tg.x_first + rx < width;
          T* const row = first + static_cast<int64_t>(ry * width + rx) * (d.m * D);
          unsigned words[kNTiles];  // channels 8j + 2t, 8j + 2t + 1 in T
#pragma unroll
          for (int j = 0; j < kNTiles; ++j) {
            const T lo = from_acc<T>(acc[b][j][2 * half]), hi = from_acc<T>(acc[b][j][2 * half + 1]);
            words[j] = static_cast<unsigned>(bits16(lo)) | (static_cast<unsigned>(bits16(hi)) << 16);
          }
          if constexpr (!SPLIT && kNTiles % 4 == 0) {
#pragma unroll
            for (int g = 0; g < kNTiles / 4; ++g) {
              const uint4 piece = quad_transpose(words + 4 * g, lane & 3);
              if (inside) *reinterpret_cast<uint4*>(row + 8 * (4 * g + (lane & 3))) = piece;
            }
          } else if (inside) {
#pragma unroll
            for (int j = 0; j < kNTiles; ++j) *reinterpret_cast<unsigned*>(row + 8 * j + 2 * (lane & 3)) = words[j];
          }
        }
      }
    }
    buffer ^= 1;
    __syncthreads();  // the coefficients and staging rows are free, the slot after next is written
    if (next_item >= total) break;
  }
#endif
}

template <int X> using IntC = std::integral_constant<int, X>;

}  // namespace

bool tiled_supported(const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& loc,
                     const Geometry& geo) {
  const auto type = value.scalar_type();
  return capability_major(value) >= 8 &&  // cp.async, bf16 mma
         (type == at::kHalf || type == at::kBFloat16) && (geo.d == 8 || geo.d == 16 || geo.d == 32 || geo.d == 64) &&
         aligned16(value) && aligned16(grad_output) && reinterpret_cast<uintptr_t>(loc.data_ptr()) % 8 == 0 &&
         geo.s * geo.m * geo.d < INT_MAX;  // 32-bit row offsets within a batch element (tile_row0)
}

at::Tensor backward_tiled(const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
                          const at::Tensor& level_start_index, const at::Tensor& loc, const at::Tensor& attn,
                          const at::Tensor& grad_loc, const at::Tensor& grad_attn, const Geometry& geo,
                          bool saved_inputs) {
  TORCH_CHECK(tiled_supported(grad_output, value, loc, geo), "ms_deform_attn: the tiled backward takes 16-byte aligned "
              "fp16 / bf16 values of head dim 8, 16, 32 or 64");
  const int64_t samples = geo.n * geo.lq * geo.m * geo.levels * geo.points;
  // tiles per (batch, head): sum_l ceil(H_l / 8) ceil(W_l / 8) <= S / 8 + L (no host sync)
  const int64_t bins = geo.n * geo.m * (geo.s / 8 + geo.levels);
  TORCH_CHECK(samples < INT_MAX / 4 && bins < INT_MAX / 2,
              "ms_deform_attn: too many samples for the CUDA backward (", samples, ")");
  at::Tensor grad_value = at::empty_like(value);
  const int m = static_cast<int>(geo.m), levels = static_cast<int>(geo.levels), points = static_cast<int>(geo.points);
  const TileDims dims{static_cast<int>(geo.n), static_cast<int>(geo.s), m,
                      static_cast<int>(geo.lq), levels, points,
                      FastDiv::of(m), FastDiv::of(levels),
                      FastDiv::of(points), FastDiv::of(levels * points)};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t* shp = spatial_shapes.data_ptr<int64_t>();
  const int64_t* st = level_start_index.data_ptr<int64_t>();
  const float* lp = loc.data_ptr<float>();
  const float* ap = attn.data_ptr<float>();
  float* glp = grad_loc.data_ptr<float>();
  float* gap = grad_attn.data_ptr<float>();
  const bool dependent = capability_major(value) >= 9;  // programmatic dependent launches
  const auto int_opts = value.options().dtype(at::kInt);
  const int64_t segments = geo.n * geo.m * geo.levels;
  at::Tensor bookkeeping = at::empty({BinBuffers::ints(bins, segments)}, int_opts);
  {
    const int64_t ints = BinBuffers::zeroed(bins, segments);
    launch_after(zero_ints, static_cast<unsigned>(std::min<int64_t>((ints + 1023) / 1024, 65535)), 256, 0, stream,
                 dependent, bookkeeping.data_ptr<int>(), ints, saved_inputs);
  }
  const BinBuffers buf(bookkeeping.data_ptr<int>(), bins, segments);
  at::Tensor entries = at::empty({std::max<int64_t>(samples * 4, 1)}, int_opts);  // home + at most 3 dups
  const int hist_size = static_cast<int>(std::min<int64_t>(kMaxHist, geo.s / 8 + geo.levels));
  const dim3 bin_grid(bin_chunks<kBinThreads>(static_cast<int>(geo.lq * geo.points)),  // (< samples < INT_MAX / 4)
                      std::min<int64_t>(segments, 65535));
  const size_t hist_bytes = hist_size * sizeof(int);
  const int sms = sm_count(value);
  if (samples > 0) {  // (segments whose bins overflow are binned again by the tile kernel's blocks)
    launch_after(tile_bin_kernel, bin_grid, kBinThreads, hist_bytes, stream, dependent, shp, st, lp, buf,
                 entries.data_ptr<int>(), glp, gap, dims, hist_size);
  }
  // split-K where a tile's bin spans several chunks on average (head dims up to 32: 2 x D / 2 fp32
  // accumulators per thread)
  const bool dense = geo.lq * geo.levels * geo.points >= MSDA_SPLIT_DENSITY * geo.s;
  const auto launch = [&](auto tag, auto dim, auto split) {
    using S = decltype(tag);
    using T = typename CudaType<S>::type;
    constexpr int D = decltype(dim)::value;
    auto kernel = tile_grad_kernel<T, D, decltype(split)::value>;
    const int smem = static_cast<int>(((2 * kHaloRows + kChunk) * D + kRows * kCoefPitch) * sizeof(T));
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    int per_sm = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kTileThreads, smem));
    const int64_t grid = std::min<int64_t>(bins, static_cast<int64_t>(std::clamp(per_sm, 1, MSDA_TILE_GRID_PER_SM)) * sms);
    launch_after(kernel, static_cast<unsigned>(grid), kTileThreads, smem, stream, dependent,
                 reinterpret_cast<const T*>(grad_output.data_ptr<S>()), reinterpret_cast<const T*>(value.data_ptr<S>()),
                 shp, st, lp, ap, entries.data_ptr<int>(), buf.starts, buf.sizes, buf.work, buf,
                 entries.data_ptr<int>(), hist_size, reinterpret_cast<T*>(grad_value.data_ptr<S>()), glp, gap, dims);
  };
  const auto with_dim = [&](auto tag) {
    const auto split = [&](auto dim) {
      if (dense) launch(tag, dim, std::true_type{});
      else launch(tag, dim, std::false_type{});
    };
    switch (geo.d) {
      case 8: split(IntC<8>{}); break;
      case 16: split(IntC<16>{}); break;
      case 32: split(IntC<32>{}); break;
      default: launch(tag, IntC<64>{}, std::false_type{}); break;
    }
  };
  if (value.scalar_type() == at::kBFloat16) with_dim(at::BFloat16{});
  else with_dim(at::Half{});
  return grad_value;
}

}  // namespace msda
